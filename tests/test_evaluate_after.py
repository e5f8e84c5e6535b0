"""evaluate_after: a finished training run's model and its base evaluated as Table 3 (the
simulator standing in for vLLM: the wiring is tested here, the numbers need a GPU)."""
import json
from pathlib import Path

import pytest

from conftest import run_cli, start_sim
from flows.config import ConfigError
from flows.train.config import load_train_config
from flows.train.evaluate_after import (Evaluation, _settings_digest, base_weights, eval_parameters,
                                        prepare_trained_folder)

pytestmark = pytest.mark.slow  # not in make test-fast: real servers, subprocesses or training runs


def train_args(model, data, out, *extra):
    return ["train", "--data", data, "--model", model, "--out", out, "--max-length", 128, "--device", "cpu",
            "--max-steps", 2, "--micro-batch", 4, "--quiet", "--evaluate-after", "simulated", *extra]


def write_config(path: Path, **after) -> Path:
    path.write_text(json.dumps({"evaluate_after": after}), encoding="utf-8")  # JSON is YAML
    return path


def test_the_switch_and_its_settings_read_from_the_config_and_the_command_line(tmp_path):
    base = {"model": "m", "data": "d"}
    assert load_train_config(None, {**base, "evaluate_after": True}).evaluate_after.serve == "vllm"
    assert load_train_config(None, {**base, "evaluate_after": False}).evaluate_after is None
    # --evaluate-after SERVE on top of a config's `evaluate_after: true`
    config = tmp_path / "t.yaml"
    config.write_text("evaluate_after: true\n", encoding="utf-8")
    cfg = load_train_config(config, {**base, "evaluate_after.serve": "simulated"})
    assert cfg.evaluate_after.serve == "simulated" and cfg.evaluate_after.base
    assert cfg.saves_merged  # under LoRA a server needs the adapter merged in
    assert not load_train_config(None, {**base, "lora": False, "evaluate_after": True}).saves_merged
    with pytest.raises(ConfigError, match="serve"):
        load_train_config(None, {**base, "evaluate_after": {"serve": "ollama"}})


def test_the_base_results_folder_follows_the_base_weights_and_every_evaluation_setting(tmp_path):
    model = tmp_path / "base"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "config.json").write_text("{}")

    def digest(**after):
        cfg = load_train_config(None, {"model": str(model), "data": "d", "evaluate_after": after})
        return _settings_digest(eval_parameters(cfg, str(model), tmp_path / "anywhere", tmp_path / "c.sqlite"))

    first = digest(limit=2)
    assert digest(limit=2) == first
    assert digest(limit=3) != first
    assert digest(limit=2, judge_base_urls=["http://127.0.0.1:9/v1"]) != first
    (model / "model.safetensors").write_bytes(b"other weights")  # the same name, new weights
    assert digest(limit=2) != first


def test_a_lora_base_is_served_from_its_runs_merged_weights(tmp_path):
    """The paper's chain: IOPO from the SFT model, whose output folder holds an adapter."""
    final = tmp_path / "train-sft" / "final"
    final.mkdir(parents=True)
    (final / "adapter_config.json").write_text("{}")
    cfg = load_train_config(None, {"model": str(final), "data": "d", "evaluate_after": True})
    with pytest.raises(ConfigError, match="--save-merged"):
        base_weights(cfg)
    (tmp_path / "train-sft" / "merged").mkdir()
    (tmp_path / "train-sft" / "merged" / "config.json").write_text("{}")
    assert base_weights(cfg) == str(tmp_path / "train-sft" / "merged")
    plain = load_train_config(None, {"model": "Qwen/Qwen2-7B-Instruct", "data": "d", "evaluate_after": True})
    assert base_weights(plain) == "Qwen/Qwen2-7B-Instruct"


def test_the_trained_models_folder_is_started_afresh_when_its_weights_changed(tmp_path):
    weights = tmp_path / "merged"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"one")
    evaluation = Evaluation("trained", {"out": str(tmp_path / "eval"), "backend_model": str(weights)})
    prepare_trained_folder(evaluation)
    (tmp_path / "eval" / "results.json").write_text("{}")
    prepare_trained_folder(evaluation)  # the same weights: what is there stays (and its request cache)
    assert (tmp_path / "eval" / "results.json").exists()
    (weights / "model.safetensors").write_bytes(b"two")  # trained further: answers cached by name are stale
    prepare_trained_folder(evaluation)
    assert not (tmp_path / "eval" / "results.json").exists()
    assert (tmp_path / "eval" / "weights.json").exists()


def test_train_then_table_3_with_the_base_evaluated_once(tiny_model_dir, toy_iopo_file, tmp_path):
    config = write_config(tmp_path / "t.yaml", limit=2, base_results=str(tmp_path / "eval-base"))
    done = run_cli(*train_args(tiny_model_dir, toy_iopo_file, tmp_path / "a", "--config", config))
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "a" / "eval" / "table-3.md").read_text()
    assert table in done.stdout
    rows = json.loads((tmp_path / "a" / "eval" / "table-3.json").read_text())["rows"]
    assert [r["model"] for r in rows] == [str(tmp_path / "a" / "merged"), str(tiny_model_dir)]
    assert all(r["trace_if_s"] is not None and r["ifeval_s_acc"] is not None for r in rows)
    assert "Qwen2-7B IOPO (the IOPO paper) | 82.0" in table
    (base_results,) = [p for p in (tmp_path / "eval-base").iterdir() if p.is_dir()]
    before = (base_results / "results.json").stat().st_mtime_ns

    done = run_cli(*train_args(tiny_model_dir, toy_iopo_file, tmp_path / "b", "--config", config, "--method", "sft"))
    assert done.returncode == 0, done.stderr
    assert (base_results / "results.json").stat().st_mtime_ns == before  # not evaluated again
    rows = json.loads((tmp_path / "b" / "eval" / "table-3.json").read_text())["rows"]
    assert [r["out"] for r in rows] == [str(tmp_path / "b" / "eval"), str(base_results)]


def test_mistakes_in_the_evaluation_settings_are_one_line_before_any_training(tiny_model_dir, toy_iopo_file,
                                                                              tmp_path):
    other = tmp_path / "eval.yaml"
    other.write_text("model: {base_urls: ['http://127.0.0.1:9/v1']}\nanswer_max_tokens: 0\n", encoding="utf-8")
    for after, message in (({"config": str(other)}, "answer_max_tokens"),
                           ({"cfbench_data": str(tmp_path / "no.json")}, "no.json")):
        out = tmp_path / "out"
        done = run_cli(*train_args(tiny_model_dir, toy_iopo_file, out, "--config",
                                   write_config(tmp_path / "t.yaml", **after)))
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not out.exists()


def test_a_judge_that_fails_leaves_no_table_and_exits_nonzero(tiny_model_dir, toy_iopo_file, tmp_path):
    judge = start_sim(error_500_rate=1.0)
    try:
        eval_config = tmp_path / "eval.yaml"
        eval_config.write_text("judge: {max_attempts: 1}\nrule_checks: false\n", encoding="utf-8")
        config = write_config(tmp_path / "t.yaml", limit=2, base=False, config=str(eval_config),
                              judge_base_urls=[judge.base_url], base_results=str(tmp_path / "eval-base"))
        done = run_cli(*train_args(tiny_model_dir, toy_iopo_file, tmp_path / "a", "--config", config))
    finally:
        judge.stop()
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("trace-build: error: ") and "2 of 2 rows unscored: judge_failed server_error 2" in last \
        and "rerun" in last, done.stderr
    assert (tmp_path / "a" / "final").is_dir()  # the training itself is done; a rerun only evaluates
    assert not (tmp_path / "a" / "eval" / "table-3.md").exists()
