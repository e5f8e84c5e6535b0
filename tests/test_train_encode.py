"""Examples in, token sequences out: what is masked, what is truncated, how batches are laid out."""
import json

import pytest
import torch

from flows.errors import InputError
from flows.train.encode import IGNORE, collate, encode, encode_example, split_by_sequence
from flows.train.examples import Example, load_examples
from flows.train.model import load_tokenizer

from conftest import REPO

OFFICIAL_IOPO = REPO / "data" / "trace-eval" / "official_iopo_example.json"
SYSTEM = "You are a helpful assistant."


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def parts(tokenizer, seq):
    n = seq.n_prompt
    assert all(label == IGNORE for label in seq.labels[:n])
    assert seq.labels[n:] == seq.input_ids[n:]  # everything after the prompt is trained on
    return tokenizer.decode(seq.input_ids[:n]), tokenizer.decode(seq.input_ids[n:])


def test_prompt_tokens_are_masked_exactly(tokenizer):
    seq = encode(tokenizer, SYSTEM, "Name a colour. 1. One word;", "Green", max_length=512)
    prompt, response = parts(tokenizer, seq)
    assert prompt == (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nName a colour. 1. One word;"
                      "<|im_end|>\n<|im_start|>assistant\n")
    assert response == "Green<|im_end|>\n"  # the end-of-turn token is learnt too
    assert seq.truncated is None


def test_four_sequences_of_a_quadruple_pair_each_prompt_with_each_answer(tokenizer):
    ex = Example("q", SYSTEM, x1="first prompt", y1="answer one", y2="answer two", x2="second prompt")
    seqs = encode_example(tokenizer, ex, "iopo", max_length=512)
    assert list(seqs) == ["x1y1", "x1y2", "x2y2", "x2y1"]
    expect = {"x1y1": ("first prompt", "answer one"), "x1y2": ("first prompt", "answer two"),
              "x2y2": ("second prompt", "answer two"), "x2y1": ("second prompt", "answer one")}
    for name, (x, y) in expect.items():
        prompt, response = parts(tokenizer, seqs[name])
        assert f"user\n{x}<|im_end|>" in prompt and response == f"{y}<|im_end|>\n", name
    assert list(encode_example(tokenizer, ex, "iopo-light", 512)) == ["x1y1", "x1y2", "x2y1"]


def test_a_long_prompt_loses_its_middle_and_the_response_stays_whole(tokenizer):
    prompt = "HEAD " + "filler words " * 200 + " TAIL"
    seq = encode(tokenizer, SYSTEM, prompt, "short answer", max_length=120)
    assert len(seq.input_ids) <= 120 and seq.truncated == "prompt"
    head, response = parts(tokenizer, seq)
    assert response == "short answer<|im_end|>\n"
    assert head.startswith("<|im_start|>system") and head.endswith("TAIL<|im_end|>\n<|im_start|>assistant\n")


def test_a_response_too_long_to_fit_is_cut_at_its_end_and_recorded(tokenizer):
    seq = encode(tokenizer, SYSTEM, "Write at length.", "start " + "more words " * 300, max_length=100)
    assert len(seq.input_ids) == 100 and seq.truncated == "response"  # the short prompt is kept whole
    prompt, response = parts(tokenizer, seq)
    assert prompt.endswith("<|im_start|>assistant\n") and response.startswith("start more words")
    assert not response.endswith("<|im_end|>\n")


def test_collate_lays_out_sequences_by_kind_then_example_and_pads(tokenizer):
    examples = [Example(f"e{i}", SYSTEM, f"prompt {i}", "yes" * (i + 1), "no", f"other {i}") for i in range(3)]
    encoded = [encode_example(tokenizer, e, "iopo", 256) for e in examples]
    batch = collate(encoded, "iopo", pad_id=tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 12
    for row, (name, i) in enumerate((n, i) for n in ["x1y1", "x1y2", "x2y2", "x2y1"] for i in range(3)):
        seq = encoded[i][name]
        n = len(seq.input_ids)
        assert batch["input_ids"][row, :n].tolist() == seq.input_ids
        assert batch["attention_mask"][row].sum().item() == n
        assert (batch["labels"][row, n:] == IGNORE).all()  # padding is never trained on
    values = split_by_sequence(torch.arange(12), "iopo")
    assert values["x2y2"].tolist() == [6, 7, 8]


def test_the_official_example_loads_as_one_quadruple_and_serves_dpo_and_sft():
    (quad,) = load_examples(OFFICIAL_IOPO, "iopo")
    raw = json.load(open(OFFICIAL_IOPO, encoding="utf-8"))[0]
    assert quad.x1 == raw["conversations"][0]["value"] and quad.x2 == raw["conversations"][1]["value"]
    assert quad.y1 == raw["chosen"]["value"] and quad.y2 == raw["rejected"]["value"]
    assert quad.system == SYSTEM  # the file has none: the default applies
    (pair,) = load_examples(OFFICIAL_IOPO, "dpo")
    assert pair.kind == "pair" and (pair.x1, pair.y1, pair.y2) == (quad.x1, quad.y1, quad.y2)
    (sft,) = load_examples(OFFICIAL_IOPO, "sft")
    assert sft.kind == "sft" and sft.y2 is None


@pytest.mark.parametrize("row, message", [
    ({"conversations": []}, "row 1: field 'conversations' is missing or empty"),
    ({"conversations": [{"from": "human", "value": "x"}], "chosen": {"from": "human", "value": "y"},
      "rejected": {"from": "gpt", "value": "z"}}, "row 1: field 'chosen' must be"),
    ({"conversations": [{"from": "human", "value": "x"}, {"from": "gpt"}]}, "row 1: field 'conversations[1]' must be"),
])
def test_bad_rows_are_named_in_one_line(tmp_path, row, message):
    good = {"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]}
    path = tmp_path / "data.json"
    path.write_text(json.dumps([good, row]))
    with pytest.raises(InputError) as err:
        load_examples(path, "sft")
    assert str(err.value).startswith(str(path)) and message in str(err.value) and "\n" not in str(err.value)


def test_a_file_that_cannot_serve_the_method_is_refused(tmp_path):
    path = tmp_path / "sft.json"
    path.write_text(json.dumps([{"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]}]))
    with pytest.raises(InputError, match="method iopo needs quad examples, the file holds sft"):
        load_examples(path, "iopo")
    with pytest.raises(InputError, match="no such file"):
        load_examples(tmp_path / "missing.json", "iopo")


def test_a_response_cut_in_one_sequence_is_cut_alike_in_the_other(tokenizer):
    long_x2 = "second prompt " + "with many extra words " * 40
    ex = Example("q", SYSTEM, x1="short", y1="answer one " * 20, y2="answer two", x2=long_x2)
    seqs = encode_example(tokenizer, ex, "iopo", max_length=160)
    kept = {n: len(s.labels) - s.n_prompt for n, s in seqs.items()}
    assert kept["x1y1"] == kept["x2y1"] and seqs["x1y1"].truncated == "response"  # cut to match x2y1
    assert seqs["x1y1"].labels[-kept["x1y1"]:] == seqs["x2y1"].labels[-kept["x2y1"]:]  # the same tokens
    assert kept["x1y2"] == kept["x2y2"] and seqs["x1y2"].truncated is None  # y2 fits everywhere
