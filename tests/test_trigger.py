"""What a finished build hands to the training deployment, and when it hands nothing."""
from pathlib import Path

from flows.config import TrainingConfig
from flows.train.trigger import training_request

MANIFEST = {"splits": {"sft": {"rows": 5}, "dpo": {"rows": 2}, "iopo": {"rows": 0}, "eval": {"rows": 1}}}


def test_parameters_name_the_manifest_by_absolute_path_with_the_method_and_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrainingConfig(trigger=True, method="dpo", parameters={"beta": 0.2, "model": "/models/qwen"})
    request = training_request(cfg, MANIFEST, Path("runs/n1/manifest.json"))
    assert request.deployment == "iopo-train/gpu" and request.skipped is None
    assert request.parameters == {"manifest": str(tmp_path / "runs/n1/manifest.json"), "method": "dpo",
                                  "overrides": {"resume": "replace", "beta": 0.2, "model": "/models/qwen"}}


def test_an_empty_split_starts_nothing_and_says_why(tmp_path):
    request = training_request(TrainingConfig(trigger=True), MANIFEST, tmp_path / "manifest.json")
    assert request.parameters is None and request.skipped == "the iopo split is empty"
    # the flow parameter picks another method than the config's
    request = training_request(TrainingConfig(trigger=True), MANIFEST, tmp_path / "manifest.json", method="sft")
    assert request.parameters["method"] == "sft"
