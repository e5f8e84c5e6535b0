"""One micro-batch scored: the policy's log-probs, the reference's, and the method's loss.

    loss, metrics = batch_loss(method, beta, policy, reference, batch, ids)

`loss` is the mean over the batch's examples; `metrics` holds one value per example (reward
margins and accuracies of both IOPO halves, the log-probs), so that the trainer can average them
over any number of micro-batches and processes with each example weighing the same.
"""
from __future__ import annotations

import torch

from flows.train.encode import split_by_sequence
from flows.train.losses import preference_loss, sft_loss
from flows.train.model import sequence_logps


def batch_loss(method: str, beta: float, policy, reference, batch: dict,
               ids: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    pi_logps, n_tokens = sequence_logps(policy, batch)
    if method == "sft":
        loss, metrics = sft_loss(pi_logps, n_tokens)
        return loss.mean(), {"loss": loss.detach(), **metrics}
    ref_logps = reference.logps(batch, ids)
    pi = split_by_sequence(pi_logps, method)
    ref = split_by_sequence(ref_logps, method)
    loss, metrics = preference_loss(method, pi, ref, beta)
    logps = {f"logps_policy_{n}": pi[n].detach() for n in pi} | {f"logps_ref_{n}": ref[n] for n in ref}
    return loss.mean(), {"loss": loss.detach(), **metrics, **logps}
