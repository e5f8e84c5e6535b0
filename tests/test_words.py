"""Counts in what users read take the noun's number: '1 example', '2 examples'."""
from flows.errors import bug_message
from flows.report import cost_text
from flows.train.report import summary_markdown
from flows.words import plural


def test_plural():
    assert [plural(n, "row") for n in (0, 1, 2, 1500)] == ["0 rows", "1 row", "2 rows", "1,500 rows"]


def test_a_training_summary_of_one_example():
    last = {"loss": 0.69}
    text = summary_markdown({"method": "iopo", "model": "m", "data": "d", "examples": 1, "steps": 1, "seconds": 1.0,
                             "device": "cpu", "dtype": "float32", "lora": True, "reference": "adapter",
                             "final": "out/final", "truncated_sequences": {}, "first": last, "last": last})
    assert "`d`: 1 example, 1 step in 1.0 s" in text


def test_a_run_of_one_request_and_a_bug_on_one_row():
    run = {"requests": 1, "cache_hits": 1, "prompt_tokens": 1, "completion_tokens": 0, "seconds": 2}
    assert cost_text({"runs": [run]}) == "this run: 1 request paid, 1 answer from the request cache, 1 token, 2 s"
    assert bug_message({"qc": 1}).startswith("1 row rejected because")
