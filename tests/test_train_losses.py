"""The training objectives against values computed by hand (paper-notes.md section 5)."""
import math

import pytest
import torch

from flows.train.losses import dpo_loss, iopo_loss, preference_loss, sft_loss


def nls(z: float) -> float:
    """-log sigmoid(z), by hand."""
    return math.log1p(math.exp(-z))


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


# One quadruple: summed log-probs of y given x under the policy and the reference.
PI = {"x1y1": -10.0, "x1y2": -14.0, "x2y2": -8.0, "x2y1": -13.0}
REF = {"x1y1": -11.0, "x1y2": -12.0, "x2y2": -10.0, "x2y1": -12.5}
LR = {k: PI[k] - REF[k] for k in PI}  # lr11 = 1, lr21 = -2, lr22 = 2, lr12 = -0.5
BETA = 0.1


def quad(values):
    return {k: t(v) for k, v in values.items()}


def test_dpo_equals_hand_value():
    loss, m = dpo_loss(t(-10.0), t(-14.0), t(-11.0), t(-12.0), beta=BETA)
    # margin = 0.1 * ((-10 + 11) - (-14 + 12)) = 0.3
    assert loss.item() == pytest.approx(nls(0.3))
    assert m["margin"].item() == pytest.approx(0.3) and m["accuracy"].item() == 1.0
    assert m["reward_chosen"].item() == pytest.approx(0.1) and m["reward_rejected"].item() == pytest.approx(-0.2)


def test_iopo_is_one_sigmoid_of_both_dpo_margins():
    loss, m = iopo_loss(quad(PI), quad(REF), BETA)
    margin_x1 = BETA * (LR["x1y1"] - LR["x1y2"])  # 0.3
    margin_x2 = BETA * (LR["x2y2"] - LR["x2y1"])  # 0.25
    assert loss.item() == pytest.approx(nls(margin_x1 + margin_x2)) == pytest.approx(nls(0.55))
    # ... which is the paper's form with Pi1 and Pi2
    pi1 = BETA * (2 * LR["x1y1"] - LR["x1y2"] - LR["x2y1"])
    pi2 = BETA * (2 * LR["x2y2"] - LR["x2y1"] - LR["x1y2"])
    assert loss.item() == pytest.approx(nls((pi1 + pi2) / 2))
    assert m["pi1"].item() == pytest.approx(pi1) and m["pi2"].item() == pytest.approx(pi2)
    assert m["margin_x1"].item() == pytest.approx(0.3) and m["margin_x2"].item() == pytest.approx(0.25)
    assert m["accuracy_x1"].item() == 1.0 and m["accuracy_x2"].item() == 1.0


def test_iopo_light_drops_pi2():
    loss, m = iopo_loss(quad({k: v for k, v in PI.items() if k != "x2y2"}),
                        quad({k: v for k, v in REF.items() if k != "x2y2"}), BETA, "iopo-light")
    pi1 = BETA * (2 * LR["x1y1"] - LR["x1y2"] - LR["x2y1"])  # 0.1 * (2 + 2 + 0.5) = 0.45
    assert loss.item() == pytest.approx(nls(pi1)) == pytest.approx(nls(0.45))
    assert "margin_x2" not in m


def test_output_only_is_dpo_on_both_halves_and_input_only_prefers_each_answers_own_prompt():
    out_loss, _ = iopo_loss(quad(PI), quad(REF), BETA, "iopo-output-only")
    dpo_x1, _ = dpo_loss(t(PI["x1y1"]), t(PI["x1y2"]), t(REF["x1y1"]), t(REF["x1y2"]), BETA)
    dpo_x2, _ = dpo_loss(t(PI["x2y2"]), t(PI["x2y1"]), t(REF["x2y2"]), t(REF["x2y1"]), BETA)
    assert out_loss.item() == pytest.approx((dpo_x1.item() + dpo_x2.item()) / 2)
    assert out_loss.item() == pytest.approx((nls(0.3) + nls(0.25)) / 2)

    in_loss, _ = iopo_loss(quad(PI), quad(REF), BETA, "iopo-input-only")
    # y1: x1 over x2 -> 0.1 * (1 - (-0.5)) = 0.15; y2: x2 over x1 -> 0.1 * (2 - (-2)) = 0.4
    assert in_loss.item() == pytest.approx((nls(0.15) + nls(0.4)) / 2)
    assert in_loss.item() != pytest.approx(out_loss.item())


def test_when_x2_equals_x1_the_halves_cancel_and_iopo_gives_no_signal():
    same = {"x1y1": -10.0, "x1y2": -14.0, "x2y2": -14.0, "x2y1": -10.0}  # x2 = x1: the same scores
    ref = {"x1y1": -11.0, "x1y2": -12.0, "x2y2": -12.0, "x2y1": -11.0}
    loss, _ = iopo_loss(quad(same), quad(ref), BETA)
    # margin on x2 = lr(y2|x1) - lr(y1|x1) = -margin on x1: the two halves cancel
    assert loss.item() == pytest.approx(math.log(2))


def test_policy_equal_to_reference_gives_log2_for_every_preference_method():
    for method in ("dpo", "iopo", "iopo-light", "iopo-input-only", "iopo-output-only"):
        loss, _ = preference_loss(method, quad(PI), quad(PI), BETA)
        assert loss.item() == pytest.approx(math.log(2)), method


def test_losses_are_per_example_and_batch_aware():
    pi = {k: t(v, v - 1.0) for k, v in PI.items()}
    ref = {k: t(v, v) for k, v in REF.items()}
    loss, _ = iopo_loss(pi, ref, BETA)
    assert loss.shape == (2,)
    assert loss[0].item() == pytest.approx(nls(0.55))
    # example 2: every policy log-prob one lower, margins unchanged
    assert loss[1].item() == pytest.approx(nls(0.55))


def test_sft_loss_is_nll_per_response_token_weighted_by_tokens():
    loss, m = sft_loss(t(-6.0, -4.0), t(3.0, 1.0))
    assert loss[0].item() == pytest.approx(10.0 / 4.0)  # the mean of means would be 3.0
    assert m["nll_per_token"].tolist() == pytest.approx([2.0, 4.0])


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown IOPO method"):
        iopo_loss(quad(PI), quad(REF), BETA, "iopo-typo")
