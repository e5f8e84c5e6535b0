"""A server that refuses our requests stops the run with one line, rejects no row for it, and a
rerun against a server that accepts them finishes paying each answer once. The launcher's
readiness check with an API key, as a vLLM server started with one wants."""
from __future__ import annotations

import time

import pytest
from conftest import DEMO_SEEDS, assert_accounted, run_cli, sim_requests, start_sim

from flows.llm import simulator
from flows.llm.running import BackendError, wait_until_ready


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("trace-build: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.slow
def test_a_server_that_refuses_every_request_stops_the_build_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "run"
    args = ("run", "--seeds", DEMO_SEEDS, "--limit", 12, "--out", out, "--max-in-flight", 4, "--quiet")
    with start_sim(refuse_all=400) as bad:
        done = run_cli(*args, "--base-url", bad.base_url)
        refused_requests = sim_requests(bad)
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert f"the LLM server at {bad.base_url} refused a taxonomy request: HTTP 400: Simulated refusal" in line
    assert 1 <= refused_requests <= 8  # the first answers stop it: at most what was in flight, twice over
    assert not (out / "manifest.json").exists() and not list(out.glob("stages/taxonomy/*.parquet"))

    with start_sim() as good:
        again = run_cli(*args, "--base-url", good.base_url)
        paid = sim_requests(good)
        assert again.returncode == 0, again.stderr
        assert run_cli(*args, "--base-url", good.base_url).returncode == 0 and sim_requests(good) == paid
    with start_sim() as fresh:  # the same build in a new folder pays exactly as much: nothing twice
        assert run_cli(*args[:-4], tmp_path / "fresh", *args[-3:], "--base-url", fresh.base_url).returncode == 0
        assert sim_requests(fresh) == paid
    rows = assert_accounted(out, 12)
    assert not any("bad_request" in reasons for reasons in (r.get("reasons") or {} for r in rows.values()))


@pytest.mark.slow
def test_an_unknown_model_and_a_wrong_key_stop_at_the_first_call(tmp_path):
    with start_sim() as server:
        done = run_cli("run", "--seeds", DEMO_SEEDS, "--limit", 3, "--out", tmp_path / "a", "--quiet",
                       "--base-url", server.base_url, "--model", "Qwen/Qwen2-72B-Instruct")
        assert done.returncode == 1 and sim_requests(server) <= 3
    assert "HTTP 404: The model `Qwen/Qwen2-72B-Instruct` does not exist" in one_error_line(done.stderr)

    with simulator.start(simulator.SimulatorConfig(), api_key="right-key") as server:
        done = run_cli("run", "--seeds", DEMO_SEEDS, "--limit", 3, "--out", tmp_path / "b", "--quiet",
                       "--base-url", server.base_url, env={"OPENAI_API_KEY": "wrong-key"})
        assert done.returncode == 1 and sim_requests(server) == 0
        line = one_error_line(done.stderr)
        assert "HTTP 401: Unauthorized" in line and "wrong-key" not in done.stderr + done.stdout
        ok = run_cli("run", "--seeds", DEMO_SEEDS, "--limit", 3, "--out", tmp_path / "b", "--quiet",
                     "--base-url", server.base_url, env={"OPENAI_API_KEY": "right-key"})
        assert ok.returncode == 0, ok.stderr


def test_an_evaluation_against_a_refusing_server_stops_with_one_line(tmp_path):
    with start_sim(refuse_all=403) as bad:
        done = run_cli("eval", "--suite", "ifeval", "--limit", 5, "--base-url", bad.base_url,
                       "--out", tmp_path / "ifeval", "--quiet")
    assert done.returncode == 1
    assert f"the LLM server at {bad.base_url} refused" in one_error_line(done.stderr)
    assert "HTTP 403" in done.stderr


def test_readiness_with_an_api_key_uses_health_and_fails_fast_on_a_wrong_key():
    with simulator.start(simulator.SimulatorConfig(), api_key="k-123") as server:
        assert wait_until_ready(server.base_url, 10, api_key="k-123", health="/health") == [server.model]
        started = time.monotonic()
        with pytest.raises(BackendError) as wrong:
            wait_until_ready(server.base_url, 30, api_key="nope", health="/health")
        assert "refused the API key (HTTP 401)" in str(wrong.value) and time.monotonic() - started < 5
        with pytest.raises(BackendError) as missing:
            wait_until_ready(server.base_url, 30, health="/health")
        assert "refused a request without an API key (HTTP 401)" in str(missing.value)
