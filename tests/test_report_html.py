"""The run report page (flows/report_html.py): sections, charts, numbers, escaping, missing parts."""
import json
import os
import re
import shutil
from collections import Counter
from html.parser import HTMLParser

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import DEMO_SEEDS, read_rows, run_cli, start_sim
from flows import report_html
from flows.report import funnel
from flows.report_html import SECTIONS, render_report_html, report_data, svg_grouped_bars, svg_hbars, write_report_html

SCRIPT = '<script src="https://evil.example/x.js">alert(1)</script> & "quoted"'


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A simulated build of the demo seeds; the simulator seed gives some rule checks."""
    out = tmp_path_factory.mktemp("report") / "run"
    with start_sim(any_of="random", seed=2) as server:
        done = run_cli("run", "--seeds", DEMO_SEEDS, "--limit", 30, "--base-url", server.base_url, "--out", out,
                       "--quiet")
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture
def run_copy(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "reports" / "report.html").unlink(missing_ok=True)
    return copy


def manifest_of(run_dir) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


class Tags(HTMLParser):
    """The tags of a page with their attributes (escaped text is text, not tags)."""

    def __init__(self, page: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def section(page: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', page, re.DOTALL)
    assert match, key
    return match.group(1)


def table_rows(html_text: str, attr: str) -> dict[str, list[str]]:
    """{attr value: cell texts} of the table rows that carry `attr`."""
    rows = {}
    for key, cells in re.findall(rf'<tr {attr}="([^"]*)">(.*?)</tr>', html_text, re.DOTALL):
        rows[key] = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", cells, re.DOTALL)]
    return rows


def as_int(cell: str) -> int:
    return int(cell.replace(",", ""))


def charts(page: str) -> list[str]:
    return re.findall(r'<svg class="chart" data-chart="([a-z]+)"', page)


# --------------------------------------------------------------------------- a simulated run

@pytest.mark.slow
def test_page_has_every_section_and_one_svg_per_chart(run_dir):
    path = write_report_html(run_dir)
    assert path == run_dir / "reports" / "report.html"
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    for key, heading in SECTIONS.items():
        assert f'<section id="{key}">\n<h2>{heading}</h2>' in page, key
    expected = ["funnel", "counts", "mix", "scores", "acceptance"]
    if manifest_of(run_dir)["rule_agreement"]:
        expected.insert(4, "agreement")
    assert charts(page) == expected
    assert page.count("<svg") == len(expected)
    # every part of a finished run is there: nothing reported missing, nothing failed to read
    assert "not in this run" not in page.replace(section(page, "agreement"), "")
    assert report_data(run_dir)["errors"] == {}


def test_header_and_funnel_numbers_equal_the_manifest(run_dir):
    manifest = manifest_of(run_dir)
    page = render_report_html(report_data(run_dir))
    head = section(page, "run")
    assert manifest["model"] in head and manifest["taxonomy_version"] in head and manifest["created"] in head
    for name, version in manifest["templates"].items():
        assert f"<code>{name}@{version}</code>" in head
    splits = table_rows(head, "data-split")
    assert {k: as_int(v[1]) for k, v in splits.items()} == {k: v["rows"] for k, v in manifest["splits"].items()}
    prompt_tokens = sum(u["prompt_tokens"] for u in manifest["usage"].values())
    assert f"{prompt_tokens:,}" in head

    rows = table_rows(section(page, "funnel"), "data-stage")
    assert list(rows) == [r["stage"] for r in manifest["funnel"]]
    for r in manifest["funnel"]:
        stage, in_, out, rejected, _, reasons = rows[r["stage"]]
        assert (as_int(in_), as_int(out), as_int(rejected)) == (r["in"], r["out"], r["rejected"]), stage
        assert all(f"{reason}={n}" in reasons for reason, n in r["reasons"].items())
    # the chart labels each bar out / in, in the same order
    labels = re.findall(r'class="value">([\d,]+) / ([\d,]+)<', section(page, "funnel"))
    assert [(as_int(o), as_int(i)) for o, i in labels] == [(r["out"], r["in"]) for r in manifest["funnel"]]


def test_histograms_scores_and_acceptance_match_the_run(run_dir):
    data = report_data(run_dir)
    sft = read_rows(run_dir / "splits" / "sft.parquet")
    assert data["sft"]["rows"] == len(sft) > 0
    assert data["sft"]["constraint_counts"] == dict(sorted(Counter(len(r["constraints"]) for r in sft).items()))
    assert data["sft"]["dimensions"] == dict(sorted(Counter(c["dimension"] for r in sft
                                                            for c in r["constraints"]).items()))
    graded = [r for p in sorted((run_dir / "stages" / "respond").glob("shard-*.parquet")) for r in read_rows(p)]
    expected = Counter()
    for r in graded:
        dim = {c["id"]: c["dimension"] for c in r["constraints"]}
        expected.update((dim[s["constraint_id"]], s["score"]) for s in r["scores"])
    got = Counter({(d, s): n for d, hist in data["scores"].items() for s, n in hist.items()})
    assert got == expected and sum(got.values()) > 0

    page = render_report_html(data)
    assert "119,345 instructions, mean 4.36" in section(page, "counts")  # the paper's training set
    assert "18.7%" in section(page, "mix")  # the paper's share of Inclusion
    manifest = manifest_of(run_dir)
    acceptance = table_rows(section(page, "acceptance"), "data-kind")
    for stage in ("dpo", "iopo"):
        tried, accepted = manifest["acceptance"][stage]["tried"], manifest["acceptance"][stage]["accepted"]
        assert [as_int(c) for c in acceptance[stage.upper()][1:3]] == [tried, accepted]
    for op, counts in manifest["acceptance"]["iopo_by_edit"].items():
        assert [as_int(c) for c in acceptance[f"IOPO: {op}"][1:3]] == [counts["tried"], counts["accepted"]]
    agreement = table_rows(section(page, "agreement"), "data-dimension")
    assert {k: as_int(v[1]) for k, v in agreement.items()} == {k: v["n"] for k, v in manifest["rule_agreement"].items()}


def test_no_external_references_and_example_text_escaped(run_copy):
    path = run_copy / "splits" / "sft.parquet"
    table = pq.read_table(path)
    prompts = table.column("prompt").to_pylist()
    prompts[0] = SCRIPT + " " + "x" * 3000
    index = table.schema.get_field_index("prompt")
    pq.write_table(table.set_column(index, table.schema.field(index), pa.array(prompts, pa.string())), path)

    page = write_report_html(run_copy).read_text(encoding="utf-8")
    examples = section(page, "examples")
    assert "&lt;script src=&quot;https://evil.example/x.js&quot;&gt;alert(1)&lt;/script&gt; &amp; &quot;quoted&quot;" \
        in examples
    assert "x" * 3000 not in page and "x" * 500 + "…" in examples  # clipped, visibly
    tags = Tags(page).tags
    assert not [t for t, _ in tags if t in ("script", "link", "img", "iframe", "object", "embed", "base")]
    for tag, attrs in tags:
        assert not ({"src", "srcset", "xlink:href"} & set(attrs)), tag
        assert attrs.get("href", "#").startswith("#"), (tag, attrs)
    outside = page.replace(examples, "")
    assert "http://" not in outside and "https://" not in outside and "src=" not in outside
    assert "@import" not in page and "url(" not in page


def test_same_run_gives_the_same_page_but_for_the_time(run_dir):
    first, second = report_data(run_dir), report_data(run_dir)
    assert first.pop("generated") and second.pop("generated")
    assert first == second
    # a dict read back from JSON (str keys) renders the same page
    assert render_report_html(first) == render_report_html(json.loads(json.dumps(first)))


def test_reading_a_run_never_loads_a_whole_table(run_dir, monkeypatch):
    def whole(*args, **kwargs):
        raise AssertionError("a whole table was read")

    monkeypatch.setattr(pq, "read_table", whole)
    monkeypatch.setattr(report_html.ShardStore, "read_stage", whole)
    data = report_data(run_dir)
    assert data["errors"] == {} and data["sft"]["rows"] > 0 and data["scores"] and len(data["examples"]) == 3


# --------------------------------------------------------------------------- missing parts

def test_an_empty_dict_renders_every_section_as_missing():
    page = render_report_html({})
    for key, heading in SECTIONS.items():
        assert f'<section id="{key}">\n<h2>{heading}</h2>' in page
    assert "<svg" not in page
    assert page.count("not in this run") >= len(SECTIONS)
    assert "manifest.json is not in this run" in section(page, "run")


def test_a_hand_made_dict_with_some_parts():
    data = {
        "manifest_found": True, "run_dir": "/runs/<b>", "header": {"model": "m<1>", "templates": {}},
        "funnel": [{"stage": "seeds", "in": 5, "out": 5, "rejected": 0, "reasons": {}},
                   {"stage": "respond", "in": 5, "out": 3, "rejected": 2, "reasons": {"bad<x>": 2}}],
        "sft": {"rows": 0, "constraint_counts": {}, "dimensions": {}},
        "scores": {"inclusion": {"10": 3, "4": 1}},
        "rule_agreement": {"all": {"n": 4, "agree": 3, "rate": 0.75}, "inclusion": {"n": 4, "agree": 3, "rate": 0.75}},
        "acceptance": {"dpo": {"tried": 4, "accepted": 1}},
        "examples": [],
        "errors": {"paper": "TaxonomyError: cannot read"},
    }
    page = render_report_html(data)
    assert charts(page) == ["funnel", "scores", "agreement", "acceptance"]
    assert "m&lt;1&gt;" in page and "/runs/&lt;b&gt;" in page and "bad&lt;x&gt;=2" in page
    assert "The SFT split is empty" in section(page, "counts")
    assert "not in this run" in section(page, "mix") and "not in this run" in section(page, "examples")
    assert "IOPO data is not in this run" in section(page, "acceptance")
    assert "not in this run" not in section(page, "agreement")
    assert "75.0%" in section(page, "agreement")
    assert "LLM usage is not in this run" in page and "Template versions are not in this run" in page
    assert "TaxonomyError: cannot read" in page  # a part that failed to read says so


def test_a_run_without_manifest_or_splits(run_copy):
    (run_copy / "manifest.json").unlink()
    shutil.rmtree(run_copy / "splits")
    page = write_report_html(run_copy).read_text(encoding="utf-8")
    assert "manifest.json is not in this run" in page and "simulated-trace" in section(page, "run")
    rows = table_rows(section(page, "funnel"), "data-stage")
    assert {k: as_int(v[2]) for k, v in rows.items()} == {r["stage"]: r["out"] for r in funnel(run_copy)}
    assert "not in this run" in section(page, "counts") and "not in this run" in section(page, "examples")
    assert "not in this run" in section(page, "acceptance") and "not in this run" in section(page, "agreement")
    assert charts(page) == ["funnel", "scores"]  # what the stage files hold


def test_an_empty_folder(tmp_path):
    page = write_report_html(tmp_path).read_text(encoding="utf-8")
    assert "The funnel is not in this run" in page and "<svg" not in page
    with pytest.raises(FileNotFoundError):
        write_report_html(tmp_path / "nothing-here")


@pytest.mark.slow
def test_a_run_without_preference_data(sim, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("pipeline:\n  preference_data: false\n")
    done = run_cli("run", "--seeds", DEMO_SEEDS, "--limit", 8, "--base-url", sim.base_url, "--out", tmp_path / "run",
                   "--quiet", "--config", config)
    assert done.returncode == 0, done.stderr
    page = write_report_html(tmp_path / "run").read_text(encoding="utf-8")
    acceptance = section(page, "acceptance")
    assert "DPO data is not in this run" in acceptance and "IOPO data is not in this run" in acceptance
    assert "acceptance" not in charts(page) and "funnel" in charts(page)


# --------------------------------------------------------------------------- writing and charts

def test_written_atomically_and_replaced(run_copy):
    reports = run_copy / "reports"
    before = set(os.listdir(reports))
    path = write_report_html(run_copy)
    first = path.stat().st_ino
    path.write_text("stale", encoding="utf-8")
    assert write_report_html(run_copy) == path
    assert path.stat().st_ino != first  # a new file renamed over the old one, not rewritten in place
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert set(os.listdir(reports)) == before | {"report.html"}  # no temporary file left


def test_chart_helpers_scale_and_escape():
    svg = svg_hbars("t", "a <title>", [("<a>", [1, 1]), ("b", [4, 0])], [("x", "#111"), ("y", "#222")])
    assert svg.count("<svg") == 1 and "&lt;a&gt;" in svg and "a &lt;title&gt;" in svg
    widths = [float(w) for w in re.findall(r'<rect x="[\d.]+" y="\d+" width="([\d.]+)"', svg)]
    assert widths[0] == widths[1] and widths[2] == pytest.approx(4 * widths[0])  # stacked, to scale
    grouped = svg_grouped_bars("g", "g", ["1", "2"], [("ours", "#111", [10, 30]), ("paper", "#222", [20, 0])],
                               unit="%")
    heights = [float(h) for h in re.findall(r'height="([\d.]+)" fill="#111"', grouped)]
    assert len(heights) == 2 and heights[1] == pytest.approx(3 * heights[0], abs=0.2)
    assert ">30%<" in grouped  # the value axis reaches the largest value


@pytest.mark.slow
def test_trace_build_report_writes_the_page_of_a_run_folder(tmp_path, sim):
    out = tmp_path / "run"
    assert run_cli("run", "--seeds", DEMO_SEEDS, "--limit", 4, "--base-url", sim.base_url, "--out", out,
                   "--quiet").returncode == 0
    page = out / "reports" / "report.html"
    page.unlink()
    done = run_cli("report", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(page) and "Funnel" in page.read_text()
    bad = run_cli("report", tmp_path / "nothing")
    assert bad.returncode == 2 and "nothing: no such folder" in bad.stderr and "Traceback" not in bad.stderr
    (tmp_path / "other").mkdir()
    bad = run_cli("report", tmp_path / "other")
    assert bad.returncode == 2 and "not a trace-build run folder" in bad.stderr and "Traceback" not in bad.stderr
