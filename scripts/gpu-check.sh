#!/usr/bin/env bash
# The trainer on a GPU, in one command: what a training step costs per method at real model sizes,
# and a short IOPO training that must learn, as the CPU test does. Finishes within its budget
# (GPU_CHECK_BUDGET_S, default 450 s) whatever happens: every part runs under `timeout`, capped by
# the time left; a part that fails, runs out of memory or out of time is reported and the others
# still run.
#
#   bash scripts/gpu-check.sh [OUTDIR]            # on the GPU machine; OUTDIR default $OUT, else runs/gpu-check
#   bash scripts/gpu-check.sh --dry-run OUTDIR    # the same steps at tiny sizes on the CPU (tests/test_gpu_check.py)
#
# On the GPU machine (no network) it first installs .whl/*.whl, the wheels the image lacks, which
# scripts/gpu-wheels.sh downloads beforehand; from a session with a device:
#   bash scripts/gpu-wheels.sh && run(command="bash scripts/gpu-check.sh", carry=[".whl"], timeout_s=540)
#
# Parts (GPU / dry run):
#   env                  versions, the GPU, and that the trainer and the benchmark import
#   train-iopo-lora      IOPO, 40 steps on toy quadruples, tiny Qwen2 (flows/train/tiny.py), LoRA on a
#                        bf16 base, lr 5e-3 (the CPU test's 1e-2 is too coarse for bf16 logits: no learning)
#   train-iopo-full      the same with full fine-tuning (fp32 master weights, bf16 compute), lr 1e-3
#                        Passes when the mean loss of the last 5 steps is 0.2 under the first and both
#                        reward accuracies (accuracy_x1, accuracy_x2) rose by over 0.5, as in the CPU test.
#   train-iopo-fsdp      the same under torchrun with --strategy fsdp (one process: the sharded code
#                        path); also passes only if the engine reports FSDP (dry run: ddp, no check)
#   cost-1.5b-full-M     benchmarks/train_cost.py --size qwen2-1.5b --seq-len 2048, full fine-tuning,
#                        M in sft dpo iopo iopo-precomputed; 2 warmup + 5 timed steps (tiny, 64, 1 + 2)
#   cost-7b-lora-M       --size qwen2-7b --lora --gradient-checkpointing --seq-len 2048, M in sft dpo
#                        iopo iopo-precomputed; 1 warmup + 3 timed steps (tiny, 64, 1 + 2)
# Time guards on the GPU: wheel install 60 s, env 90 s, each training 90 s, each 1.5B method 75 s,
# each 7B method 120 s, every one capped by what is left of the budget less 15 s for the report
# (timeout -k 10); not yet measured in all (an estimate: about 5 minutes on an H200). Each method
# runs in its own process; ratios against SFT are taken from the SFT part of the same
# size. Writes OUTDIR/gpu-check.json, OUTDIR/gpu-check.md (also printed), parts/ and logs/.
# Exit status: 0 when every part passed, 1 otherwise (the report is written either way).
set -uo pipefail

DRY=${GPU_CHECK_DRY_RUN:-0}
DEST=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    -*) echo "gpu-check: unknown option $arg" >&2; exit 2 ;;
    *) DEST=$arg ;;
  esac
done
DEST=${DEST:-${OUT:-runs/gpu-check}}
mkdir -p "$DEST" && DEST=$(cd "$DEST" && pwd)
cd "$(dirname "$0")/.." || exit 2
REPO=$PWD
START=$EPOCHREALTIME
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
rm -f "$DEST"/parts/*.json "$DEST"/parts/*.jsonl "$DEST"/logs/*.log "$DEST/gpu-check.json" "$DEST/gpu-check.md"
mkdir -p "$DEST/parts" "$DEST/logs"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [[ $DRY == 1 ]]; then
  MODE=dry-run
  PY=${PYTHON:-$REPO/.venv/bin/python}
  BUDGET=${GPU_CHECK_BUDGET_S:-300}
  DEVICE=cpu
  export PYTHONPATH=$REPO
  SIZE_FULL=tiny; SIZE_LORA=tiny; SEQ=64; FSDP=ddp
  STEPS_FULL=(--steps 2 --warmup 1); STEPS_LORA=(--steps 2 --warmup 1)
  LIMIT_FULL=120; LIMIT_LORA=120; LIMIT_TRAIN=120
else
  MODE=gpu
  PY=${PYTHON:-python3}
  if ! "$PY" -c "import torch" 2>/dev/null && [[ -x /opt/torch/.venv/bin/python3 ]]; then
    PY=/opt/torch/.venv/bin/python3  # the image's
  fi
  BUDGET=${GPU_CHECK_BUDGET_S:-450}
  DEVICE=cuda
  SIZE_FULL=qwen2-1.5b; SIZE_LORA=qwen2-7b; SEQ=2048; FSDP=fsdp
  STEPS_FULL=(--steps 5 --warmup 2); STEPS_LORA=(--steps 3 --warmup 1)
  LIMIT_FULL=75; LIMIT_LORA=120; LIMIT_TRAIN=90
  # the wheels the image lacks (scripts/gpu-wheels.sh), on the path before the image's packages
  if compgen -G ".whl/*.whl" >/dev/null; then
    echo "installing $(ls .whl/*.whl | wc -l) wheels, $(cat .whl/*.whl | wc -c) bytes: $(cd .whl && ls *.whl | tr '\n' ' ')"
    if ! timeout 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
         --target /tmp/site .whl/*.whl >"$DEST/logs/wheels.log" 2>&1; then
      echo "pip install failed (logs/wheels.log); unpacking the wheels into /tmp/site instead"
      for wheel in .whl/*.whl; do "$PY" -m zipfile -e "$wheel" /tmp/site >>"$DEST/logs/wheels.log" 2>&1; done
    fi
    export PYTHONPATH=/tmp/site:$REPO
  else
    echo "no .whl/*.whl (run scripts/gpu-wheels.sh and carry .whl); going on with the image's packages"
    export PYTHONPATH=$REPO
  fi
fi
RESERVE=15  # seconds kept for the report
echo "gpu-check $MODE: budget ${BUDGET}s, python $PY, out $DEST"

# ---- the Python the parts run (tests/test_gpu_check.py reads these blocks for their imports) ----
cat >"$WORK/env_probe.py" <<'PY'
"""Versions, the device, and that the trainer and the benchmark import (pydantic included)."""
import importlib.util
import json
import platform
import sys
from importlib import metadata

import torch

out = {"python": platform.python_version(), "executable": sys.executable}
for dist in ("torch", "transformers", "peft", "accelerate", "pydantic", "pydantic-core", "typing-extensions"):
    try:
        out[dist] = metadata.version(dist)
    except metadata.PackageNotFoundError:
        out[dist] = None
out["cuda_available"] = torch.cuda.is_available()
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    out |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}", "bf16": torch.cuda.is_bf16_supported(),
            "cuda": torch.version.cuda}
import flows.train.run  # noqa: E402,F401 -- pydantic, pyarrow, yaml through flows.config
import flows.train.tiny  # noqa: E402,F401
import peft  # noqa: E402,F401
import pydantic  # noqa: E402

out["pydantic_from"] = pydantic.__file__
spec = importlib.util.spec_from_file_location("train_cost", "benchmarks/train_cost.py")
spec.loader.exec_module(importlib.util.module_from_spec(spec))  # its imports; main() is not run
json.dump(out, open(sys.argv[1], "w"), indent=2)
print(json.dumps(out))
PY

cat >"$WORK/mini_train.py" <<'PY'
"""A short IOPO training through flows.train.run.train on toy quadruples (as tests/conftest.py's
toy_quadruples: x1 asks for word a, x2 for word b; y1 = "a a", y2 = "b b") with the tiny Qwen2 of
flows/train/tiny.py: the loss must fall and both reward accuracies rise, as in the CPU test."""
import argparse
import json
import sys
from pathlib import Path

from flows.train.config import TrainConfig
from flows.train.run import train
from flows.train.tiny import save_tiny

WORDS = ["apple", "river", "stone", "cloud", "green", "seven", "music", "paper"]

p = argparse.ArgumentParser()
p.add_argument("--work", type=Path, required=True)
p.add_argument("--json", type=Path, required=True)
p.add_argument("--device", default="auto")
p.add_argument("--dtype", default="bf16")
p.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
p.add_argument("--steps", type=int, default=40)
p.add_argument("--lr", type=float, default=5e-3)
p.add_argument("--strategy", default="ddp", help="fsdp: run under torchrun, the engine must report FSDP")
args = p.parse_args()

rows = []
for i, a in enumerate(WORDS):
    b = WORDS[(i + 3) % len(WORDS)]
    rows.append({"conversations": [{"from": "human", "value": f"Write one word. 1. Use the word {a};"},
                                   {"from": "human", "value": f"Write one word. 1. Use the word {b};"}],
                 "chosen": {"from": "gpt", "value": f"{a} {a}"}, "rejected": {"from": "gpt", "value": f"{b} {b}"}})
args.work.mkdir(parents=True, exist_ok=True)
data = args.work / "toy_iopo.json"
data.write_text(json.dumps(rows), encoding="utf-8")
model = save_tiny(args.work / "model", [json.dumps(r) for r in rows] + ["You are a helpful assistant. 你好，世界。"])
cfg = TrainConfig(method="iopo", model=str(model), data=str(data), out=str(args.work / "run"), max_length=128,
                  device=args.device, dtype=args.dtype, lora=not args.full, max_steps=args.steps, micro_batch=4,
                  learning_rate=args.lr, warmup_ratio=0.0, strategy=args.strategy)
report = train(cfg)
history = [json.loads(line) for line in (args.work / "run" / "metrics.jsonl").read_text().splitlines()]
first, late = history[0], history[-5:]


def late_mean(key):
    return sum(r[key] for r in late) / len(late)


result = {"method": "iopo", "tuning": "full" if args.full else "lora", "model": "tiny qwen2 (flows/train/tiny.py)",
          "strategy": args.strategy, "distributed": report["distributed"],
          "examples": report["examples"], "steps": report["steps"], "seconds": report["seconds"],
          "device": report["device"], "dtype": report["dtype"], "reference": report["reference"],
          "learning_rate": args.lr, "tokens_per_s_last": history[-1]["tokens_per_s"],
          "peak_mem_gb": history[-1].get("peak_mem_gb")}
for key in ("loss", "accuracy_x1", "accuracy_x2", "margin_x1", "margin_x2"):
    result[f"{key}_first"], result[f"{key}_last5"] = first[key], late_mean(key)
result["checks"] = {
    "loss_fell": late_mean("loss") < first["loss"] - 0.2,
    "accuracy_x1_rose": late_mean("accuracy_x1") > first["accuracy_x1"] + 0.5,
    "accuracy_x2_rose": late_mean("accuracy_x2") > first["accuracy_x2"] + 0.5,
}
if args.strategy == "fsdp":  # accelerate runs what it can: make sure it was sharded training
    result["checks"]["engine_ran_fsdp"] = report["distributed"] == "FSDP"
result["passed"] = all(result["checks"].values())
result["losses"] = [round(r["loss"], 4) for r in history]
args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
print(json.dumps({k: v for k, v in result.items() if k != "losses"}))
sys.exit(0 if result["passed"] else 3)
PY

cat >"$WORK/report.py" <<'PY'
"""Parts' status and results -> gpu-check.json and gpu-check.md (printed). No torch here."""
import json
import sys
from pathlib import Path

dest, mode, budget, elapsed = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
PAPER = {"sft": {"memory": 1.0, "time": 1.0}, "dpo": {"memory": 2.0, "time": 1.8},
         "iopo": {"memory": 4.0, "time": 2.4}}  # as benchmarks/train_cost.py; replaced by what it wrote
parts = []
for status_file in sorted((dest / "parts").glob("*.status.json"), key=lambda f: json.loads(f.read_text())["order"]):
    part = json.loads(status_file.read_text())
    result_file = dest / "parts" / f"{part['name']}.json"
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    log = dest / "logs" / f"{part['name']}.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    tail = [line for line in text.splitlines() if line.strip()][-3:]
    if part["rc"] is None:
        status = "skipped"
    elif part["rc"] in (124, 137):
        status = "timeout"
    elif "OutOfMemoryError" in text or "CUDA out of memory" in text:
        status = "oom"
    elif part["rc"] != 0 or result is None:
        status = "failed"
    else:
        status = "ok"
    if part["kind"] == "cost" and result is not None:
        PAPER = result.get("paper", PAPER)
        row = result["results"][0]
        part["result"] = {k: row.get(k) for k in ("seconds_per_step", "tokens_per_s", "peak_memory_gib", "sequences",
                                                  "rows", "reference", "parameters", "trainable", "loss")}
        part["result"]["device"], part["result"]["dtype"] = result.get("device"), result.get("dtype")
        if row.get("oom"):
            status = "oom"
    elif result is not None:
        part["result"] = result
        if part["kind"] == "train" and status == "ok" and not result.get("passed"):
            status = "failed"
    if status != "ok":
        part["log_tail"] = tail
    part["status"] = status
    parts.append(part)

# Ratios against SFT of the same group, beside the paper's.
for part in parts:
    if part["kind"] != "cost":
        continue
    r = part.get("result") or {}
    sft = next((p.get("result") for p in parts if p["kind"] == "cost" and p["group"] == part["group"]
                and p["method"] == "sft" and p["status"] == "ok"), None)
    ok = part["status"] == "ok" and sft is not None
    part["time_ratio"] = r["seconds_per_step"] / sft["seconds_per_step"] if ok else None
    part["memory_ratio"] = (r["peak_memory_gib"] / sft["peak_memory_gib"]
                            if ok and r.get("peak_memory_gib") and sft.get("peak_memory_gib") else None)
    paper = PAPER.get(part["method"], {})
    part["paper_time_ratio"], part["paper_memory_ratio"] = paper.get("time"), paper.get("memory")

env = next((p.get("result") for p in parts if p["name"] == "env"), None) or {}
report = {"mode": mode, "ok": all(p["status"] == "ok" for p in parts), "seconds": round(elapsed, 1),
          "budget_s": budget, "environment": env, "paper": PAPER, "parts": parts}
(dest / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def fmt(value, spec, none="n/a"):
    return none if value is None else format(value, spec)


device = env.get("gpu") or ("cpu" if env else "unknown device")
lines = [f"## GPU check ({mode}): {'all parts passed' if report['ok'] else 'NOT all parts passed'}", "",
         f"{device}; python {env.get('python')}, torch {env.get('torch')}, transformers {env.get('transformers')}, "
         f"peft {env.get('peft')}, pydantic {env.get('pydantic')}; {report['seconds']} s of a {budget:g} s budget.", "",
         "| training step cost | status | s/step | tokens/s | peak GiB | time x SFT (paper) | memory x SFT (paper) |",
         "|---|---|---|---|---|---|---|"]
for p in parts:
    if p["kind"] != "cost":
        continue
    r = p.get("result") or {}
    lines.append(f"| {p['group']}: {p['method']} | {p['status']} | {fmt(r.get('seconds_per_step'), '.3f', '-')} "
                 f"| {fmt(r.get('tokens_per_s'), '.0f', '-')} | {fmt(r.get('peak_memory_gib'), '.2f')} "
                 f"| {fmt(p['time_ratio'], '.2f', '-')} ({fmt(p['paper_time_ratio'], 'g', '-')}) "
                 f"| {fmt(p['memory_ratio'], '.2f', '-')} ({fmt(p['paper_memory_ratio'], 'g', '-')}) |")
lines += ["", "| IOPO mini-training | status | steps | loss first -> last 5 | accuracy_x1 | accuracy_x2 "
          "| s | tokens/s | peak GiB |", "|---|---|---|---|---|---|---|---|---|"]
for p in parts:
    if p["kind"] != "train":
        continue
    r = p.get("result") or {}

    def arrow(key):
        return (f"{r[key + '_first']:.3f} -> {r[key + '_last5']:.3f}" if key + "_first" in r else "-")
    lines.append(f"| {p['group']} | {p['status']} | {r.get('steps', '-')} | {arrow('loss')} | {arrow('accuracy_x1')} "
                 f"| {arrow('accuracy_x2')} | {r.get('seconds', '-')} | {fmt(r.get('tokens_per_s_last'), '.0f', '-')} "
                 f"| {fmt(r.get('peak_mem_gb'), '.2f')} |")
failed = [p for p in parts if p["status"] != "ok"]
if failed:
    lines += ["", "Not ok:"]
    lines += [f"- {p['name']}: {p['status']} (rc {p['rc']}, {p['seconds']} s of {p['limit_s']} s): "
              + " / ".join(p.get("log_tail", []))[-400:] for p in failed]
markdown = "\n".join(lines) + "\n"
(dest / "gpu-check.md").write_text(markdown, encoding="utf-8")
print(markdown)
sys.exit(0 if report["ok"] else 1)
PY

# ---- the parts ----
ORDER=0
elapsed() { awk -v a="$START" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b - a}'; }

# run_part NAME KIND GROUP METHOD LIMIT_S COMMAND...: COMMAND under timeout, capped by the time left
run_part() {
  local name=$1 kind=$2 group=$3 method=$4 limit=$5 rc t0 seconds left
  shift 5
  ORDER=$((ORDER + 1))
  left=$(awk -v e="$(elapsed)" -v b="$BUDGET" -v r="$RESERVE" 'BEGIN{printf "%d", b - r - e}')
  if (( left < 10 )); then
    rc=null seconds=0 limit=0
    echo "-- $name: skipped, no time left"
  else
    (( limit > left )) && limit=$left
    echo "-- $name (at $(elapsed) s, limit $limit s)"
    t0=$EPOCHREALTIME
    timeout -k 10 "$limit" "$@" >"$DEST/logs/$name.log" 2>&1
    rc=$?
    seconds=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b - a}')
    echo "   rc $rc in $seconds s: $(grep -v '^\s*$' "$DEST/logs/$name.log" | tail -n 1 | cut -c1-200)"
  fi
  printf '{"order": %d, "name": "%s", "kind": "%s", "group": "%s", "method": "%s", "rc": %s, "limit_s": %d, "seconds": %s}\n' \
    "$ORDER" "$name" "$kind" "$group" "$method" "$rc" "$limit" "$seconds" >"$DEST/parts/$name.status.json"
}

run_part env env environment - 90 "$PY" "$WORK/env_probe.py" "$DEST/parts/env.json"

run_part train-iopo-lora train "LoRA, bf16, tiny qwen2" iopo "$LIMIT_TRAIN" \
  "$PY" "$WORK/mini_train.py" --work "$WORK/train-lora" --json "$DEST/parts/train-iopo-lora.json" \
  --device "$DEVICE" --dtype bf16 --steps 40 --lr 5e-3
run_part train-iopo-full train "full, fp32 master + bf16, tiny qwen2" iopo "$LIMIT_TRAIN" \
  "$PY" "$WORK/mini_train.py" --work "$WORK/train-full" --json "$DEST/parts/train-iopo-full.json" \
  --device "$DEVICE" --dtype bf16 --full --steps 40 --lr 1e-3

# FSDP (full shard, one process: the sharded code path, its wrapping, gathering and saving) under
# torchrun as `trace-build train --strategy fsdp` starts it; the dry run cannot shard on CPUs (the
# engine refuses it), so there it takes the same path data parallel.
run_part train-iopo-fsdp train "FSDP full shard, bf16, tiny qwen2, torchrun" iopo "$LIMIT_TRAIN" \
  "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 "$WORK/mini_train.py" --work "$WORK/train-fsdp" \
  --json "$DEST/parts/train-iopo-fsdp.json" --device "$DEVICE" --dtype bf16 --full --steps 40 --lr 1e-3 \
  --strategy "$FSDP"

for method in sft dpo iopo iopo-precomputed; do
  run_part "cost-1.5b-full-$method" cost "$SIZE_FULL full $SEQ" "$method" "$LIMIT_FULL" \
    "$PY" benchmarks/train_cost.py --size "$SIZE_FULL" --seq-len "$SEQ" --full "${STEPS_FULL[@]}" \
    --methods "$method" --device "$DEVICE" --dtype bf16 --json "$DEST/parts/cost-1.5b-full-$method.json"
done
for method in sft dpo iopo iopo-precomputed; do
  run_part "cost-7b-lora-$method" cost "$SIZE_LORA LoRA+GC $SEQ" "$method" "$LIMIT_LORA" \
    "$PY" benchmarks/train_cost.py --size "$SIZE_LORA" --seq-len "$SEQ" --lora --gradient-checkpointing \
    "${STEPS_LORA[@]}" --methods "$method" --device "$DEVICE" --dtype bf16 \
    --json "$DEST/parts/cost-7b-lora-$method.json"
done

"$PY" "$WORK/report.py" "$DEST" "$MODE" "$BUDGET" "$(elapsed)"
