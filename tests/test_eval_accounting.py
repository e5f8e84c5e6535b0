"""Every suite's results add up: scored + unscored = rows; an answer the model failed by itself
(too long) is scored, as not followed, and stays in every breakdown; a row the judge could not
score is unscored, left out and said so. Run as a user types it, against the simulator."""
import json
import re
from collections import Counter

import pytest

from conftest import read_rows, run_cli, start_sim
from test_cfbench_suite import write as write_cfbench
from test_complexbench_suite import write as write_complexbench

# Answers of at most 12 tokens: the simulator's longer answers end with finish_reason "length"
# (output_too_long, the model's own failure). Over `--sample 4` of the official Trace rows that is
# some rows, not all (a change to the simulator's text may redraw: pick another length then).
SHORT_ANSWERS = "answer_max_tokens: 12\n"
TALLY = re.compile(r"^(\d+) of (\d+) (\w+) scored, (\d+) unscored(?: \(not counted: ([^)]*)\))?"
                   r"(?:; answers the model failed by itself \(counted as not followed\): ([^;.]*))?", re.M)


def table(stdout: str, heading: str) -> dict[str, list[str]]:
    """The markdown table under `heading`: first cell -> the other cells."""
    lines = stdout.split(heading, 1)[1].split("\n\n", 2)[1].splitlines()[2:]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines)}


def evaluate(suite: str, args: list, tmp_path, **knobs):
    config = tmp_path / "short.yaml"
    config.write_text(SHORT_ANSWERS)
    with start_sim(**knobs) as sim:
        return run_cli("eval", "--suite", suite, *args, "--base-url", sim.base_url, "--out", tmp_path / "o",
                       "--config", config, "--quiet", "--no-rule-checks")


def test_a_trace_answer_the_model_failed_is_scored_as_not_followed_in_every_table(tmp_path):
    # the judge's JSON never parses: every answered row is unscored; the answers too long are scored
    done = evaluate("trace", ["--sample", 4], tmp_path, malformed_rate=1.0)
    rows = read_rows(tmp_path / "o" / "rows.parquet")
    failed = [r for r in rows if r["failure"] == "answer_failed:output_too_long"]
    unscored = [r for r in rows if r["failure"] == "judge_failed:unparseable_output"]
    assert failed and unscored and len(failed) + len(unscored) == len(rows) == 4, [r["failure"] for r in rows]
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert (results["scored"], results["unscored"]) == (len(failed), len(unscored))
    assert results["scored"] + results["unscored"] == results["rows"]
    # the summary adds up and keeps the model's failures apart from the unscored rows
    assert (f"\n{len(failed)} of 4 rows scored, {len(unscored)} unscored (not counted: judge_failed "
            f"unparseable_output {len(unscored)}); answers the model failed by itself (counted as not followed): "
            f"output_too_long {len(failed)}; rule policy: both.\n") in done.stdout
    assert "failures:" not in done.stdout
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1] == (
        f"trace-build: error: Trace: {len(unscored)} of 4 rows unscored: judge_failed unparseable_output "
        f"{len(unscored)}")
    # by dimension: every constraint of a failed answer is counted, as not passed; the unscored apart
    dims = table(done.stdout, "## By dimension")
    in_failed = Counter(c["dimension"] for r in failed for c in r["constraints"])
    in_unscored = Counter(c["dimension"] for r in unscored for c in r["constraints"])
    assert set(dims) == set(in_failed) | set(in_unscored)
    for dimension, (n, passed, rate, with_rules, failed_n, unscored_n) in dims.items():
        assert (int(n), int(passed), int(failed_n), int(unscored_n)) == \
            (in_failed[dimension], 0, in_failed[dimension], in_unscored[dimension]), dimension
    # by constraint count and by category: each row once, as an answer failed or unscored
    for heading, key in (("## By constraint count", lambda r: str(r["n_constraints"])),
                         ("## By category", lambda r: r["category"] or "-")):
        shown = {k: (int(cells[3]), int(cells[4])) for k, cells in table(done.stdout, heading).items()}
        assert shown == {k: (sum(key(r) == k for r in failed), sum(key(r) == k for r in unscored))
                         for k in {key(r) for r in rows}}, heading


@pytest.mark.parametrize("suite", ["cfbench", "complexbench", "ifeval"])
def test_every_suite_tallies_alike_and_says_how_failed_rows_stand_in_its_tables(suite, tmp_path):
    args = {"cfbench": ["--data", write_cfbench(tmp_path / "cf.json")],
            "complexbench": ["--data", write_complexbench(tmp_path / "cb.json"), "--lang", "en"],
            "ifeval": ["--limit", 4]}[suite]
    done = evaluate(suite, args, tmp_path, malformed_rate=1.0)
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    model_failed = results["failures"].get("answer_failed:output_too_long", 0)
    judge_failed = sum(n for reason, n in results["failures"].items() if reason.startswith("judge_failed"))
    assert model_failed  # short answers: at least one the model failed by itself
    tally = TALLY.search(done.stdout)
    assert tally, done.stdout[:400]
    scored, total, unit, unscored, why, own = tally.groups()
    assert int(scored) + int(unscored) == int(total) == 4
    assert (int(scored), int(unscored)) == (model_failed, judge_failed)  # every judged row failed to parse
    assert own == f"output_too_long {model_failed}"
    assert (why or None) == (f"judge_failed unparseable_output {judge_failed}" if judge_failed else None)
    note = f"In every table below, {unit} whose answer the model failed ({model_failed}) count as not followed"
    assert note in done.stdout and "failures:" not in done.stdout
    assert done.returncode == (1 if judge_failed else 0)
