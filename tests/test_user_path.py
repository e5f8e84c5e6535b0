"""The user's path, typed as a user types it (the CLI in a subprocess): what wins over the config
file, what a failed connection says, and the one-line mistakes (exit 2, nothing written)."""
import json
import socket
import subprocess
import threading

import pytest

from conftest import BIN, DEMO_SEEDS, REPO, prefect_api_call as api, run_cli, sim_requests, start_sim, start_worker, stop_worker
from flows.llm import simulator
from flows.llm.running import free_port


def one_error_line(result) -> str:
    """The last line of stderr, checked to be the CLI's one-line error, with no traceback."""
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("trace-build: error: "), result.stderr[-2000:]
    return line


# 1. Flags beat the config file; an endpoint given replaces the config's endpoint.

def test_a_backend_flag_replaces_the_endpoints_of_the_config_file(tmp_path):
    # configs/nightly.yaml points at http://127.0.0.1:8000/v1: the flag must win, or the run calls it
    result = run_cli("run", "--config", REPO / "configs" / "nightly.yaml", "--backend", "simulated", "--limit", 3,
                     "--seeds", DEMO_SEEDS, "--out", tmp_path / "run", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["model"] == simulator.DEFAULT_MODEL
    assert manifest["funnel"][0]["out"] == 3


def test_a_base_url_replaces_the_backend_and_its_model_of_the_config_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("llm: {backend: vllm, backend_model: Qwen/Qwen2-72B-Instruct, tensor_parallel_size: 4}\n")
    with start_sim() as sim:
        result = run_cli("run", "--config", config, "--base-url", sim.base_url, "--limit", 2, "--seeds", DEMO_SEEDS,
                         "--out", tmp_path / "run", "--quiet")
        assert result.returncode == 0, result.stderr[-2000:]
        assert sim_requests(sim) > 0


def test_an_eval_backend_flag_replaces_the_configs_model_server(tmp_path):
    config = tmp_path / "eval.yaml"
    config.write_text("model: {base_urls: ['http://127.0.0.1:9/v1'], dialect: json_object}\n")
    result = run_cli("eval", "--config", config, "--backend", "simulated", "--limit", 2, "--out", tmp_path / "ev",
                     "--quiet")
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["model"] == simulator.DEFAULT_MODEL


def test_an_option_error_names_the_option_not_the_config(tmp_path):
    result = run_cli("run", "--backend", "simulated", "--limit", 0, "--out", tmp_path / "run")
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith("trace-build: error: option: limit: ") and "(given 0)" in line, line
    assert not (tmp_path / "run").exists()


# 2. A connection that fails says how, with the URL; a run that paid nothing leaves nothing.

def silent_server():
    """Accepts connections and never answers: the client's timeout is what ends a request."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held = []
    threading.Thread(target=lambda: [held.append(sock.accept()) for _ in range(16)], daemon=True).start()
    return sock


@pytest.mark.parametrize("how", ["refused", "dns", "tls", "timeout"])
def test_a_failed_connection_says_what_happened_and_leaves_no_files(tmp_path, how):
    config = tmp_path / "c.yaml"
    config.write_text("llm: {timeout_s: 1}\n")
    if how == "refused":
        url, words = f"http://127.0.0.1:{free_port()}/v1", "connection refused"
    elif how == "dns":
        url, words = "http://no-such-host.invalid:8000/v1", "host name not found (DNS"
    elif how == "timeout":
        silent = silent_server()
        url, words = f"http://127.0.0.1:{silent.getsockname()[1]}/v1", "no answer within 1 s"
    if how == "tls":
        with start_sim() as sim:  # plain HTTP, asked for TLS
            url, words = sim.base_url.replace("http://", "https://"), "TLS handshake failed"
            result = run_cli("run", "--config", config, "--base-url", url, "--limit", 2, "--out", tmp_path / "run")
    else:
        result = run_cli("run", "--config", config, "--base-url", url, "--limit", 2, "--out", tmp_path / "run")
    assert result.returncode == 2
    line = one_error_line(result)
    assert url in line and words in line, line
    assert "timed out" not in line or how == "timeout"
    assert not (tmp_path / "run").exists()  # no run folder, no llm-cache.sqlite


@pytest.mark.parametrize("suite", ["trace", "ifeval"])
def test_an_evaluation_that_reached_no_server_leaves_no_files(tmp_path, suite):
    refused = f"http://127.0.0.1:{free_port()}/v1"
    result = run_cli("eval", "--suite", suite, "--base-url", refused, "--limit", 2, "--out", tmp_path / "ev", "--quiet")
    assert result.returncode == 2
    assert f"{refused}: connection refused" in one_error_line(result)
    assert list(tmp_path.iterdir()) == []  # no results folder, no eval-checks.sqlite beside it


# 3. A folder where a file is, or the reverse: one line naming it, exit 2, nothing written.

@pytest.mark.parametrize("command", ["run", "eval"])
def test_an_output_folder_that_is_a_file_is_one_line(tmp_path, command):
    blocker = tmp_path / "taken"
    blocker.write_text("mine\n")
    for out in (blocker, blocker / "below"):
        result = run_cli(command, "--backend", "simulated", "--limit", 2, "--out", out)
        assert result.returncode == 2
        line = one_error_line(result)
        assert "out" in line and str(out) in line and "is not a folder" in line, line
    assert blocker.read_text() == "mine\n"


def test_a_folder_where_a_file_is_needed_is_one_line(tmp_path):
    result = run_cli("eval", "--suite", "ifeval", "--responses", tmp_path, "--out", tmp_path / "ev")
    assert result.returncode == 2
    assert one_error_line(result).endswith(f"{tmp_path}: is a folder; give a file")
    result = run_cli("run", "--config", tmp_path, "--backend", "simulated")
    assert result.returncode == 2
    assert one_error_line(result).endswith(f"{tmp_path}: is a folder, not a config file")


# 8. Messages that say what to do.

def test_status_of_a_folder_that_does_not_exist_says_so(tmp_path):
    result = run_cli("status", tmp_path / "nowhere")
    assert result.returncode == 2
    assert "no such folder" in one_error_line(result)


def test_train_without_a_model_says_which_option(tmp_path):
    result = run_cli("train", "--data", tmp_path)
    assert result.returncode == 2
    assert one_error_line(result).endswith("model: required: give --model or set model: in the config file")


def test_every_option_has_help():
    import argparse

    from flows.cli import parser

    subcommands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = [f"{name} {action.option_strings[0] if action.option_strings else action.dest}"
               for name, sub in subcommands.items() for action in sub._actions
               if not action.help and action.dest != "help"]
    assert missing == []


# 1, through Prefect: the nightly deployment dry-run on the simulator, and a failed run's reason
# where `--watch` and the UI show it.

@pytest.mark.slow
def test_the_nightly_deployment_dry_runs_on_the_simulator_and_a_failure_says_why(prefect_server, tmp_path):
    env = prefect_server
    worker = start_worker(env, "user-path", tmp_path)
    try:
        dry = subprocess.run(
            [BIN / "prefect", "deployment", "run", "trace-build/nightly", "--param", "backend=simulated",
             "--param", "limit=5", "--param", f"out={tmp_path / 'nightly-dry-run'}", "--watch"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=420)
        assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-2000:]
        manifest = json.loads((tmp_path / "nightly-dry-run" / "manifest.json").read_text())
        assert manifest["model"] == simulator.DEFAULT_MODEL and manifest["funnel"][0]["out"] == 5

        refused = f"http://127.0.0.1:{free_port()}/v1"
        failed = subprocess.run(
            [BIN / "prefect", "deployment", "run", "trace-build/manual", "--param", f'base_urls=["{refused}"]',
             "--param", f"out={tmp_path / 'refused'}", "--watch"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=420)
    finally:
        stop_worker(worker)
    assert failed.returncode == 1
    watched = " ".join(failed.stdout.split())  # the watch wraps long lines
    assert f"{refused}: connection refused" in watched, failed.stdout[-3000:]
    assert "Traceback" not in failed.stdout
    run_id = next(line.split("UUID: ")[1].strip() for line in failed.stdout.splitlines() if "UUID: " in line)
    state = api(env["PREFECT_API_URL"], f"/flow_runs/{run_id}")["state"]
    assert state["type"] == "FAILED" and "\n" not in state["message"]
    assert f"{refused}: connection refused" in state["message"]
    assert not (tmp_path / "refused").exists()
