"""The training objectives as pure functions of summed response log-probs (paper-notes.md s.5).

Inputs are 1-D tensors, one value per example: the log-prob of a response given a prompt,
summed over the response tokens, under the policy (`pi_*`) and the reference (`ref_*`).
lr(y|x) = pi(y|x) - ref(y|x). Every function returns (loss per example, metrics per example).

Metrics per example: margin_x1 / accuracy_x1 (output preference given x1: y1 over y2), margin_x2
(given x2: y2 over y1), and the input preferences margin_y1 (y1: x1 over x2) and margin_y2.

IOPO names the four sequences of a quadruple (x1, y1, x2, y2) by (response, prompt):
    lr11 = lr(y1|x1), lr21 = lr(y2|x1), lr22 = lr(y2|x2), lr12 = lr(y1|x2)
    Pi1 = beta [2 lr11 - lr21 - lr12]       Pi2 = beta [2 lr22 - lr12 - lr21]
    iopo: -log sigmoid((Pi1 + Pi2) / 2) = -log sigmoid(beta [(lr11 - lr21) + (lr22 - lr12)])
          i.e. the DPO margins on x1 and on x2 summed inside one sigmoid;
    iopo-light: -log sigmoid(Pi1), three sequences (no y2 given x2), the paper's memory-light form.
The ablations keep one kind of term. Inside one sigmoid the output terms (same x, two y) and the
input terms (same y, two x) add up to the same number, lr11 + lr22 - lr21 - lr12, so an ablation
written that way would not change the loss; each ablation scores its two pairs in two sigmoids:
    iopo-output-only: mean of -log sigmoid(beta (lr11 - lr21)) and -log sigmoid(beta (lr22 - lr12))
                      (DPO on x1 and on x2: "without input preference");
    iopo-input-only:  mean of -log sigmoid(beta (lr11 - lr12)) and -log sigmoid(beta (lr22 - lr21))
                      (each y prefers its own x: "without output preference").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from flows.train.methods import IOPO_METHODS, SEQUENCES


def sft_loss(pi_logps: torch.Tensor, n_tokens: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Mean negative log-likelihood per response token over the batch (token-weighted)."""
    loss = -pi_logps.sum() / n_tokens.sum().clamp(min=1)
    return loss.expand(pi_logps.shape[0]), {"nll_per_token": (-pi_logps / n_tokens.clamp(min=1)).detach()}


def dpo_loss(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta: float) -> tuple[torch.Tensor, dict]:
    """-log sigmoid(beta [lr(chosen) - lr(rejected)])."""
    chosen_reward = beta * (pi_chosen - ref_chosen)
    rejected_reward = beta * (pi_rejected - ref_rejected)
    margin = chosen_reward - rejected_reward
    return -F.logsigmoid(margin), {
        "reward_chosen": chosen_reward.detach(), "reward_rejected": rejected_reward.detach(),
        "margin": margin.detach(), "accuracy": (margin > 0).float().detach(),
    }


def iopo_loss(pi: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], beta: float,
              method: str = "iopo") -> tuple[torch.Tensor, dict]:
    """`pi` and `ref` map sequence names (x1y1, x1y2, x2y2, x2y1) to summed log-probs."""
    if method not in IOPO_METHODS:
        raise ValueError(f"unknown IOPO method {method!r}; one of {', '.join(IOPO_METHODS)}")
    lr = {name: pi[name] - ref[name] for name in SEQUENCES[method]}
    out_x1 = beta * (lr["x1y1"] - lr["x1y2"])  # output preference given x1: y1 over y2
    in_y1 = beta * (lr["x1y1"] - lr["x2y1"])  # input preference for y1: x1 over x2
    metrics = {"margin_x1": out_x1.detach(), "accuracy_x1": (out_x1 > 0).float().detach(),
               "margin_y1": in_y1.detach(), "accuracy_y1": (in_y1 > 0).float().detach()}
    if method == "iopo-light":
        pi1 = out_x1 + in_y1
        return -F.logsigmoid(pi1), metrics | {"pi1": pi1.detach()}

    out_x2 = beta * (lr["x2y2"] - lr["x2y1"])  # output preference given x2: y2 over y1
    in_y2 = beta * (lr["x2y2"] - lr["x1y2"])  # input preference for y2: x2 over x1
    metrics |= {"margin_x2": out_x2.detach(), "accuracy_x2": (out_x2 > 0).float().detach(),
                "margin_y2": in_y2.detach(), "accuracy_y2": (in_y2 > 0).float().detach()}
    if method == "iopo":
        pi1, pi2 = out_x1 + in_y1, out_x2 + in_y2
        return -F.logsigmoid((pi1 + pi2) / 2), metrics | {"pi1": pi1.detach(), "pi2": pi2.detach()}
    if method == "iopo-output-only":
        return -(F.logsigmoid(out_x1) + F.logsigmoid(out_x2)) / 2, metrics
    return -(F.logsigmoid(in_y1) + F.logsigmoid(in_y2)) / 2, metrics  # iopo-input-only


def preference_loss(method: str, pi: dict[str, torch.Tensor], ref: dict[str, torch.Tensor],
                    beta: float) -> tuple[torch.Tensor, dict]:
    """DPO or an IOPO variant on named sequences (DPO: x1y1 chosen, x1y2 rejected)."""
    if method == "dpo":
        return dpo_loss(pi["x1y1"], pi["x1y2"], ref["x1y1"], ref["x1y2"], beta)
    return iopo_loss(pi, ref, beta, method)
