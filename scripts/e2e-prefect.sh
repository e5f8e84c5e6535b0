#!/usr/bin/env bash
# End to end with the real components a user runs: a Prefect server on a free port with its own
# PREFECT_HOME, the work pool, `prefect deploy --all`, a worker, and
# `prefect deployment run trace-build/manual --watch` (simulated LLM, a few seeds) with the training
# trigger on; a worker on the gpu pool trains a tiny model (built in code) on the CPU. Then the
# flow run's state and artifacts, and the iopo-train/gpu run it started with its manifest (state,
# artifacts, report) with the evaluation it starts when done (trace-eval subflow runs on the trained
# model and its base, the simulator serving; a table-3 artifact), are checked through the API; the
# Prefect UI is opened on that run in headless Chromium: the page must show it Completed, and the screenshot is kept
# under runs/e2e/; last, trace-eval/manual evaluates 3 official rows. Everything started here is
# stopped by PID on the way out.
#
#   scripts/e2e-prefect.sh            (the project venv in .venv; chromium from Debian)
set -euo pipefail
set -m  # job control: background jobs keep SIGINT, so the Prefect worker stops on SIGTERM

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${VENV:-$ROOT/.venv}/bin"
OUT="$ROOT/runs/e2e"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/trace-e2e.XXXXXX")"
PORT="$("$BIN/python" -c 'from flows.llm.running import free_port; print(free_port())')"
export PREFECT_HOME="$WORK/prefect" PREFECT_API_URL="http://127.0.0.1:$PORT/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 PREFECT_SERVER_EPHEMERAL_ENABLED=false
export PREFECT_CLI_PROMPT=false PREFECT_WORKER_QUERY_SECONDS=1 COLUMNS=200
mkdir -p "$PREFECT_HOME" "$OUT"
SERVER_PID="" WORKER_PID="" GPU_WORKER_PID=""
say() { printf '[e2e %3ss] %s\n' "$SECONDS" "$*"; }

stop() {
  local pid=$1; [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -TERM "$pid" 2>/dev/null; sleep 1; kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  stop "$GPU_WORKER_PID"; stop "$WORKER_PID"; stop "$SERVER_PID"
  if [ "$rc" != 0 ]; then tail -n 40 "$WORK"/*.log 2>/dev/null || true; fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

if ! command -v chromium >/dev/null; then
  say "installing Debian's chromium for the UI check"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >"$WORK/apt.log" 2>&1
fi

"$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 120); do curl -fsS "$PREFECT_API_URL/health" >/dev/null 2>&1 && break; sleep 0.5; done
curl -fsS "$PREFECT_API_URL/health" >/dev/null
say "server healthy on 127.0.0.1:$PORT"

"$BIN/prefect" work-pool create local --type process --overwrite >/dev/null
"$BIN/prefect" work-pool create gpu --type process --overwrite >/dev/null  # no worker: the training run waits
"$BIN/prefect" deploy --all --no-prompt >"$WORK/deploy.log" 2>&1
say "deployed: $(grep -o "'[a-z-]*/[a-z-]*'" "$WORK/deploy.log" | sort -u | tr '\n' ' ')"

PATH="$BIN:$PATH" "$BIN/prefect" worker start --pool local >"$WORK/worker.log" 2>&1 &
WORKER_PID=$!
# A worker on the gpu pool too: here it trains a tiny model built in code on the CPU.
PATH="$BIN:$PATH" "$BIN/prefect" worker start --pool gpu >"$WORK/worker-gpu.log" 2>&1 &
GPU_WORKER_PID=$!
"$BIN/python" -c "import sys; from flows.train.tiny import save_tiny; save_tiny(sys.argv[1], ['Write a note.'])" \
  "$WORK/tiny-model" >/dev/null 2>&1
rm -rf "$OUT/train"  # a training run of an earlier e2e would be finished already, its evaluation done
cat >"$WORK/build.yaml" <<YAML
training:
  parameters:
    {model: "$WORK/tiny-model", max_steps: 2, max_length: 256, device: cpu, out: "$OUT/train",
     evaluate_after: {serve: simulated, limit: 2, base_results: "$WORK/eval-base"}}
YAML

# The build starts the training deployment at its end (sft: 4 seeds give too few IOPO rows).
"$BIN/prefect" deployment run trace-build/manual --param limit=4 --param "out=$OUT/run" \
  --param trigger_training=true --param training_method=sft --param "config=$WORK/build.yaml" \
  --watch --watch-interval 1 --watch-timeout 300 >"$WORK/run.log" 2>&1
FLOW_RUN_ID="$(grep -oE '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' "$WORK/run.log" | head -1)"
say "flow run $FLOW_RUN_ID completed"

"$BIN/python" - "$FLOW_RUN_ID" "$OUT/run" <<'PY'
import asyncio, json, sys
from pathlib import Path
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

async def main(flow_run_id, run_dir):
    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        assert run.state.is_completed(), run.state
        arts = await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        keys = {a.key for a in arts}
        assert {"trace-build-funnel", "trace-build-summary"} <= keys, keys
        # the training trigger: a run of iopo-train/gpu with this build's manifest, recorded in it
        manifest_path = Path(run_dir).resolve() / "manifest.json"
        training = json.loads(manifest_path.read_text())["training"]
        train_run = await client.read_flow_run(training["flow_run_id"])
        deployment = await client.read_deployment(train_run.deployment_id)
        flow = await client.read_flow(deployment.flow_id)
        assert f"{flow.name}/{deployment.name}" == "iopo-train/gpu", (flow.name, deployment.name)
        assert train_run.parameters["manifest"] == str(manifest_path), train_run.parameters
        assert train_run.parameters["method"] == "sft"
        summary = next(a for a in arts if a.key == "trace-build-summary")
        assert training["flow_run_id"] in summary.data, summary.data
        for _ in range(600):  # the gpu worker picks it up, trains the tiny model, evaluates it and its base
            train_run = await client.read_flow_run(train_run.id)
            if train_run.state.is_final():
                break
            await asyncio.sleep(0.5)
        assert train_run.state.is_completed(), train_run.state
        train_artifacts = {a.key: a for a in await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[train_run.id])))}
        train_keys = set(train_artifacts)
        assert {"iopo-train-progress", "iopo-train-metrics", "iopo-train-summary", "table-3"} <= train_keys, train_keys
        # the loop closed: trace-eval as subflow runs on the trained model and on its base
        evals = [r for r in await client.read_flow_runs() if r.parent_task_run_id
                 and (await client.read_task_run(r.parent_task_run_id)).flow_run_id == train_run.id]
        assert sorted((r.parameters["backend_model"], r.state.type.value) for r in evals) == sorted(
            [(str(Path(run_dir).parent / "train" / "merged"), "COMPLETED"),
             (train_run.parameters["overrides"]["model"], "COMPLETED")]), evals
        rows = [line for line in train_artifacts["table-3"].data.splitlines() if line.startswith("| ")][1:]
        assert [row.split(" | ")[0] for row in rows] == [
            "| `sft` on `tiny-model` (this run)", "| `tiny-model` (base)", "| Qwen2-7B IOPO (the IOPO paper)"], rows
    report = json.loads((Path(run_dir).parent / "train" / "train_report.json").read_text())
    assert report["method"] == "sft" and report["steps"] == 2, report
    print(f"state {run.state.type.value}, artifacts {sorted(k for k in keys if k)}; "
          f"training run {train_run.name} of iopo-train/gpu on the manifest: {train_run.state.type.value}, "
          f"{report['steps']} steps, artifacts {sorted(train_keys)}; Table 3 of the trained model and its base "
          f"from {len(evals)} trace-eval subflow runs")

asyncio.run(main(*sys.argv[1:]))
PY

URL="http://127.0.0.1:$PORT/runs/flow-run/$FLOW_RUN_ID"
CHROME=(chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
        --disable-background-networking --disable-component-update --disable-sync
        --user-data-dir="$WORK/chrome" --hide-scrollbars --window-size=1400,900 --virtual-time-budget=20000)
"${CHROME[@]}" --dump-dom "$URL" >"$WORK/page.html" 2>"$WORK/chrome.log"
grep -q "Completed" "$WORK/page.html" || { echo "the UI page of $URL does not show Completed" >&2; exit 1; }
"${CHROME[@]}" --screenshot="$OUT/flow-run.png" "$URL" 2>>"$WORK/chrome.log"
[ -s "$OUT/flow-run.png" ]
say "UI shows the run Completed; screenshot $OUT/flow-run.png"

# The run report page the build wrote, opened from disk (file://) in the same browser: every
# section heading and inline SVG charts in the DOM, and a screenshot of it.
[ -s "$OUT/run/reports/report.html" ] || { echo "the build wrote no $OUT/run/reports/report.html" >&2; exit 1; }
REPORT_URL="file://$OUT/run/reports/report.html"
"${CHROME[@]}" --dump-dom "$REPORT_URL" >"$WORK/report.html" 2>>"$WORK/chrome.log"
for heading in Run Funnel "Constraints per instruction" "Dimension mix" "Judge scores per dimension" \
               "Rule checks vs judge" "Preference data acceptance" Examples; do
  grep -q "<h2>$heading</h2>" "$WORK/report.html" || { echo "$REPORT_URL has no section '$heading'" >&2; exit 1; }
done
grep -q "<svg" "$WORK/report.html" || { echo "$REPORT_URL has no chart" >&2; exit 1; }
"${CHROME[@]}" --window-size=1100,3000 --screenshot="$OUT/report.png" "$REPORT_URL" 2>>"$WORK/chrome.log"
[ -s "$OUT/report.png" ]
say "report page $REPORT_URL: every section, $(grep -o '<svg' "$WORK/report.html" | wc -l) charts; screenshot $OUT/report.png"

# The evaluation deployment: a few official rows, the simulated LLM as model and judge.
"$BIN/prefect" deployment run trace-eval/manual --param limit=3 --param "out=$OUT/eval" \
  --watch --watch-interval 1 --watch-timeout 300 >"$WORK/eval.log" 2>&1
"$BIN/python" -c "
import json, sys
r = json.load(open(sys.argv[1]))
assert r['rows'] == 3 and r['scored'] + sum(r['failures'].values()) >= 3, r
print('trace-eval/manual: IF-S', r['if_s']['strict'], 'IF-M', r['if_m']['strict'])" "$OUT/eval/results.json"
say "trace-eval/manual completed"
echo "e2e: 1 passed, 0 failed"
