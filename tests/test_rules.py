"""Rule checks beside the judge: which checks are kept, the verdicts, the policy, and a build
whose structuring stage attaches checks that grading then runs."""
import json

import pytest

from conftest import DEMO_SEEDS, read_rows, run_cli, start_sim
from flows.rules import accept_checks, agreement, checkable_constraints, passes, with_rule_verdicts
from flows.stages.pairs import apply_edit, four_pairing_verdict
from flows.stages.respond import full_score
from flows.taxonomy import load_taxonomy

TAXONOMY = load_taxonomy()
INCLUDE = {"kind": "include", "phrases": ["river"], "mode": "all"}


def constraint(dimension, check=None, cid="c1"):
    return {"id": cid, "text": "t", "dimension": dimension, "dimension_zh": "", "type": "", "check": check}


def test_checks_answer_only_the_checkable_constraints_and_are_kept_when_valid_and_grounded():
    constraints = [constraint("inclusion", cid="c1") | {"text": "Mention the river."},
                   constraint("theme", cid="c2") | {"text": "About rivers."},
                   constraint("numerical", cid="c3") | {"text": "Use three to nine words."},
                   constraint("inclusion", cid="c4") | {"text": "Mention the sea."},
                   constraint("output_format", cid="c5") | {"text": "Use Markdown."}]
    assert [c["id"] for c in checkable_constraints(constraints, TAXONOMY)] == ["c1", "c3", "c4", "c5"]
    # one answer per checkable constraint, in order: theme is never asked about
    checks = [INCLUDE, {"kind": "count", "unit": "words", "min": 9, "max": 3}, INCLUDE,
              {"kind": "format", "format": "markdown_table"}]
    kept = accept_checks(constraints, checks, TAXONOMY)
    assert json.loads(kept[0]) == INCLUDE
    # theme: not asked; min > max: invalid; "river" is not in "Mention the sea."; Markdown is no table
    assert kept[1:] == [None, None, None, None]
    assert accept_checks(constraints, [], TAXONOMY) == [None] * 5  # a short answer leaves the rest unchecked


def test_verdicts_sit_beside_scores_and_the_policy_decides():
    constraints = [constraint("inclusion", json.dumps(INCLUDE)), constraint("theme", cid="c2")]
    judge = [{"constraint_id": "c1", "score": 10, "explanation": "ok"},
             {"constraint_id": "c2", "score": 10, "explanation": "ok"}]
    scores = with_rule_verdicts(judge, constraints, "A note about the sea.")
    assert scores[0]["rule_passed"] is False and "river" in scores[0]["rule_reason"]
    assert scores[1]["rule_passed"] is None and scores[1]["rule_reason"] is None
    assert not full_score(scores, "both") and full_score(scores, "judge") and not full_score(scores, "rule")
    low = {"score": 7, "rule_passed": True}
    assert not passes(low, "both") and not passes(low, "judge") and passes(low, "rule")
    assert agreement([(scores, constraints)]) == {"all": {"n": 1, "agree": 0, "rate": 0.0},
                                                  "inclusion": {"n": 1, "agree": 0, "rate": 0.0}}


def test_a_failed_rule_blocks_a_quadruple_under_both_but_not_under_judge():
    ok = [{"score": 10, "rule_passed": None}]
    ruled_out = [{"score": 10, "rule_passed": False}]
    fails = [{"score": 3, "rule_passed": None}]
    assert four_pairing_verdict(ruled_out, ok, fails, fails) == "y1_not_full_score_on_x1"
    assert four_pairing_verdict(ruled_out, ok, fails, fails, policy="judge") is None


def test_a_revised_constraint_loses_its_check():
    constraints = [constraint("inclusion", json.dumps(INCLUDE)), constraint("numerical", None, "c2")]
    revised, changed = apply_edit("revise", {"revisions": [{"number": 1, "text": "Mention a lake"}]}, constraints,
                                  TAXONOMY)
    assert changed == ["c1"] and revised[0]["text"] == "Mention a lake" and revised[0]["check"] is None
    deleted, _ = apply_edit("delete", {"delete": [2]}, constraints, TAXONOMY)
    assert deleted[0]["check"] == json.dumps(INCLUDE)  # untouched constraints keep theirs


@pytest.mark.slow
def test_a_build_attaches_checks_in_structuring_and_grades_with_them(tmp_path):
    out = tmp_path / "run"
    # the extraction call returns random specs, most of them invalid for their dimension or not
    # grounded in their constraint's text: the simulator seed picks a draw where some are kept
    # (any change to the schema or prompt redraws)
    with start_sim(any_of="random", seed=9) as server:
        done = run_cli("run", "--seeds", DEMO_SEEDS, "--limit", 30, "--base-url", server.base_url, "--out", out,
                       "--quiet")
    assert done.returncode == 0, done.stderr
    structured = read_rows(out / "stages" / "structure" / "shard-00000.parquet") + \
        read_rows(out / "stages" / "structure" / "shard-00001.parquet")
    with_checks = [c for r in structured for c in r["constraints"] if c["check"]]
    assert with_checks and all(TAXONOMY.dimension(c["dimension"]).rule_checkable for c in with_checks)
    graded = [r for path in sorted((out / "stages" / "respond").glob("shard-*.parquet")) for r in read_rows(path)]
    verdicts = 0
    for row in graded:
        for score, c in zip(row["scores"], row["constraints"]):
            assert (score["rule_passed"] is None) == (c["check"] is None)  # a verdict exactly where a check is
            verdicts += score["rule_passed"] is not None
        assert row["full_score"] == full_score(row["scores"], "both")
    manifest = json.loads((out / "manifest.json").read_text())
    assert verdicts > 0 and manifest["rule_agreement"]["all"]["n"] == verdicts


def test_a_failed_check_extraction_keeps_the_row_without_checks():
    import asyncio
    from types import SimpleNamespace

    from flows.llm.client import LLMFailure
    from flows.stages.structure import StructureStage

    class ExtractionFails(StructureStage):  # the server gives no usable check, whatever it was asked
        async def ask(self, ctx, trace, row, template, kind, schema=None, **values):
            raise LLMFailure("unparseable_output", "not JSON")

    constraints = [constraint("inclusion")]
    ctx = SimpleNamespace(taxonomy=TAXONOMY)
    kept = asyncio.run(ExtractionFails().attach_checks({"seed_id": "s"}, constraints, ctx, None))
    assert kept == constraints and kept[0]["check"] is None
