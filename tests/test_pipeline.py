"""A trace build against the simulated server: outputs, accounting, resume, faults."""
import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import DEMO_SEEDS, REPO, assert_accounted, read_rows, run_cli, sim_requests, start_sim
from flows.config import SamplingConfig
from flows.contracts import STAGES
from flows.llm import simulator
from flows.prompts import PromptLibrary

PIPELINE_SAMPLING = [f for f in SamplingConfig.model_fields if f.endswith("_temperature")]


@pytest.mark.slow
def test_demo_run_writes_everything_and_rerun_is_free(sim, tmp_path):
    out = tmp_path / "run"
    done = run_cli("run", "--seeds", DEMO_SEEDS, "--base-url", sim.base_url, "--out", out, "--quiet")
    assert done.returncode == 0, done.stderr
    rows = assert_accounted(out, 30)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["sft"]["rows"] == rows["split:sft"]["out"] > 0
    assert {f["path"] for f in manifest["files"]} >= {"splits/sft.parquet", "exports/hf/sft.parquet"}
    assert not [f for f in manifest["files"] if f["path"].startswith("stages/")]  # thousands at scale
    assert manifest["stage_files"]["respond"]["shard_files"] == len(list((out / "stages" / "respond").glob("shard-*")))
    assert manifest["stage_files"]["qc"]["rejects_files"] >= 1
    assert (out / "reports" / "taxonomy_report.md").exists()
    assert manifest["report"] == "reports/report.html" and "<svg" in (out / "reports" / "report.html").read_text()
    assert f"report:     {out / 'reports' / 'report.html'}" in done.stdout
    sft = read_rows(out / "splits" / "sft.parquet")
    assert all(s["score"] == 10 for r in sft for s in r["scores"])
    first = sft[0]
    assert first["model"] == "simulated-trace" and json.loads(first["templates"]).keys() >= {"expand", "grade"}
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    assert all(c["dimension_zh"].endswith("约束") for c in first["constraints"])
    paid = sim_requests(sim)
    assert paid > 0

    # rerun: every shard is finished, nothing is asked again
    again = run_cli("run", "--seeds", DEMO_SEEDS, "--base-url", sim.base_url, "--out", out, "--quiet")
    assert again.returncode == 0, again.stderr
    assert sim_requests(sim) == paid
    assert read_rows(out / "splits" / "sft.parquet") == sft
    # the rerun keeps the record of what the first run paid
    runs = json.loads((out / "manifest.json").read_text())["runs"]
    assert [r["requests"] for r in runs] == [paid, 0] and runs[0]["prompt_tokens"] > 0
    total = json.loads((out / "manifest.json").read_text())["usage_total"]
    assert sum(stage["requests"] for stage in total.values()) == paid
    assert "this run: 0 requests paid" in again.stdout and f"all 2 runs of this folder: {paid:,} requests" in again.stdout

    # resume with lost shard files: the request cache answers, still nothing is paid
    for stage in STAGES:
        for p in (out / "stages" / stage).glob("*.parquet"):
            p.unlink()
    third = run_cli("run", "--seeds", DEMO_SEEDS, "--base-url", sim.base_url, "--out", out, "--quiet")
    assert third.returncode == 0, third.stderr
    assert sim_requests(sim) == paid
    assert read_rows(out / "splits" / "sft.parquet") == sft


@pytest.mark.slow
def test_sigkill_mid_stage_then_resume_matches_uninterrupted(tmp_path):
    in_flight = 8
    with start_sim(latency_mean=0.05) as server:
        clean = run_cli("run", "--seeds", DEMO_SEEDS, "--base-url", server.base_url, "--out",
                        tmp_path / "clean", "--quiet", "--max-in-flight", in_flight)
        assert clean.returncode == 0, clean.stderr
        uninterrupted = sim_requests(server)
        simulator.reset(server.base_url)

        cmd = [sys.executable, "-m", "flows.cli", "run", "--seeds", str(DEMO_SEEDS), "--base-url", server.base_url,
               "--out", str(tmp_path / "killed"), "--quiet", "--max-in-flight", str(in_flight)]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while simulator.stats(server.base_url)["completed"] < uninterrupted // 2:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before_kill = sim_requests(server)
        assert 0 < before_kill < uninterrupted

        resumed = run_cli("run", "--seeds", DEMO_SEEDS, "--base-url", server.base_url, "--out",
                          tmp_path / "killed", "--quiet", "--max-in-flight", in_flight)
        assert resumed.returncode == 0, resumed.stderr
        repeated = sim_requests(server) - uninterrupted
        assert 0 <= repeated <= in_flight

    clean_sft = read_rows(tmp_path / "clean" / "splits" / "sft.parquet")
    resumed_sft = read_rows(tmp_path / "killed" / "splits" / "sft.parquet")
    assert resumed_sft == clean_sft
    assert len({r["row_id"] for r in resumed_sft}) == len(resumed_sft)
    assert_accounted(tmp_path / "killed", 30)


@pytest.mark.slow
def test_faults_are_survived_and_every_seed_accounted(tmp_path):
    config = tmp_path / "faults.yaml"
    config.write_text("llm:\n  timeout_s: 1.5\n  backoff_s: 0.05\n  max_attempts: 8\n")
    with start_sim(error_500_rate=0.20, error_429_rate=0.05, hang_rate=0.02, malformed_rate=0.05) as server:
        done = run_cli("run", "--seeds", DEMO_SEEDS, "--base-url", server.base_url, "--out", tmp_path / "run",
                       "--quiet", "--config", config)
        stats = simulator.stats(server.base_url)
    assert done.returncode == 0, done.stderr
    assert stats["by_status"]["500"] > 0 and stats["by_status"]["429"] > 0
    assert stats["hangs"] > 0 and stats["malformed"] > 0
    rows = assert_accounted(tmp_path / "run", 30)
    assert rows["split:sft"]["out"] > 0
    for stage in STAGES:  # what was lost is named, not silent (the simulator's random rewrites lose the
        # material of the seeds that have some, as a careless model would)
        assert set(rows[stage]["reasons"]) <= {
            "structuring_refused", "qc_incomplete", "qc_redundant", "unparseable_output", "schema_violation",
            "server_error", "rate_limited", "timeout", "output_too_long", "structure_empty", "material_lost"}


def test_api_key_never_reaches_output(sim, tmp_path):
    secret = "sk-test-DO-NOT-LEAK-4242"
    done = run_cli("run", "--seeds", DEMO_SEEDS, "--limit", 3, "--base-url", sim.base_url, "--out", tmp_path / "run",
                   env={"OPENAI_API_KEY": secret})
    assert done.returncode == 0, done.stderr
    assert secret not in done.stdout + done.stderr
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path



def stage_seed_ids(run_dir, stage, kind="shard") -> set[str]:
    return {r["seed_id"] for p in (run_dir / "stages" / stage).glob(f"{kind}-*.parquet") for r in read_rows(p)}


@pytest.mark.slow
def test_changed_template_reruns_only_the_calls_it_feeds(sim, tmp_path):
    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", prompts)
    config = tmp_path / "c.yaml"
    # without the preference stages, so the calls a newly passing row costs are exactly two
    config.write_text(f"prompts_dir: {prompts}\npipeline:\n  preference_data: false\n")
    out = tmp_path / "run"
    args = ("run", "--seeds", DEMO_SEEDS, "--base-url", sim.base_url, "--out", out, "--quiet", "--config", config)
    assert run_cli(*args).returncode == 0
    paid = sim_requests(sim)
    upstream = {p: p.stat().st_mtime_ns for s in ("taxonomy", "expand", "structure")
                for p in (out / "stages" / s).glob("*.parquet")}
    entered_qc = len(stage_seed_ids(out, "structure"))
    passed_before = stage_seed_ids(out, "qc")

    template = prompts / "check_completeness.j2"
    template.write_text(template.read_text().replace("strict quality checker", "very strict quality checker"))
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr

    # Stages before qc are read back, not rewritten. qc asks the changed question once per row
    # (its redundancy call is a cache hit), and only rows that newly pass qc are answered and
    # graded (2 calls each); rows that passed before get their answers from the cache.
    assert {p: p.stat().st_mtime_ns for p in upstream} == upstream
    passed_now = stage_seed_ids(out, "qc")
    assert sim_requests(sim) - paid == entered_qc + 2 * len(passed_now - passed_before)
    new_version = PromptLibrary(prompts).version("check_completeness")
    qc_rows = [r for p in (out / "stages" / "qc").glob("shard-*.parquet") for r in read_rows(p)]
    assert qc_rows and all(json.loads(r["templates"])["check_completeness"] == new_version for r in qc_rows)


@pytest.mark.slow
def test_a_changed_grade_temperature_pays_only_the_grading_calls_and_rewrites_only_the_stages_that_grade(tmp_path):
    """A stage's fingerprint holds its own calls' sampling and settings (stages/base.py), so a
    setting that only grading reads leaves the shards of the stages before respond as they are."""
    config, record = tmp_path / "c.yaml", tmp_path / "requests.jsonl"
    out = tmp_path / "run"
    with start_sim(record=str(record)) as server:
        args = ("run", "--seeds", DEMO_SEEDS, "--base-url", server.base_url, "--out", out, "--quiet", "--config", config)
        # without the preference stages: rows that newly reach full score would be paired (new calls)
        config.write_text("pipeline: {preference_data: false}\n")
        assert run_cli(*args).returncode == 0
        paid = sim_requests(server)
        shards = {p: p.stat().st_mtime_ns for p in (out / "stages").rglob("*.parquet")}
        record.unlink()

        config.write_text("pipeline: {preference_data: false, sampling: {grade_temperature: 0.3}}\n")
        again = run_cli(*args)
        assert again.returncode == 0, again.stderr
        new = [json.loads(line) for line in record.read_text().splitlines()]
        assert new and sim_requests(server) - paid == len(new)
    assert {body["temperature"] for body in new} == {0.3}  # grading calls only: every other answer is cached
    rewritten = {p.parent.name for p, mtime in shards.items() if p.stat().st_mtime_ns != mtime} - {"seeds"}  # read anew by every run
    assert rewritten == {"respond"}  # the stage that grades; taxonomy, expand, structure and qc are read back


def test_every_stage_declares_the_settings_it_reads():
    """What enters a stage's fingerprint is what it declares: a setting its code reads but does
    not declare would leave stale shards when it changes."""
    import re

    from flows.stages import default_stages

    for stage in default_stages(True):
        source = (REPO / "flows" / "stages" / f"{type(stage).__module__.rsplit('.', 1)[1]}.py").read_text()
        read = set(re.findall(r"ctx\.config\.(\w+)", source)) - {"sampling"}
        assert read <= set(stage.settings), (stage.name, read - set(stage.settings))
        assert all(kind in {f.removesuffix("_temperature") for f in PIPELINE_SAMPLING} for kind in stage.calls.values())
