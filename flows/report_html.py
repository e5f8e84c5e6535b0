"""A run report page: <run>/reports/report.html, one self-contained HTML file.

Inline CSS and inline SVG charts drawn here; no scripts, fonts or images from anywhere, so the
page opens from disk. Two steps:

    report_data(run_dir)      what the page shows, as a plain dict, read from the run folder
    render_report_html(data)  the page, from that dict alone (so it is testable without a run)

Memory does not grow with the rows: stage shards and splits are read a batch at a time
(flows.store.read_batches / ShardStore.iter_rows) and only counts are kept; the examples are the
first few rows of splits/sft.parquet. Parts a run lacks (no manifest, no preference data, no
rule checks, empty splits) are shown as "not in this run", never as an error. The page is the
same for the same run folder except for its generated-at time.
"""
from __future__ import annotations

import html
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from contextlib import closing
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from flows.contracts import PAIR_STAGES, STAGES
from flows.report import funnel, reasons_text
from flows.store import ShardStore, read_batches, write_text_atomic
from flows.taxonomy import load_paper_stats, load_taxonomy
from flows.words import plural

__all__ = ["render_report_html", "report_data", "svg_grouped_bars", "svg_hbars", "write_report_html"]

REPORT_PATH = Path("reports") / "report.html"
N_EXAMPLES = 3
CLIP_LONG = 700  # characters of a prompt or response shown in an example
CLIP_SHORT = 240  # characters of a constraint or a table cell
SPLITS = ("sft", "eval", "dpo", "iopo")
USAGE_FIELDS = ("requests", "cache_hits", "prompt_tokens", "completion_tokens", "retries")

SECTIONS = {  # id -> heading, in page order
    "run": "Run",
    "funnel": "Funnel",
    "counts": "Constraints per instruction",
    "mix": "Dimension mix",
    "scores": "Judge scores per dimension",
    "agreement": "Rule checks vs judge",
    "acceptance": "Preference data acceptance",
    "examples": "Examples",
}

OURS, PAPER = "#4e79a7", "#f28e2b"
OUT, REJECTED, HELD_OUT = "#4e79a7", "#e8a3a3", "#c9ced6"
ACCEPTED, NOT_ACCEPTED = "#59a14f", "#dfe3e8"


# --------------------------------------------------------------------------- writing

def write_report_html(run_dir: str | Path) -> Path:
    """Write <run_dir>/reports/report.html (a temporary name in the same folder, then renamed)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    page = render_report_html(report_data(run_dir))
    path = run_dir / REPORT_PATH
    write_text_atomic(path, page)
    return path


# --------------------------------------------------------------------------- gathering

def report_data(run_dir: str | Path) -> dict:
    """Everything the page shows, read from a run folder a batch at a time. A part that cannot be
    read is left out (None) and its error recorded under "errors", so the page still renders."""
    run_dir = Path(run_dir)
    store = ShardStore(run_dir)
    errors: dict[str, str] = {}

    def guard(key: str, fn: Callable, *args):
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001  a report of a broken run must still come out; the page shows why
            errors[key] = f"{type(e).__name__}: {e}"
            return None

    manifest = guard("manifest", _read_manifest, run_dir)
    funnel_rows, funnel_source = guard("funnel", _funnel_of, store, manifest) or (None, None)
    ran = {row.get("stage") for row in funnel_rows or ()}
    data = {
        "run_dir": str(run_dir),
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "manifest_found": manifest is not None,
        "header": guard("header", _header_of, store, manifest),
        "usage": guard("usage", _usage_of, manifest),
        "splits": guard("splits", _splits_of, store, manifest),
        "funnel": funnel_rows,
        "funnel_source": funnel_source,
        "sft": guard("sft", _sft_stats, store),
        "paper": guard("paper", _paper_numbers),
        "dimensions": guard("dimensions", _dimension_labels),
        "scores": guard("scores", _score_counts, store),
        "rule_agreement": None if manifest is None else manifest.get("rule_agreement") or {},
        "acceptance": guard("acceptance", _acceptance_of, manifest, ran),
        "examples": guard("examples", _examples, store),
    }
    data["errors"] = errors
    return data


def _read_manifest(run_dir: Path) -> dict | None:
    path = run_dir / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _funnel_of(store: ShardStore, manifest: dict | None) -> tuple[list[dict] | None, str | None]:
    if manifest is not None and manifest.get("funnel"):
        return manifest["funnel"], "manifest.json"
    if not (store.run_dir / "stages").is_dir():
        return None, None
    return funnel(store.run_dir), "the stage files (no manifest.json)"  # rejects read a column at a time


def _header_of(store: ShardStore, manifest: dict | None) -> dict | None:
    if manifest is not None:
        keys = ("model", "dialect", "templates", "taxonomy_version", "created", "seconds")
        return {"source": "manifest.json", **{k: manifest.get(k) for k in keys}}
    # a run without a manifest: the lineage columns of the first row of the furthest stage
    for stage in reversed(("seeds",) + STAGES):
        for path in store.stage_files(stage):
            with closing(read_batches(path, ["model", "templates", "taxonomy_version"], batch_size=1)) as batches:
                for batch in batches:
                    if batch.num_rows:
                        row = batch.to_pylist()[0]
                        templates = json.loads(row["templates"]) if row.get("templates") else None
                        return {"source": f"the first row of stage {stage} (no manifest.json)",
                                "model": row.get("model"), "templates": templates,
                                "taxonomy_version": row.get("taxonomy_version")}
    return None


def _usage_of(manifest: dict | None) -> dict | None:
    """Totals over the stages of what every run of the folder paid (manifest["usage_total"], or
    "usage" of a manifest without it: {stage: counters}), and the counters per stage."""
    usage = (manifest or {}).get("usage_total") or (manifest or {}).get("usage")
    if not isinstance(usage, dict) or not usage:
        return None
    if not all(isinstance(v, dict) for v in usage.values()):  # already one set of counters
        usage = {"all": usage}
    by_stage = {}
    for stage, counters in usage.items():
        row = {k: counters[k] for k in USAGE_FIELDS if isinstance(counters.get(k), (int, float))}
        failures = counters.get("failures")
        if isinstance(failures, dict):
            row["failures"] = sum(v for v in failures.values() if isinstance(v, (int, float)))
        by_stage[stage] = row
    totals: Counter = Counter()
    for row in by_stage.values():
        totals.update(row)
    return {"totals": dict(totals), "by_stage": by_stage}


def _splits_of(store: ShardStore, manifest: dict | None) -> dict | None:
    if manifest is not None and isinstance(manifest.get("splits"), dict):
        return {name: (v or {}).get("rows") for name, v in manifest["splits"].items()}
    sizes = {}
    for name in SPLITS:
        path = store.split_path(name)
        if path.exists():
            with pq.ParquetFile(path) as f:
                sizes[name] = f.metadata.num_rows
    return sizes or None


def _sft_stats(store: ShardStore) -> dict | None:
    """Constraints per row and constraints per dimension of the SFT split, a batch at a time."""
    path = store.split_path("sft")
    if not path.exists():
        return None
    rows, per_count, per_dimension = 0, Counter(), Counter()
    for batch in read_batches(path, ["constraints"]):
        column = batch.column(0)
        rows += batch.num_rows
        per_count.update(pc.fill_null(pc.list_value_length(column), 0).to_pylist())
        per_dimension.update(pc.struct_field(pc.list_flatten(column), "dimension").to_pylist())
    dimensions = {"(none)" if k is None else str(k): v for k, v in per_dimension.items()}
    return {"rows": rows, "constraint_counts": dict(sorted(per_count.items())),
            "dimensions": dict(sorted(dimensions.items()))}


def _paper_numbers() -> dict:
    stats = load_paper_stats()
    shares = stats.get("dimension_shares") or {}
    return {"source": stats.get("source"),
            "constraint_counts": stats["train"]["constraint_count_hist"],
            "mean_constraints": stats["train"].get("mean_constraints"),
            "n_instructions": stats["train"].get("n_instructions"),
            "dimension_pct": {k: v.get("paper_pct") for k, v in shares.items() if isinstance(v, dict)}}


def _dimension_labels() -> list[dict]:
    return [{"id": d.id, "name": d.name, "zh": d.zh, "type": d.type} for d in load_taxonomy().dimensions]


def _score_counts(store: ShardStore) -> dict | None:
    """Judge scores per dimension over the rows of `respond`: {dimension: {score: constraints}}."""
    if not store.stage_files("respond"):
        return None
    counts: dict[str, Counter] = defaultdict(Counter)
    for row in store.iter_rows("respond", columns=["constraints", "scores"]):
        dimension_of = {c["id"]: c["dimension"] for c in row["constraints"] or ()}
        for score in row["scores"] or ():
            if score.get("score") is not None:
                dimension = dimension_of.get(score["constraint_id"])
                counts["(none)" if dimension is None else str(dimension)][int(score["score"])] += 1
    return {dim: dict(sorted(c.items())) for dim, c in sorted(counts.items())}


def _acceptance_of(manifest: dict | None, ran: set) -> dict | None:
    """manifest["acceptance"], only the preference stages that ran (their funnel rows)."""
    acceptance = (manifest or {}).get("acceptance")
    if not isinstance(acceptance, dict):
        return None
    out = {stage: acceptance[stage] for stage in PAIR_STAGES if stage in acceptance and stage in ran}
    if "iopo" in out and acceptance.get("iopo_by_edit"):
        out["iopo_by_edit"] = dict(sorted(acceptance["iopo_by_edit"].items()))
    return out


def _examples(store: ShardStore) -> list[dict] | None:
    path = store.split_path("sft")
    if not path.exists():
        return None
    columns = ["seed_id", "prompt", "constraints", "response", "scores"]
    rows: list[dict] = []
    with closing(read_batches(path, columns, batch_size=N_EXAMPLES)) as batches:
        for batch in batches:
            rows += batch.to_pylist()[:N_EXAMPLES - len(rows)]
            if len(rows) >= N_EXAMPLES:
                break
    return rows


# --------------------------------------------------------------------------- small helpers

def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def clip(text, limit: int) -> str:
    """`text` cut to `limit` characters, a visible "…" where it was cut."""
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[:limit].rstrip() + "…"


def _num(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() and abs(value) >= 1000 else f"{value:,.2f}".rstrip("0").rstrip(".")
    return _e(value)


def _value(value, unit: str = "") -> str:
    """A chart value: percentages with one decimal, other numbers as _num."""
    return f"{value or 0:.1f}%" if unit == "%" else _num(value) + _e(unit)


def _pct(part, whole) -> str:
    return "–" if not whole else f"{100 * part / whole:.1f}%"


def _int_items(mapping: dict) -> list[tuple[int, float]]:
    """A histogram's items with int keys (JSON gives str keys), sorted; other keys dropped."""
    out = []
    for k, v in (mapping or {}).items():
        try:
            out.append((int(k), v or 0))
        except (TypeError, ValueError):
            continue
    return sorted(out)


def _missing(text: str) -> str:
    return f'<p class="missing">{_e(text)}</p>'


def _no_manifest(data: dict) -> str:
    return "." if data.get("manifest_found") else " (no manifest.json)."


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _section(key: str, inner: str) -> str:
    return f'<section id="{key}">\n<h2>{_e(SECTIONS[key])}</h2>\n{inner}\n</section>\n'


def _table(headers: list[str], rows: Iterable[list], numeric: Iterable[int] = (), row_attrs: list[str] | None = None,
           cls: str = "") -> str:
    """A table; `rows` hold cells as given (already escaped or numbers); numeric column indexes align right."""
    numeric = set(numeric)
    head = "".join(f'<th{" class=n" if i in numeric else ""}>{_e(h)}</th>' for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        attrs = f" {row_attrs[r]}" if row_attrs else ""
        cells = "".join(f'<td{" class=n" if i in numeric else ""}>{c if isinstance(c, str) else _num(c)}</td>'
                        for i, c in enumerate(row))
        body.append(f"<tr{attrs}>{cells}</tr>")
    attrs = f' class="{cls}"' if cls else ""
    return f'<table{attrs}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _details(summary: str, inner: str) -> str:
    return f"<details><summary>{_e(summary)}</summary>{inner}</details>"


def _dimension_order(data: dict, *present: Iterable[str]) -> list[tuple[str, str]]:
    """(id, label) of the dimensions to show: the taxonomy's order, then any others sorted."""
    labels = [(d["id"], d.get("name") or d["id"]) for d in data.get("dimensions") or () if d.get("id")]
    known = {i for i, _ in labels}
    extra = sorted({str(d) for group in present for d in group} - known)
    return labels + [(d, d) for d in extra]


# --------------------------------------------------------------------------- charts (inline SVG)

def _ticks(top: float, n: int = 4) -> list[float]:
    """Round tick values from 0 up to at least `top`, about n steps of 1, 2, 2.5 or 5 times a power of 10."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / n
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw - 1e-12)
    ticks = [0.0]
    while ticks[-1] < top - 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _svg_open(name: str, title: str, width: int, height: int) -> str:
    return (f'<svg class="chart" data-chart="{_e(name)}" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{_e(title)}"><title>{_e(title)}</title>')


def _legend(series: list[tuple[str, str]], x: float, y: float, width: float) -> tuple[str, float]:
    """Colour keys in rows from (x, y); returns the SVG and the height used."""
    parts, cx, cy = [], x, y
    for label, color in series:
        w = 18 + 6.5 * len(label) + 14
        if cx + w > x + width and cx > x:
            cx, cy = x, cy + 16
        parts.append(f'<rect x="{cx:.1f}" y="{cy:.1f}" width="11" height="11" rx="2" fill="{color}"/>'
                     f'<text x="{cx + 16:.1f}" y="{cy + 9.5:.1f}" class="legend">{_e(label)}</text>')
        cx += w
    return "".join(parts), cy - y + 20


def svg_hbars(name: str, title: str, rows: list[tuple[str, list[float]]], series: list[tuple[str, str]],
              value_labels: list[str] | None = None, max_value: float | None = None, unit: str = "",
              width: int = 720, label_width: int = 210) -> str:
    """A horizontal bar chart: one bar per row, stacked from the row's values (one per series,
    `series` = [(label, colour)]). A legend when there are several series; the text right of a
    bar is value_labels[i] or the bar's total."""
    bar_h, row_h, right = 14, 22, 96
    top = 8
    legend = ""
    if len(series) > 1:
        legend, used = _legend(series, label_width, top, width - label_width - 8)
        top += used
    height = int(top + row_h * max(len(rows), 1) + 6)
    plot_w = width - label_width - right
    biggest = max_value or max((sum(v or 0 for v in values) for _, values in rows), default=0) or 1
    out = [_svg_open(name, title, width, height), legend]
    for i, (label, values) in enumerate(rows):
        y = top + i * row_h
        out.append(f'<text x="{label_width - 8}" y="{y + bar_h - 3}" text-anchor="end">{_e(clip(label, 30))}</text>')
        x = float(label_width)
        for (series_label, color), value in zip(series, values):
            w = plot_w * (value or 0) / biggest
            if w > 0:
                out.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}">'
                           f'<title>{_e(label)}: {_e(series_label)} {_value(value, unit)}</title></rect>')
            x += w
        text = value_labels[i] if value_labels else _num(sum(v or 0 for v in values))
        out.append(f'<text x="{x + 5:.1f}" y="{y + bar_h - 3}" class="value">{_e(text)}</text>')
    out.append(f'<line x1="{label_width}" y1="{top - 3}" x2="{label_width}" y2="{height - 4}" class="axis"/></svg>')
    return "".join(out)


def svg_grouped_bars(name: str, title: str, categories: list[str], series: list[tuple[str, str, list[float]]],
                     horizontal: bool = False, unit: str = "", width: int = 720) -> str:
    """Bars side by side per category, one per series (label, colour, values): e.g. ours vs the
    paper's. Vertical columns with a value axis, or horizontal rows (for long category names)."""
    keys = [(label, color) for label, color, _ in series]
    legend, used = _legend(keys, 210 if horizontal else 60, 8, width - 220)
    biggest = max((v or 0 for _, _, values in series for v in values), default=0)
    if horizontal:
        return _grouped_rows(name, title, categories, series, legend, 8 + used, biggest, unit, width)
    return _grouped_columns(name, title, categories, series, legend, 8 + used, biggest, unit, width)


def _grouped_columns(name, title, categories, series, legend, top, biggest, unit, width) -> str:
    left, bottom, plot_h = 52, 30, 190
    height = int(top + plot_h + bottom)
    ticks = _ticks(biggest)
    scale = plot_h / (ticks[-1] or 1)
    plot_w = width - left - 12
    slot = plot_w / max(len(categories), 1)
    bar_w = slot * 0.78 / max(len(series), 1)
    base = top + plot_h
    out = [_svg_open(name, title, width, height), legend]
    for t in ticks:
        y = base - t * scale
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 12}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_num(t)}{_e(unit)}</text>')
    for i, category in enumerate(categories):
        x0 = left + i * slot + slot * 0.11
        for j, (label, color, values) in enumerate(series):
            value = values[i] or 0
            h = value * scale
            out.append(f'<rect x="{x0 + j * bar_w:.1f}" y="{base - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                       f'fill="{color}"><title>{_e(category)}: {_e(label)} {_value(value, unit)}</title></rect>')
        out.append(f'<text x="{left + (i + 0.5) * slot:.1f}" y="{base + 16}" text-anchor="middle">'
                   f'{_e(clip(category, 10))}</text>')
    out.append(f'<line x1="{left}" y1="{base}" x2="{width - 12}" y2="{base}" class="axis"/></svg>')
    return "".join(out)


def _grouped_rows(name, title, categories, series, legend, top, biggest, unit, width) -> str:
    label_width, right, bar_h, gap = 210, 60, 8, 7
    group_h = bar_h * len(series) + gap
    height = int(top + group_h * max(len(categories), 1) + 6)
    plot_w = width - label_width - right
    biggest = biggest or 1
    out = [_svg_open(name, title, width, height), legend]
    for i, category in enumerate(categories):
        y = top + i * group_h
        out.append(f'<text x="{label_width - 8}" y="{y + bar_h * len(series) / 2 + 4:.1f}" text-anchor="end">'
                   f'{_e(clip(category, 30))}</text>')
        for j, (label, color, values) in enumerate(series):
            value = values[i] or 0
            w = plot_w * value / biggest
            yy = y + j * bar_h
            out.append(f'<rect x="{label_width}" y="{yy}" width="{w:.1f}" height="{bar_h - 1}" fill="{color}">'
                       f'<title>{_e(category)}: {_e(label)} {_value(value, unit)}</title></rect>'
                       f'<text x="{label_width + w + 4:.1f}" y="{yy + bar_h - 1}" class="small">'
                       f'{_value(value, unit)}</text>')
    out.append(f'<line x1="{label_width}" y1="{top - 3}" x2="{label_width}" y2="{height - 4}" class="axis"/></svg>')
    return "".join(out)


def _score_colour(score: int) -> str:
    """Red (0) through yellow (5) to green (10)."""
    stops = [(0, (215, 48, 39)), (5, (254, 224, 139)), (10, (26, 152, 80))]
    (a, ca), (b, cb) = (stops[0], stops[1]) if score <= 5 else (stops[1], stops[2])
    t = (min(max(score, 0), 10) - a) / (b - a)
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ca, cb))


# --------------------------------------------------------------------------- sections

def _run_section(data: dict) -> str:
    header = data.get("header") or {}
    parts = []
    if not data.get("manifest_found"):
        parts.append(_missing("manifest.json is not in this run: the build did not finish (or this is not a "
                              "run folder). What the stage files hold is shown below."))
    facts = [("Run folder", data.get("run_dir")), ("Model", header.get("model")), ("Dialect", header.get("dialect")),
             ("Taxonomy", header.get("taxonomy_version")), ("Created", header.get("created")),
             ("Seconds", header.get("seconds")), ("Generated", data.get("generated"))]
    parts.append('<dl class="kv">' + "".join(f"<dt>{_e(k)}</dt><dd>{_num(v) if k == 'Seconds' else _e(v)}</dd>"
                                             for k, v in facts if v is not None) + "</dl>")
    if header.get("source") and header["source"] != "manifest.json":
        parts.append(_note(f"Run details from {header['source']}."))
    templates = header.get("templates")
    if isinstance(templates, dict) and templates:
        parts.append("<h3>Templates</h3><p class=templates>" + " ".join(
            f"<code>{_e(name)}@{_e(version)}</code>" for name, version in sorted(templates.items())) + "</p>")
    else:
        parts.append(_missing("Template versions are not in this run."))
    parts.append(_usage_html(data.get("usage")))
    parts.append(_splits_html(data.get("splits")))
    return _section("run", "\n".join(parts))


def _usage_html(usage: dict | None) -> str:
    if not usage or not usage.get("totals"):
        return "<h3>Usage</h3>" + _missing("LLM usage is not in this run.")
    fields = [f for f in (*USAGE_FIELDS, "failures") if f in usage["totals"]]
    headers = [f.replace("_", " ") for f in fields]
    totals = _table(headers, [[usage["totals"][f] for f in fields]], numeric=range(len(fields)))
    by_stage = _table(["stage", *headers], [[_e(stage), *[counters.get(f) for f in fields]]
                                            for stage, counters in (usage.get("by_stage") or {}).items()],
                      numeric=range(1, len(fields) + 1))
    return "<h3>Usage</h3>" + totals + _details("per stage", by_stage)


def _splits_html(splits: dict | None) -> str:
    if not splits:
        return "<h3>Splits</h3>" + _missing("No splits in this run.")
    rows = [[_e(name), n] for name, n in splits.items()]
    return "<h3>Splits</h3>" + _table(["split", "rows"], rows, numeric=[1],
                                       row_attrs=[f'data-split="{_e(name)}"' for name in splits])


def _funnel_section(data: dict) -> str:
    rows = data.get("funnel")
    if not rows:
        return _section("funnel", _missing("The funnel is not in this run: no manifest.json and no stage files."))
    table = _table(["stage", "in", "out", "rejected", "kept", "reasons"],
                   [[_e(r.get("stage")), r.get("in"), r.get("out"), r.get("rejected"),
                     _pct(r.get("out") or 0, r.get("in")), _e(clip(reasons_text(r), CLIP_SHORT))] for r in rows],
                   numeric=[1, 2, 3, 4], row_attrs=[f'data-stage="{_e(r.get("stage"))}"' for r in rows])
    bars = [(str(r.get("stage")), [r.get("out") or 0, r.get("rejected") or 0, r.get("eval") or 0]) for r in rows]
    series = [("out", OUT), ("rejected", REJECTED), ("held out for eval", HELD_OUT)]
    if not any(r.get("eval") for r in rows):
        series, bars = series[:2], [(label, values[:2]) for label, values in bars]
    chart = svg_hbars("funnel", "Rows per stage: out and rejected", bars, series,
                      value_labels=[f"{_num(r.get('out'))} / {_num(r.get('in'))}" for r in rows])
    note = _note(f"From {data.get('funnel_source') or 'the run'}. Bars: rows in each stage, split into rows "
                 "that went on and rows rejected; the label is out / in.")
    return _section("funnel", table + chart + note)


def _counts_section(data: dict) -> str:
    sft, paper = data.get("sft"), data.get("paper") or {}
    if sft is None:
        return _section("counts", _missing("The SFT split (splits/sft.parquet) is not in this run."))
    ours = dict(_int_items(sft.get("constraint_counts")))
    total = sum(ours.values())
    if not total:
        return _section("counts", _missing("The SFT split is empty: constraint counts are not in this run."))
    theirs = dict(_int_items(paper.get("constraint_counts")))
    paper_total = sum(theirs.values())
    counts = list(range(min([*ours, *theirs]), max([*ours, *theirs]) + 1))
    series = [("this run (SFT split)", OURS, [100 * ours.get(n, 0) / total for n in counts])]
    if paper_total:
        series.append(("paper (train set)", PAPER, [100 * theirs.get(n, 0) / paper_total for n in counts]))
    chart = svg_grouped_bars("counts", "Share of instructions by number of constraints", [str(n) for n in counts],
                             series, unit="%")
    mean = sum(n * c for n, c in ours.items()) / total
    paper_mean = sum(n * c for n, c in theirs.items()) / paper_total if paper_total else None
    summary = (f"{plural(total, 'SFT row')}, mean {mean:.2f} constraints each"
               + (f"; the paper's training set: {plural(paper_total, 'instruction')}, mean {paper_mean:.2f}."
                  if paper_mean is not None else "; the paper's numbers are not available."))
    table = _table(["constraints", "rows", "share", "paper share"],
                   [[n, ours.get(n, 0), _pct(ours.get(n, 0), total), _pct(theirs.get(n, 0), paper_total)]
                    for n in counts], numeric=[0, 1, 2, 3])
    return _section("counts", _note(summary) + chart + _details("table", table))


def _mix_section(data: dict) -> str:
    sft, paper = data.get("sft"), data.get("paper") or {}
    ours = (sft or {}).get("dimensions") or {}
    total = sum(ours.values())
    if sft is None or not total:
        why = "no splits/sft.parquet" if sft is None else "the SFT split has no constraints"
        return _section("mix", _missing(f"The dimension mix is not in this run: {why}."))
    theirs = {k: v for k, v in (paper.get("dimension_pct") or {}).items() if v is not None}
    order = _dimension_order(data, ours, theirs)
    series = [("this run (SFT split)", OURS, [100 * ours.get(d, 0) / total for d, _ in order])]
    if theirs:
        series.append(("paper (Trace eval)", PAPER, [theirs.get(d, 0) for d, _ in order]))
    chart = svg_grouped_bars("mix", "Share of constraints per dimension", [label for _, label in order], series,
                             horizontal=True, unit="%")
    table = _table(["dimension", "id", "constraints", "share", "paper share"],
                   [[_e(label), f"<code>{_e(d)}</code>", ours.get(d, 0), _pct(ours.get(d, 0), total),
                     "–" if d not in theirs else f"{theirs[d]:.1f}%"] for d, label in order], numeric=[2, 3, 4])
    note = _note(f"{plural(total, 'constraint')} in the SFT split. The paper quotes shares of its eval set's "
                 "constraints (its training set's are not published).")
    return _section("mix", note + chart + _details("table", table))


def _scores_section(data: dict) -> str:
    scores = data.get("scores")
    if not scores:
        return _section("scores", _missing("Judge scores are not in this run (no graded rows in stage respond)."))
    order = [(d, label) for d, label in _dimension_order(data, scores) if d in scores]
    hist = {d: dict(_int_items(scores[d])) for d, _ in order}
    values = list(range(11))
    rows = []
    for d, label in order:
        n = sum(hist[d].values())
        rows.append((label, [100 * hist[d].get(v, 0) / n if n else 0 for v in values]))
    counts = [sum(hist[d].values()) for d, _ in order]
    chart = svg_hbars("scores", "Judge scores per dimension (share of constraints per score)", rows,
                      [(str(v), _score_colour(v)) for v in values], max_value=100, unit="%",
                      value_labels=[f"n={n:,}" for n in counts])
    table = _table(["dimension", "scored", "mean", "scored 10"],
                   [[_e(label), n, f"{sum(s * c for s, c in hist[d].items()) / n:.2f}" if n else "–",
                     _pct(hist[d].get(10, 0), n)] for (d, label), n in zip(order, counts)], numeric=[1, 2, 3])
    note = _note("Scores 0–10 the judge gave each constraint of the graded rows (stage respond), "
                 "by the constraint's dimension; each bar is 100% of that dimension's constraints.")
    return _section("scores", note + chart + _details("table", table))


def _agreement_section(data: dict) -> str:
    agreement = data.get("rule_agreement")
    if agreement is None:
        return _section("agreement", _missing("Rule/judge agreement is not in this run" + _no_manifest(data)))
    if not agreement:
        return _section("agreement", _missing("Rule/judge agreement is not in this run: no constraint got a rule "
                                              "check (or rule checks were off)."))
    labels = dict(_dimension_order(data, agreement))
    keys = sorted(agreement, key=lambda k: (k != "all", list(labels).index(k) if k in labels else len(labels), k))
    rows = [(labels.get(k, k), agreement[k]) for k in keys]
    table = _table(["dimension", "checked", "agree", "rate"],
                   [[_e(label), a.get("n"), a.get("agree"), _pct(a.get("agree") or 0, a.get("n"))]
                    for label, a in rows],
                   numeric=[1, 2, 3], row_attrs=[f'data-dimension="{_e(k)}"' for k in keys])
    chart = svg_hbars("agreement", "Rule check and judge agree (% of checked constraints)",
                      [(label, [100 * (a.get("agree") or 0) / a["n"] if a.get("n") else 0]) for label, a in rows],
                      [("agree", ACCEPTED)], max_value=100, unit="%",
                      value_labels=[f"{_pct(a.get('agree') or 0, a.get('n'))} of {_num(a.get('n'))}" for _, a in rows])
    note = _note("Agree: the rule passed exactly when the judge scored 10, over constraints that have both.")
    return _section("agreement", table + chart + note)


def _acceptance_section(data: dict) -> str:
    acceptance = data.get("acceptance")
    if acceptance is None:
        return _section("acceptance", _missing("Preference data acceptance is not in this run" + _no_manifest(data)))
    rows = [(stage.upper(), acceptance[stage]) for stage in PAIR_STAGES if stage in acceptance]
    rows += [(f"IOPO: {op}", counts) for op, counts in (acceptance.get("iopo_by_edit") or {}).items()]
    parts = [_missing(f"{stage.upper()} data is not in this run.") for stage in PAIR_STAGES if stage not in acceptance]
    if rows:
        tried = [c.get("tried") or 0 for _, c in rows]
        accepted = [c.get("accepted") or 0 for _, c in rows]
        parts.append(_table(["data", "tried", "accepted", "rate"],
                            [[_e(label), t, a, _pct(a, t)] for (label, _), t, a in zip(rows, tried, accepted)],
                            numeric=[1, 2, 3], row_attrs=[f'data-kind="{_e(label)}"' for label, _ in rows]))
        parts.append(svg_hbars("acceptance", "Preference pairs tried and accepted",
                               [(label, [a, max(t - a, 0)]) for (label, _), t, a in zip(rows, tried, accepted)],
                               [("accepted", ACCEPTED), ("not accepted", NOT_ACCEPTED)],
                               value_labels=[f"{_num(a)} / {_num(t)}" for t, a in zip(tried, accepted)]))
        if "iopo" in acceptance and not acceptance.get("iopo_by_edit"):
            parts.append(_missing("IOPO acceptance per edit kind is not in this run."))
        parts.append(_note("Tried: pairs built from full-score rows; accepted: pairs that passed every check. "
                           "IOPO by edit kind: add, delete or revise a constraint to make x2."))
    return _section("acceptance", "\n".join(parts))


def _examples_section(data: dict) -> str:
    examples = data.get("examples")
    if examples is None:
        return _section("examples", _missing("Examples are not in this run (no splits/sft.parquet)."))
    if not examples:
        return _section("examples", _missing("The SFT split is empty: examples are not in this run."))
    labels = dict(_dimension_order(data))
    return _section("examples", "\n".join(_example_html(i, row, labels) for i, row in enumerate(examples, 1)))


def _example_html(i: int, row: dict, labels: dict[str, str]) -> str:
    scores = {s.get("constraint_id"): s for s in row.get("scores") or ()}
    constraint_rows = []
    for c in row.get("constraints") or ():
        s = scores.get(c.get("id")) or {}
        rule = s.get("rule_passed")
        label = labels.get(c.get("dimension"), c.get("dimension"))
        dimension = f'{_e(label)} <span class="note">{_e(c.get("dimension_zh"))}</span>'
        constraint_rows.append([_e(c.get("id")), dimension, _e(clip(c.get("text"), CLIP_SHORT)),
                                s.get("score"), "–" if rule is None else ("pass" if rule else "fail")])
    table = _table(["id", "dimension", "constraint", "score", "rule"], constraint_rows, numeric=[3]) \
        if constraint_rows else _missing("No constraints on this row.")
    return (f'<article class="example"><h3>Example {i} <span class="note">seed {_e(row.get("seed_id"))}</span></h3>'
            f'<h4>Prompt</h4><pre class="text">{_e(clip(row.get("prompt"), CLIP_LONG))}</pre>'
            f'<h4>Constraints</h4>{table}'
            f'<h4>Response</h4><pre class="text">{_e(clip(row.get("response"), CLIP_LONG))}</pre></article>')


def _errors_html(errors: dict | None) -> str:
    if not errors:
        return ""
    items = "".join(f"<li><b>{_e(k)}</b>: {_e(clip(v, 400))}</li>" for k, v in sorted(errors.items()))
    return f'<section id="errors"><h2>Parts that could not be read</h2><ul>{items}</ul></section>\n'


# --------------------------------------------------------------------------- the page

CSS = """
:root{--fg:#1f2933;--muted:#5f6b7a;--line:#d8dde3;--soft:#f4f6f8}
*{box-sizing:border-box}
body{margin:0;background:var(--soft);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,"Noto Sans","Noto Sans CJK SC","PingFang SC","Microsoft YaHei",sans-serif}
main{max-width:980px;margin:0 auto;padding:20px 24px 40px}
header h1{font-size:22px;margin:8px 0 2px}
header p{margin:0;color:var(--muted)}
nav{margin:10px 0 0;font-size:13px}
nav a{color:#2f5d8a;margin-right:12px;text-decoration:none}
section{background:#fff;border:1px solid var(--line);border-radius:6px;padding:14px 20px;margin:16px 0}
h2{font-size:17px;margin:0 0 10px}
h3{font-size:14px;margin:14px 0 6px}
h4{font-size:12px;margin:10px 0 4px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600}
.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0}
dl.kv dt{color:var(--muted)} dl.kv dd{margin:0;word-break:break-all}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--soft);padding:0 3px;
border-radius:3px}
p.templates{line-height:1.9;margin:0}
.missing{background:#fff7e0;border:1px solid #efd9a0;color:#6b4e00;padding:6px 10px;border-radius:4px;margin:6px 0}
.note{color:var(--muted);font-size:12px;margin:4px 0}
details{margin:4px 0 0} summary{cursor:pointer;color:#2f5d8a;font-size:13px}
svg.chart{display:block;width:100%;max-width:720px;height:auto;margin:6px 0}
svg.chart text{font-size:11px;fill:#333}
svg.chart text.value,svg.chart text.small{fill:#555} svg.chart text.small{font-size:9px}
svg.chart .axis{stroke:#9aa5b1;stroke-width:1} svg.chart .grid{stroke:#e6e9ed;stroke-width:1}
pre.text{white-space:pre-wrap;word-break:break-word;background:var(--soft);border:1px solid var(--line);
border-radius:4px;padding:8px 10px;margin:0;font:12px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
article.example{border-top:1px solid var(--line);padding-top:6px;margin-top:10px}
article.example:first-of-type{border-top:0;margin-top:0}
"""

_SECTION_RENDERERS = (_run_section, _funnel_section, _counts_section, _mix_section, _scores_section,
                      _agreement_section, _acceptance_section, _examples_section)


def render_report_html(data: dict) -> str:
    """The page from report_data's dict (any part may be missing: it says so on the page)."""
    data = data or {}
    model = (data.get("header") or {}).get("model")
    title = "Trace build report" + (f" · {model}" if model else "")
    nav = "".join(f'<a href="#{key}">{_e(heading)}</a>' for key, heading in SECTIONS.items())
    body = "".join(render(data) for render in _SECTION_RENDERERS)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<header><h1>{_e(title)}</h1><p>{_e(data.get('run_dir') or '')}</p><nav>{nav}</nav></header>\n"
            f"{_errors_html(data.get('errors'))}{body}</main>\n</body>\n</html>\n")
