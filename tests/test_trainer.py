"""The trainer (transformers' Trainer with our losses) on a tiny Qwen2 built in code: gradients,
references, learning, runs from the official example file and from a trace-build run folder."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO, run_cli, toy_quadruples
from flows.train import model as M
from flows.train import reference as R
from flows.train.config import TrainConfig
from flows.train.encode import collate, encode_example
from flows.train.examples import load_examples
from flows.train.objective import batch_loss
from flows.train.run import train

OFFICIAL_IOPO = REPO / "data" / "trace-eval" / "official_iopo_example.json"


def toy_batch(model_dir, data, method="iopo"):
    tokenizer = M.load_tokenizer(str(model_dir))
    examples = load_examples(data, method)[:4]
    encoded = [encode_example(tokenizer, e, method, 128) for e in examples]
    return collate(encoded, method, tokenizer.pad_token_id), [e.id for e in examples]


def config(model_dir, data, tmp_path, **kw):
    return TrainConfig(**{"model": str(model_dir), "data": str(data), "out": str(tmp_path / "out"),
                          "max_length": 128, "device": "cpu", **kw})


def test_gradients_reach_the_policy_and_never_the_frozen_reference(tiny_model_dir, toy_iopo_file, tmp_path):
    policy = M.load_model(str(tiny_model_dir), torch.float32, torch.device("cpu"))
    ref_model = M.load_model(str(tiny_model_dir), torch.float32, torch.device("cpu"), trainable=False)
    before = {n: p.clone() for n, p in ref_model.named_parameters()}
    batch, ids = toy_batch(tiny_model_dir, toy_iopo_file)
    # a nudged policy, so that the loss has a gradient away from log 2
    with torch.no_grad():
        policy.lm_head.weight.add_(0.01 * torch.randn_like(policy.lm_head.weight))
    loss, _ = batch_loss("iopo", 0.1, policy, R.FrozenCopy(ref_model), batch, ids)
    loss.backward()
    grads = [p.grad for p in policy.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum().item() for g in grads) > 0
    assert all(p.grad is None and not p.requires_grad for p in ref_model.parameters())
    assert all(torch.equal(p, before[n]) for n, p in ref_model.named_parameters())


def test_under_lora_the_adapter_disabled_policy_is_the_base_model(tiny_model_dir, toy_iopo_file, tmp_path):
    cpu = torch.device("cpu")
    base = M.load_model(str(tiny_model_dir), torch.float32, cpu, trainable=False)
    policy = M.add_lora(M.load_model(str(tiny_model_dir), torch.float32, cpu), r=4, alpha=8, dropout=0.0)
    batch, ids = toy_batch(tiny_model_dir, toy_iopo_file)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=0.05)
    reference = R.AdapterDisabled(policy)
    for _ in range(3):  # train the adapter away from zero
        loss, _ = batch_loss("iopo", 0.1, policy, reference, batch, ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        base_logps = M.sequence_logps(base, batch)[0]
        policy_logps = M.sequence_logps(policy, batch)[0]
    assert torch.allclose(reference.logps(batch, ids), base_logps, atol=1e-4)
    assert not torch.allclose(policy_logps, base_logps, atol=1e-2)  # the adapter did change the policy
    assert all(not p.requires_grad for n, p in policy.named_parameters() if "lora_" not in n)


@pytest.mark.parametrize("lora", [True, False])
def test_precomputed_reference_matches_the_live_reference(tiny_model_dir, toy_iopo_file, tmp_path, lora):
    live = train(config(tiny_model_dir, toy_iopo_file, tmp_path / "live", lora=lora, max_steps=3, micro_batch=8,
                        learning_rate=1e-2))
    pre = train(config(tiny_model_dir, toy_iopo_file, tmp_path / "pre", lora=lora, max_steps=3, micro_batch=8,
                       learning_rate=1e-2, reference="precomputed"))
    assert pre["reference"] == "precomputed" and live["reference"] == ("adapter" if lora else "copy")
    stored = [json.loads(line) for line in (tmp_path / "pre" / "out" / "ref_logps.jsonl").read_text().splitlines()]
    assert len(stored) == 8 and set(stored[0]) == {"id", "x1y1", "x1y2", "x2y2", "x2y1"}
    for key in ("loss", "logps_ref_x1y1", "logps_ref_x2y1", "accuracy_x2"):
        assert pre["last"][key] == pytest.approx(live["last"][key], rel=1e-4, abs=1e-5), key


def test_thirty_steps_of_iopo_lower_the_loss_and_raise_both_reward_accuracies(tiny_model_dir, toy_iopo_file,
                                                                             tmp_path):
    report = train(config(tiny_model_dir, toy_iopo_file, tmp_path, max_steps=30, micro_batch=4,
                          learning_rate=1e-2, warmup_ratio=0.0))
    history = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 30 and report["steps"] == 30
    first, late = history[0], history[-5:]
    assert first["loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at the start
    assert sum(r["loss"] for r in late) / 5 < first["loss"] - 0.2
    for half in ("accuracy_x1", "accuracy_x2"):
        assert sum(r[half] for r in late) / 5 > first[half] + 0.5, half
    assert (tmp_path / "out" / "final" / "adapter_config.json").exists()
    assert {"tokens_per_s", "lr", "grad_norm", "logps_policy_x1y1", "logps_ref_x2y2", "margin_x2"} <= set(first)


@pytest.mark.parametrize("method", ["sft", "dpo", "iopo-light", "iopo-input-only", "iopo-output-only"])
def test_every_method_trains_on_quadruples(tiny_model_dir, toy_iopo_file, tmp_path, method):
    # every step on all 8 examples: the first and the last loss are of the same examples
    report = train(config(tiny_model_dir, toy_iopo_file, tmp_path, method=method, max_steps=8, micro_batch=8,
                          learning_rate=1e-2, warmup_ratio=0.0))
    assert report["last"]["loss"] < report["first"]["loss"] - 0.01, method


def test_the_official_example_file_trains_one_step(tiny_model_dir, tmp_path):
    report = train(config(tiny_model_dir, OFFICIAL_IOPO, tmp_path, max_steps=1, max_length=512))
    assert report["examples"] == 1 and report["steps"] == 1
    assert torch.isfinite(torch.tensor(report["last"]["loss"]))
    assert len((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()) == 1
    assert (tmp_path / "out" / "final" / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_cli_trains_every_method_from_a_trace_build_run_folder(sim_run_dir, tiny_model_dir):
    manifest = json.loads((sim_run_dir / "manifest.json").read_text())
    for method, split in (("iopo", "iopo"), ("dpo", "dpo"), ("sft", "sft")):
        assert manifest["splits"][split]["rows"] > 0
        done = run_cli("train", "--data", sim_run_dir, "--model", tiny_model_dir, "--method", method,
                       "--max-steps", 2, "--max-length", 256, "--device", "cpu", "--quiet")
        assert done.returncode == 0, done.stderr
        report = json.loads((sim_run_dir / f"train-{method}" / "train_report.json").read_text())
        assert report["examples"] == manifest["splits"][split]["rows"] and report["steps"] == 2
        assert f"# {method} training" in done.stdout


@pytest.mark.slow
def test_cli_quiet_training_prints_its_summary_and_nothing_else(tiny_model_dir, tmp_path):
    one = tmp_path / "one.json"
    one.write_text(json.dumps(toy_quadruples()[:1]))
    done = run_cli("train", "--data", one, "--model", tiny_model_dir, "--out", tmp_path / "out", "--max-steps", 1,
                   "--max-length", 128, "--device", "cpu", "--quiet")
    assert done.returncode == 0, done.stderr
    # no weight-loading bar, no library FutureWarning nor notice: --quiet leaves the summary alone
    assert done.stderr == "" and done.stdout.startswith("# iopo training\n")
    assert ": 1 example, 1 step in " in done.stdout


@pytest.mark.slow
def test_cli_names_a_bad_data_file_in_one_line(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"conversations": [{"from": "human", "value": "x"}], "chosen": "oops",
                                "rejected": {"from": "gpt", "value": "z"}}]))
    done = run_cli("train", "--data", bad, "--model", tiny_model_dir, "--method", "dpo", "--device", "cpu")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"trace-build: error: {bad}: row 0: field 'chosen' must be "
                                                '{"from": "gpt", "value": text}']
    done = run_cli("train", "--data", bad, "--model", tiny_model_dir, "--method", "dpo", "--beta", "-1")
    assert done.returncode == 2 and "beta" in done.stderr and "Traceback" not in done.stderr


def test_full_fine_tuning_keeps_fp32_master_weights_under_bf16_compute(tiny_model_dir, toy_iopo_file, tmp_path):
    from flows.train.run import build_reference, load_policy

    cfg = config(tiny_model_dir, toy_iopo_file, tmp_path, lora=False)
    policy = load_policy(cfg, torch.bfloat16)
    reference = build_reference(cfg, policy, None, torch.device("cpu"), torch.bfloat16, tmp_path, None)
    assert {p.dtype for p in policy.parameters()} == {torch.float32}  # 5e-6 steps would vanish in bf16
    # the frozen copy holds the same weights the same way: under bf16 autocast both score alike at step 0
    assert {p.dtype for p in reference.model.parameters()} == {torch.float32}
    batch, ids = toy_batch(tiny_model_dir, toy_iopo_file)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(M.sequence_logps(policy, batch)[0], reference.logps(batch, ids))


@pytest.mark.slow
def test_cost_benchmark_runs_every_method_through_the_training_code(tmp_path):
    out = tmp_path / "cost.json"
    done = subprocess.run([sys.executable, "benchmarks/train_cost.py", "--size", "tiny", "--seq-len", "32",
                           "--steps", "1", "--warmup", "0", "--device", "cpu", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = {r["method"]: r for r in json.loads(out.read_text())["results"]}
    assert list(results) == ["sft", "dpo", "iopo", "iopo-precomputed"]
    assert [results[m]["sequences"] for m in results] == [1, 2, 4, 4]
    for method in ("dpo", "iopo", "iopo-precomputed"):  # first step: policy == reference
        assert results[method]["loss"] == pytest.approx(0.6931, abs=1e-3), method
    assert "paper (vs SFT)" in done.stdout


@pytest.mark.slow
def test_the_cost_benchmark_times_our_dpo_beside_trls_dpo_trainer_on_the_same_model_and_batch(tmp_path):
    out = tmp_path / "cost.json"
    done = subprocess.run([sys.executable, "benchmarks/train_cost.py", "--size", "tiny", "--seq-len", "32",
                           "--micro-batch", "2", "--steps", "2", "--warmup", "0", "--device", "cpu", "--methods",
                           "sft,dpo", "--engine", "all", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = {(r["method"], r["engine"]): r for r in json.loads(out.read_text())["results"]}
    # TRL trains DPO only; every method runs on the plain step and on the engine
    assert set(results) == {("sft", "plain"), ("sft", "trainer"), ("dpo", "plain"), ("dpo", "trainer"),
                            ("dpo", "trl")}
    trl = results[("dpo", "trl")]
    assert trl["sequences"] == 2 and trl["loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 0
    assert results[("dpo", "trainer")]["vs_trl"] == pytest.approx(
        results[("dpo", "trainer")]["seconds_per_step"] / trl["seconds_per_step"])
    assert "vs TRL" in done.stdout


def test_checkpoints_accumulation_and_gradient_checkpointing(tiny_model_dir, toy_iopo_file, tmp_path):
    report = train(config(tiny_model_dir, toy_iopo_file, tmp_path, lora=False, max_steps=4, micro_batch=2,
                          grad_accum=2, gradient_checkpointing=True, save_steps=2, learning_rate=1e-3))
    out = tmp_path / "out"
    # the engine also checkpoints the last step: a rerun of a finished run resumes at its end
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= {
        p.name for p in (out / "checkpoint-2").iterdir()}
    assert (out / "final" / "model.safetensors").exists() and not list(out.glob("*.tmp"))
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == [1, 2, 3, 4] and report["last"]["epoch"] == 2  # 8 examples, 4 per step


def test_sequence_logps_matches_a_log_softmax_by_hand(tiny_model_dir, toy_iopo_file):
    model = M.load_model(str(tiny_model_dir), torch.float32, torch.device("cpu"), trainable=False)
    batch, _ = toy_batch(tiny_model_dir, toy_iopo_file)  # padded rows of different lengths
    sums, counts = M.sequence_logps(model, batch)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=batch["input_ids"],
                                           attention_mask=batch["attention_mask"]).logits, dim=-1)
    for row in range(batch["input_ids"].shape[0]):
        total, n = 0.0, 0
        for pos in range(1, batch["input_ids"].shape[1]):  # token at pos is predicted at pos - 1
            label = batch["labels"][row, pos].item()
            if label != -100:
                total += logprobs[row, pos - 1, label].item()
                n += 1
        assert n == counts[row].item() > 0
        assert sums[row].item() == pytest.approx(total, rel=1e-5)


def test_accumulating_two_micro_batches_equals_one_batch_of_both(tiny_model_dir, toy_iopo_file, tmp_path):
    from safetensors.torch import load_file

    runs = {}
    for name, micro, accum in (("one", 4, 1), ("two", 2, 2)):
        report = train(config(tiny_model_dir, toy_iopo_file, tmp_path / name, lora=False, max_steps=1,
                              micro_batch=micro, grad_accum=accum, learning_rate=1e-3, warmup_ratio=0.0))
        runs[name] = (report, load_file(tmp_path / name / "out" / "final" / "model.safetensors"))
    assert runs["one"][0]["first"]["loss"] == pytest.approx(runs["two"][0]["first"]["loss"], rel=1e-5)
    assert runs["one"][0]["first"]["grad_norm"] == pytest.approx(runs["two"][0]["first"]["grad_norm"], rel=1e-4)
    # Adam's first step moves each weight by about lr * sign(grad): only weights whose gradient is
    # float noise around zero may land differently
    for key, weight in runs["one"][1].items():
        differ = (weight - runs["two"][1][key]).abs() > 1e-6
        assert differ.float().mean().item() < 0.01, key


def test_an_epoch_ends_with_a_short_step_when_micro_batches_do_not_divide(tiny_model_dir, toy_iopo_file, tmp_path):
    # 8 examples in micro-batches of 3: 3 micro-batches per epoch, 2 per step: steps of 2 and 1
    # micro-batches (the engine's count), so 2 epochs are 4 steps and every example is seen twice
    report = train(config(tiny_model_dir, toy_iopo_file, tmp_path, epochs=2, micro_batch=3, grad_accum=2))
    assert report["steps"] == 4 and report["last"]["epoch"] == pytest.approx(2)


def test_a_lora_output_folder_is_the_model_a_next_stage_starts_from(tiny_model_dir, toy_iopo_file, tmp_path):
    sft = train(config(tiny_model_dir, toy_iopo_file, tmp_path / "sft", method="sft", max_steps=5, micro_batch=8,
                       learning_rate=5e-2, save_merged=True))
    final = sft["final"]
    from_base = train(config(tiny_model_dir, toy_iopo_file, tmp_path / "a", method="dpo", max_steps=1))
    from_sft = train(config(final, toy_iopo_file, tmp_path / "b", method="dpo", max_steps=1))
    from_merged = train(config(tmp_path / "sft" / "out" / "merged", toy_iopo_file, tmp_path / "c", method="dpo",
                               max_steps=1))
    ref = "logps_ref_x1y1"
    assert from_sft["first"][ref] > from_base["first"][ref] + 0.01  # SFT raised log p(y1|x1): it is the start
    assert from_sft["first"][ref] == pytest.approx(from_merged["first"][ref], rel=1e-5)
    assert from_sft["first"]["loss"] == pytest.approx(0.6931, abs=1e-4)  # and the reference is that model too


def test_a_failed_rerun_leaves_the_previous_result_in_place(tiny_model_dir, toy_iopo_file, tmp_path):
    train(config(tiny_model_dir, toy_iopo_file, tmp_path, max_steps=1))
    with pytest.raises(Exception):
        train(config(tmp_path / "no-such-model", toy_iopo_file, tmp_path, max_steps=1))
    assert (tmp_path / "out" / "final").is_dir() and (tmp_path / "out" / "train_report.json").exists()


@pytest.mark.slow
def test_a_launched_runs_progress_is_followed_step_by_step_through_a_resume_that_replaces_the_file(tmp_path):
    """launch.py reads metrics.jsonl from where it left off; a resume puts a shorter file in its
    place (keep_metrics_until), whose steps after the start are still handed on, once each."""
    from flows.train.launch import _run_following

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 4)))  # a killed run's
    writer = f"""
import json, time
from pathlib import Path
from flows.train.checkpoints import keep_metrics_until
out = Path({str(tmp_path)!r})
time.sleep(1.5)
keep_metrics_until(out, 2)  # resumed at checkpoint 2
for step in range(3, 9):
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({{"step": step}}))
        f.flush()
        time.sleep(0.3)  # a line half written while the parent looks
        f.write("\\n")
"""
    seen = []
    assert _run_following([sys.executable, "-c", writer], metrics, 2, lambda r: seen.append(r["step"])) == 0
    assert seen == [3, 4, 5, 6, 7, 8]
