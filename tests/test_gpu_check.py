"""scripts/gpu-check.sh cannot rot between the sessions that have a GPU: its dry run takes the same
steps at tiny sizes on the CPU, and scripts/gpu-wheels.sh brings every package the trainer and the
benchmark import that the GPU image lacks."""
import ast
import json
import os
import re
import subprocess
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO

CHECK = REPO / "scripts" / "gpu-check.sh"
WHEELS = REPO / "scripts" / "gpu-wheels.sh"
COST_PARTS = {"1.5b-full": ("sft", "dpo", "iopo", "iopo-precomputed"), "7b-lora": ("sft", "dpo", "iopo", "iopo-precomputed")}
SEQUENCES = {"sft": 1, "dpo": 2, "iopo": 4, "iopo-precomputed": 4}
# train_cost.py's --engine trl / all only (TRL's DPOTrainer beside ours), which gpu-check.sh does not run.
NOT_ON_THE_GPU_CHECK = {"trl", "datasets"}
# What the GPU machine runs: the benchmark, the trainer, and the Python blocks of gpu-check.sh.
ROOTS = ["benchmarks/train_cost.py", "flows/train/run.py", "flows/train/launch.py", "flows/train/tiny.py", "flows/train/examples.py"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    done = subprocess.run(["bash", str(CHECK), "--dry-run", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=500, env={**os.environ, "PYTHON": sys.executable})
    return done, out


@pytest.mark.slow
def test_the_dry_run_reports_every_part_with_numbers(dry_run):
    done, out = dry_run
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    report = json.loads((out / "gpu-check.json").read_text())
    parts = {p["name"]: p for p in report["parts"]}
    expected = {"env", "train-iopo-lora", "train-iopo-full", "train-iopo-fsdp"} | {
        f"cost-{group}-{method}" for group, methods in COST_PARTS.items() for method in methods}
    assert set(parts) == expected
    assert report["ok"] and report["mode"] == "dry-run"
    assert {p["name"]: p["status"] for p in parts.values()} == dict.fromkeys(expected, "ok")
    assert report["environment"]["pydantic"] and report["environment"]["torch"]

    for group, methods in COST_PARTS.items():
        for method in methods:
            part = parts[f"cost-{group}-{method}"]
            r = part["result"]
            assert r["seconds_per_step"] > 0 and r["tokens_per_s"] > 0, part
            assert r["sequences"] == SEQUENCES[method] and r["dtype"] == "torch.bfloat16"
            assert part["time_ratio"] > 0, part
            if method != "iopo-precomputed":
                assert part["paper_time_ratio"] == {"sft": 1.0, "dpo": 1.8, "iopo": 2.4}[method]
        assert parts[f"cost-{group}-sft"]["time_ratio"] == 1.0
    assert parts["cost-1.5b-full-iopo"]["result"]["reference"] == "copy"
    assert parts["cost-7b-lora-iopo"]["result"]["reference"] == "adapter"
    assert parts["cost-1.5b-full-iopo-precomputed"]["result"]["reference"] == "precomputed"
    lora, full = parts["cost-7b-lora-sft"]["result"], parts["cost-1.5b-full-sft"]["result"]
    assert lora["trainable"] < lora["parameters"] and full["trainable"] == full["parameters"]

    for name in ("train-iopo-lora", "train-iopo-full", "train-iopo-fsdp"):
        r = parts[name]["result"]
        assert r["passed"] and all(r["checks"].values()), r
        assert r["loss_last5"] < r["loss_first"] - 0.2, r
        assert r["accuracy_x1_last5"] > r["accuracy_x1_first"] and r["accuracy_x2_last5"] > r["accuracy_x2_first"]
        assert r["steps"] == 40 and r["dtype"] == "bfloat16" and r["device"].startswith("cpu")  # cpu:0 under torchrun
    # the FSDP part under torchrun: on CPUs the engine cannot shard, so it takes the path data parallel
    assert parts["train-iopo-fsdp"]["result"]["strategy"] == "ddp"
    assert parts["train-iopo-fsdp"]["result"]["distributed"] == "MULTI_CPU"

    markdown = (out / "gpu-check.md").read_text()
    assert markdown in done.stdout  # the final table is printed
    assert "all parts passed" in markdown
    for part in parts.values():
        if part["kind"] == "cost":
            line = next(line for line in markdown.splitlines() if line.startswith(f"| {part['group']}: {part['method']} |"))
            assert re.search(r"\| ok \| \d+\.\d{3} \| \d+ \|", line), line
        elif part["kind"] == "train":
            assert re.search(rf"\| {re.escape(part['group'])} \| ok \| 40 \| \d\.\d{{3}} -> \d\.\d{{3}} \|", markdown)


def test_a_bad_option_is_refused():
    done = subprocess.run(["bash", str(CHECK), "--no-such-option"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "unknown option" in done.stderr


def _python_blocks(script: str) -> list[str]:
    return re.findall(r"<<'PY'\n(.*?)\nPY\n", script, flags=re.S)


def _module_file(name: str):
    path = REPO.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party modules imported, at any depth of a function, by ROOTS and the Python
    of gpu-check.sh, following imports of flows.* through the repository: {module: {importers}}."""
    sources = [(root, (REPO / root).read_text()) for root in ROOTS]
    sources += [(f"gpu-check.sh block {i}", block) for i, block in enumerate(_python_blocks(CHECK.read_text()))]
    seen, found = set(), {}
    while sources:
        where, text = sources.pop()
        if where in seen:
            continue
        seen.add(where)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("torch.utils.tensorboard"):  # imports the tensorboard distribution
                    found.setdefault("tensorboard", set()).add(where)
                top = name.split(".")[0]
                if top == "flows":
                    parts = name.split(".")
                    for i in range(1, len(parts) + 1):
                        path = _module_file(".".join(parts[:i]))
                        if path is not None:
                            sources.append((str(path.relative_to(REPO)), path.read_text()))
                elif top not in sys.stdlib_module_names and top != "__future__":
                    found.setdefault(top, set()).add(where)
    return found


def wheel_lists() -> tuple[set[str], dict[str, str]]:
    """gpu-wheels.sh's IMAGE_PACKAGES and WHEELS ({name: version}), canonical names."""
    text = WHEELS.read_text()
    image = re.search(r'^IMAGE_PACKAGES="([^"]*)"', text, flags=re.M).group(1).split()
    pins = re.search(r"^WHEELS=\((.*?)\)", text, flags=re.M | re.S).group(1).split()
    wheels = dict(pin.split("==") for pin in pins)
    return {canonicalize_name(n) for n in image}, {canonicalize_name(n): v for n, v in wheels.items()}


def test_the_wheels_cover_every_import_the_gpu_image_lacks():
    imports = third_party_imports()
    assert {"torch", "transformers", "peft", "pydantic", "yaml", "pyarrow", "tokenizers", "tensorboard"} <= set(imports)
    image, pins = wheel_lists()
    wheels = set(pins)
    assert "pydantic" in wheels and "pydantic" not in image
    distributions = metadata.packages_distributions()
    for module, importers in sorted(imports.items()):
        if module in NOT_ON_THE_GPU_CHECK:
            continue
        names = {canonicalize_name(d) for d in distributions.get(module, [module])}
        assert names & (image | wheels), f"{module} (imported by {sorted(importers)}) is neither in the GPU " \
                                         f"image nor in scripts/gpu-wheels.sh"
    # and what those wheels need in turn, for the image's Python 3.12
    environment = {"python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
                   "platform_system": "Linux", "sys_platform": "linux", "extra": ""}
    for name in wheels:
        for spec in metadata.requires(name) or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                assert canonicalize_name(requirement.name) in image | wheels, (name, spec)


def test_the_pins_are_wheels_for_the_images_python():
    text = WHEELS.read_text()
    for flag in ("--only-binary=:all:", "--python-version 3.12", "--implementation cp", "--no-deps",
                 "manylinux_2_17_x86_64", "manylinux2014_x86_64"):
        assert flag in text, flag
    assert "/.whl/" in (REPO / ".gitignore").read_text().splitlines()
    check = CHECK.read_text()
    assert "--no-index --no-deps --no-compile --no-cache-dir --upgrade" in check and "--target /tmp/site" in check
    assert "PYTHONPATH=/tmp/site:" in check
