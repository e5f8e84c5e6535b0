"""Data contracts: the columns of every table a trace build writes, defined once.

Rows accumulate columns stage by stage: a stage's output row is its input row plus the
stage's own columns, with the lineage columns renewed (new row_id, parent_id = input row_id).
"""
from __future__ import annotations

import hashlib
import json

import pyarrow as pa

SCHEMA_VERSION = 1

STAGES = ("taxonomy", "expand", "structure", "qc", "respond")  # the five construction stages
PAIR_STAGES = ("dpo", "iopo")  # preference data, both built from the graded rows of `respond`
# Which stage's rows each stage takes in: a chain, then a fork after `respond`.
PARENT = {"taxonomy": "seeds", "expand": "taxonomy", "structure": "expand", "qc": "structure",
          "respond": "qc", "dpo": "respond", "iopo": "respond"}

LINEAGE = [
    pa.field("row_id", pa.string(), nullable=False),  # content id of this row
    pa.field("seed_id", pa.string(), nullable=False),  # content id of the seed it came from
    pa.field("parent_id", pa.string()),  # row_id of the row this one was made from
    pa.field("stage", pa.string(), nullable=False),
    pa.field("model", pa.string()),  # as reported by the server
    pa.field("templates", pa.string()),  # JSON {template: version} of every call so far
    pa.field("sampling", pa.string()),  # JSON {call: {temperature, seed, max_tokens}}
    pa.field("taxonomy_version", pa.string()),
]

SEED = [
    pa.field("text", pa.string(), nullable=False),
    pa.field("lang", pa.string()),
    pa.field("source", pa.string()),  # file:row it was read from
]

_NEW_TYPE = pa.struct([("name", pa.string()), ("description", pa.string())])
_CONSTRAINT = pa.struct([
    ("id", pa.string()), ("text", pa.string()), ("dimension", pa.string()),
    ("dimension_zh", pa.string()), ("type", pa.string()),
    ("check", pa.string()),  # JSON rule-check spec (flows/checks/) where a rule can decide it, else null
])
_SCORE = pa.struct([
    ("constraint_id", pa.string()), ("score", pa.int32()), ("explanation", pa.string()),
    ("rule_passed", pa.bool_()), ("rule_reason", pa.string()),  # null where the constraint has no check
])

STAGE_COLUMNS: dict[str, list[pa.Field]] = {
    "seeds": SEED,
    "taxonomy": [
        pa.field("fit_dimensions", pa.list_(pa.string())),
        pa.field("new_constraint_types", pa.list_(_NEW_TYPE)),
    ],
    "expand": [
        pa.field("target_dimensions", pa.list_(pa.string())),
        pa.field("instruction", pa.string()),
    ],
    "structure": [
        pa.field("description", pa.string()),
        pa.field("constraints", pa.list_(_CONSTRAINT)),
        pa.field("input", pa.string()),  # the literal "NULL" when there is none, as in Trace
    ],
    "qc": [
        pa.field("qc_complete", pa.bool_()),
        pa.field("qc_complete_reasoning", pa.string()),
        pa.field("qc_non_redundant", pa.bool_()),
        pa.field("qc_non_redundant_reasoning", pa.string()),
    ],
    "respond": [
        pa.field("prompt", pa.string()),  # the serialised instruction the model answered
        pa.field("response", pa.string()),
        pa.field("scores", pa.list_(_SCORE)),
        pa.field("overall", pa.int32()),
        pa.field("overall_explanation", pa.string()),
        pa.field("full_score", pa.bool_()),  # every constraint passed (score 10; and its rule, by the policy)
    ],
    # y_win = response (scored 10 everywhere); y_lose made worse on purpose, graded the same way
    "dpo": [
        pa.field("rejected_response", pa.string()),
        pa.field("rejected_scores", pa.list_(_SCORE)),
        pa.field("rejected_overall", pa.int32()),
    ],
    # (x1, y1) = (prompt, response); x2 = same description and input, edited constraints
    "iopo": [
        pa.field("edit_op", pa.string()),  # add | delete | revise
        pa.field("edited_constraint_ids", pa.list_(pa.string())),  # ids in x1 (delete/revise) or x2 (add)
        pa.field("constraints2", pa.list_(_CONSTRAINT)),
        pa.field("prompt2", pa.string()),  # x2 serialised
        pa.field("response2", pa.string()),  # y2
        pa.field("scores_y2_x2", pa.list_(_SCORE)),
        pa.field("scores_y1_x2", pa.list_(_SCORE)),  # must fail at least one constraint
        pa.field("scores_y2_x1", pa.list_(_SCORE)),  # must fail at least one constraint
    ],
}

REJECTS = pa.schema([
    pa.field("row_id", pa.string(), nullable=False),  # the input row that did not go on
    pa.field("seed_id", pa.string(), nullable=False),
    pa.field("stage", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),  # machine-readable code
    pa.field("detail", pa.string()),
    pa.field("row", pa.string()),  # the input row as JSON, to inspect or replay
])

SYSTEM_PROMPT = "You are a helpful assistant."

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
# The final splits: which stage's rows each holds (plus chat `messages` for x1 -> y1).
SPLIT_STAGE = {"sft": "respond", "eval": "respond", "dpo": "dpo", "iopo": "iopo"}
SPLIT_REJECTS = pa.schema([
    pa.field("row_id", pa.string(), nullable=False), pa.field("seed_id", pa.string(), nullable=False),
    pa.field("split", pa.string()), pa.field("reason", pa.string(), nullable=False), pa.field("detail", pa.string()),
])


# One row of a Trace evaluation (flows/evaluation.py): the answer, the judge's scores with rule
# verdicts beside them, and whether the instruction was followed, by each reading.
EVAL_ROW = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("category", pa.string()),
    pa.field("n_constraints", pa.int32()),
    pa.field("prompt", pa.string()),
    pa.field("answer", pa.string()),
    pa.field("model", pa.string()),
    pa.field("judge_model", pa.string()),
    pa.field("constraints", pa.list_(_CONSTRAINT)),
    pa.field("scores", pa.list_(_SCORE)),
    pa.field("overall", pa.int32()),
    pa.field("overall_explanation", pa.string()),
    pa.field("followed_strict", pa.bool_()),  # every constraint scored 10 by the judge (the paper's reading)
    pa.field("followed_with_rules", pa.bool_()),  # every constraint passed, rule checks included (the policy)
    pa.field("followed_overall", pa.bool_()),  # overall score 10
    # answer_failed:<reason>   the model's own failure (too long, empty): scored as not followed
    # answer_unavailable:<reason> | judge_failed:<reason>   not scored; null when scored
    pa.field("failure", pa.string()),
    pa.field("checks_failure", pa.string()),  # rule-check extraction failed (the judge still scored)
    pa.field("answer_cached", pa.bool_()),  # the answer came from the request cache of an earlier run
])


def lineage_of(stage: str) -> list[str]:
    """The stages a row has passed through to leave `stage`, from `seeds` on."""
    chain = [stage]
    while chain[-1] in PARENT:
        chain.append(PARENT[chain[-1]])
    return chain[::-1]


def stage_schema(stage: str) -> pa.Schema:
    """Columns of a stage's output: lineage, then the columns of every stage on its path."""
    fields = list(LINEAGE)
    for name in lineage_of(stage):
        fields += STAGE_COLUMNS[name]
    return pa.schema(fields)


def content_id(*parts) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def request_seed(run_seed: int, *purpose) -> int:
    """The sampling seed of one LLM request, fixed by the run seed and what the request is for."""
    return int(content_id(run_seed, "request", *purpose), 16) % (2**31)


def serialise_instruction(description: str, constraints: list[str], input_text: str | None) -> str:
    """The official Trace layout of an instruction (paper-notes.md section 3)."""
    text = description + "\n" + "".join(c + "\n" for c in constraints)
    if input_text and input_text != "NULL":
        text += "# Inputs:\n" + input_text + "\n"
    return text


def split_schema(split: str) -> pa.Schema:
    return stage_schema(SPLIT_STAGE[split]).append(pa.field("messages", MESSAGES))
