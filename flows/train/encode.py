"""Token sequences for training: each (prompt, response) through the model's chat template, with
the prompt tokens masked out of the labels, and batches of the sequences a method scores.

    seq = encode(tokenizer, system, prompt, response, max_length)   # Encoded
    batch = collate(examples_encoded, method, pad_id)                 # tensors, sequence-major

The prompt is the chat template up to the assistant header (add_generation_prompt); the response
is the rest of the templated conversation (the answer and its end-of-turn tokens). The two are
tokenised separately, so the mask falls exactly on the boundary whatever the tokenizer merges.
Too long: the response is kept whole where it fits beside half the budget of prompt, and the
prompt loses its middle (its head names the task, its tail holds the assistant header); only
then is the response cut at its end. Either is recorded in `truncated`.
"""
from __future__ import annotations

from dataclasses import dataclass

from flows.errors import UserError
from flows.train.examples import Example
from flows.train.methods import SEQUENCES

IGNORE = -100  # label of tokens that are not trained on


class TemplateError(UserError, ValueError):
    """The tokenizer's chat template cannot split a conversation into prompt and response."""


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE on prompt tokens
    truncated: str | None = None  # None | "prompt" | "response" | "prompt+response"

    @property
    def n_prompt(self) -> int:
        return sum(1 for label in self.labels if label == IGNORE)


def template_parts(tokenizer, system: str, prompt: str, response: str) -> tuple[str, str]:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(head):
        raise TemplateError("the chat template does not render the prompt as a prefix of the conversation")
    return head, full[len(head):]


def encode(tokenizer, system: str, prompt: str, response: str, max_length: int) -> Encoded:
    head, tail = template_parts(tokenizer, system, prompt, response)
    p = tokenizer(head, add_special_tokens=False)["input_ids"]
    r = tokenizer(tail, add_special_tokens=False)["input_ids"]
    truncated = []
    prompt_budget = max(max_length - len(r), min(len(p), max_length // 2))
    if len(p) > prompt_budget:
        keep_head = prompt_budget // 2
        p = p[:keep_head] + p[len(p) - (prompt_budget - keep_head):]
        truncated.append("prompt")
    if len(p) + len(r) > max_length:
        r = r[:max_length - len(p)]
        truncated.append("response")
    return Encoded(p + r, [IGNORE] * len(p) + r, "+".join(truncated) or None)


def sequence_pairs(example: Example, method: str) -> dict[str, tuple[str, str]]:
    """(prompt, response) of each sequence the method scores for this example."""
    texts = {"x1": example.x1, "x2": example.x2, "y1": example.y1, "y2": example.y2}
    return {name: (texts[name[:2]], texts[name[2:]]) for name in SEQUENCES[method]}


def encode_example(tokenizer, example: Example, method: str, max_length: int) -> dict[str, Encoded]:
    """The method's sequences for one example. A response cut in one sequence is cut to the same
    length in every sequence it appears in, so lr(y|x1) - lr(y|x2) compares the same tokens."""
    seqs = {name: encode(tokenizer, example.system, x, y, max_length)
            for name, (x, y) in sequence_pairs(example, method).items()}
    for response in ("y1", "y2"):
        names = [n for n in seqs if n.endswith(response)]
        keep = min((len(seqs[n].labels) - seqs[n].n_prompt for n in names), default=0)
        for n in names:
            s = seqs[n]
            if len(s.labels) - s.n_prompt > keep:
                cut = s.n_prompt + keep
                flags = [f for f in (s.truncated or "").split("+") if f and f != "response"] + ["response"]
                seqs[n] = Encoded(s.input_ids[:cut], s.labels[:cut], "+".join(flags))
    return seqs


def collate(encoded: list[dict[str, Encoded]], method: str, pad_id: int):
    """Right-padded tensors of every sequence of every example, sequence-major: rows
    [name_0 of ex 0..B-1, name_1 of ex 0..B-1, ...], so one forward pass scores them all."""
    import torch

    seqs = [ex[name] for name in SEQUENCES[method] for ex in encoded]
    width = max(len(s.input_ids) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s.input_ids)
        input_ids[i, :n] = torch.tensor(s.input_ids)
        labels[i, :n] = torch.tensor(s.labels)
        attention[i, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


def split_by_sequence(values, method: str) -> dict:
    """Undo the sequence-major layout: a [S*B] tensor -> {name: [B]}."""
    names = SEQUENCES[method]
    return dict(zip(names, values.view(len(names), -1)))
