"""The reference model of DPO and IOPO, by `reference`:
    copy         a second, frozen copy of the base weights (full fine-tuning; two models in memory)
    adapter      the policy itself with its LoRA adapter disabled (one model in memory)
    precomputed  log-probs computed once by the untrained policy before training and stored with
                 the run (out/ref_logps.jsonl), so training holds one model and runs one pass less;
                 under several processes each scores its share and the shares are gathered

Each one answers `logps(batch, ids)`: the summed response log-probs of the batch's rows.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from flows.store import write_text_atomic
from flows.train.encode import collate, split_by_sequence
from flows.train.methods import SEQUENCES
from flows.train.model import sequence_logps


class FrozenCopy:
    """A second copy of the base model, frozen."""

    def __init__(self, model):
        self.model = model

    @torch.no_grad()
    def logps(self, batch: dict, ids: list[str]) -> torch.Tensor:
        return sequence_logps(self.model, batch)[0]


class AdapterDisabled:
    """The LoRA policy with its adapter switched off: the base weights, no second copy. `policy`
    is the peft model itself, not a data-parallel wrapper around it (the wrapper would wait for a
    backward pass this forward never has)."""

    def __init__(self, policy):
        self.policy = policy

    @torch.no_grad()
    def logps(self, batch: dict, ids: list[str]) -> torch.Tensor:
        with self.policy.disable_adapter():
            return sequence_logps(self.policy, batch)[0]


class Precomputed:
    """Reference log-probs looked up by example id; rows are sequence-major like the batch."""

    def __init__(self, table: dict[str, dict[str, float]], names: tuple[str, ...]):
        self.table, self.names = table, names

    def logps(self, batch: dict, ids: list[str]) -> torch.Tensor:
        values = [self.table[i][name] for name in self.names for i in ids]
        return torch.tensor(values, dtype=torch.float32, device=batch["input_ids"].device)


def precompute(policy, lora: bool, method: str, examples: list[tuple[str, dict]], micro_batch: int, pad_id: int,
               device, dtype, rank: int = 0, world: int = 1) -> dict[str, dict[str, float]]:
    """This process's share (every world-th example from rank) of the reference log-probs, by the
    untrained policy (its adapter off under LoRA): {id: {sequence name: value}}."""
    names = SEQUENCES[method]
    scorer = AdapterDisabled(policy) if lora else FrozenCopy(policy)
    mine = examples[rank::world]
    table = {}
    was_training = policy.training
    policy.eval()
    for start in range(0, len(mine), micro_batch):
        chunk = mine[start:start + micro_batch]
        ids = [example_id for example_id, _ in chunk]
        batch = {k: v.to(device) for k, v in collate([seqs for _, seqs in chunk], method, pad_id).items()}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            values = split_by_sequence(scorer.logps(batch, ids), method)
        for j, example_id in enumerate(ids):
            table[example_id] = {n: values[n][j].item() for n in names}
    policy.train(was_training)
    return table


def save_table(path: Path, table: dict[str, dict[str, float]]) -> None:
    write_text_atomic(path, "".join(json.dumps({"id": i, **v}) + "\n" for i, v in table.items()))


def load_table(path: Path, ids: list[str], method: str) -> dict[str, dict[str, float]] | None:
    """The stored table when it covers exactly these examples and sequences, else None."""
    if not path.exists():
        return None
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        table[row.pop("id")] = row
    complete = set(table) == set(ids) and all(set(v) == set(SEQUENCES[method]) for v in table.values())
    return table if complete else None
