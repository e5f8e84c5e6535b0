"""Every request trace-build sends is one the pinned vLLM accepts, decided by vLLM's own code.

A build (every stage, DPO and IOPO edits, rule checks) and an evaluation of every suite run
against the simulator, which records each request body as it arrived; the bodies then go
through scripts/vllm_contract.py in the vLLM contract environment (scripts/install-vllm-contract.sh,
which `make test` runs): vLLM's ChatCompletionRequest, its SamplingParams, its structured-output
validation with the fallback `vllm serve` uses (xgrammar, then llguidance) and the grammar
compiled by the backend it chose. The launcher's command goes through vLLM's own parser and
model config. No model is loaded and no GPU is used: what vLLM does after compiling a grammar
(the sampling itself) is not covered.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import DEMO_SEEDS, REPO, run_cli, start_sim
from test_cfbench_suite import write as write_cfbench
from test_complexbench_suite import write as write_complexbench

from flows.llm import vllm

pytestmark = pytest.mark.slow  # not in make test-fast: real servers, subprocesses or training runs

VENV = Path(os.environ.get("VLLM_CONTRACT_VENV", REPO / ".venv-vllm"))
NIGHTLY_SAMPLING = {"top_p": 1.0, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0}


def vllm_check(requests: list[dict], commands: list[list[str]], tmp_path: Path) -> dict:
    python = VENV / "bin" / "python"
    assert python.exists(), f"no vLLM contract environment at {VENV}: run scripts/install-vllm-contract.sh"
    todo, report = tmp_path / "contract-in.json", tmp_path / "contract-out.json"
    todo.write_text(json.dumps({"requests": requests, "commands": commands}))
    done = subprocess.run([str(python), str(REPO / "scripts" / "vllm_contract.py"), str(todo), str(report)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["vllm"] == vllm.VERSION
    return result


def bodies(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def schema_of(body: dict):
    return ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> dict[str, list[dict]]:
    """The request bodies of a build and of an evaluation of every suite, as the server got them."""
    tmp = tmp_path_factory.mktemp("contract")
    config = tmp / "build.yaml"
    config.write_text("llm:\n  top_p: 1.0\n  sampling_extra: {top_k: 0, min_p: 0.0, repetition_penalty: 1.0}\n"
                      "splits:\n  eval_size: 0\n")
    eval_config = tmp / "eval.yaml"
    eval_config.write_text("model:\n  top_p: 1.0\n  sampling_extra: {top_k: 0, min_p: 0.0, repetition_penalty: 1.0}\n")
    cf, cb = write_cfbench(tmp / "cfbench_data.json"), write_complexbench(tmp / "data_final.json")
    with start_sim(record=str(tmp / "build.jsonl")) as server:
        done = run_cli("run", "--seeds", DEMO_SEEDS, "--limit", 30, "--base-url", server.base_url,
                       "--out", tmp / "run", "--config", config, "--quiet")
        assert done.returncode == 0, done.stderr
    with start_sim(record=str(tmp / "eval.jsonl")) as server:
        done = run_cli("eval", "--suite", "all", "--cfbench-data", cf, "--complexbench-data", cb, "--sample", 4,
                       "--base-url", server.base_url, "--out", tmp / "eval", "--config", eval_config, "--quiet")
        assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp / "run" / "manifest.json").read_text())
    return {"build": bodies(tmp / "build.jsonl"), "eval": bodies(tmp / "eval.jsonl"), "manifest": manifest}


def test_every_request_of_a_build_and_of_every_suite_is_one_vllm_accepts(recorded, tmp_path):
    requests = recorded["build"] + recorded["eval"]
    schemas = {json.dumps(schema_of(b), sort_keys=True) for b in requests if schema_of(b)}
    # the build's stages, checks, grading, DPO and the three IOPO edits; each suite's judges and extractors
    assert len(recorded["build"]) > 100 and len(recorded["eval"]) > 30 and len(schemas) >= 12, len(schemas)
    edit_ops = {op for b in recorded["build"] for op in ("new_constraints", "delete", "revisions")
                if op in ((schema_of(b) or {}).get("properties") or {})}
    assert edit_ops == {"new_constraints", "delete", "revisions"}
    report = vllm_check(requests, [], tmp_path)
    refused = [(r["error"], requests[i]) for i, r in enumerate(report["requests"]) if r["status"] != "ok"]
    assert not refused, f"{len(refused)} requests vLLM {vllm.VERSION} refuses, e.g. {refused[0][0]}"
    for result, body in zip(report["requests"], requests):
        assert result["ignored"] == [] and result["deprecated"] == [], (result, sorted(body))
        assert result.get("backend") in ((None,) if schema_of(body) is None else ("xgrammar", "guidance"))
        # the sampling the request states is the sampling vLLM uses: nothing left to the server
        sampling = result["sampling"]
        assert {k: sampling[k] for k in NIGHTLY_SAMPLING} == NIGHTLY_SAMPLING
        assert sampling["temperature"] == body["temperature"] and sampling["max_tokens"] == body["max_completion_tokens"]
    # and the manifest says what each call kind sent
    assert recorded["manifest"]["sampling"]["grade"] == {"temperature": 0.0, "max_tokens": 1536, **NIGHTLY_SAMPLING}


def test_the_keywords_the_simulator_refuses_are_the_ones_vllm_refuses_with_the_same_message(tmp_path):
    def body(items: dict) -> dict:
        schema = {"type": "object", "required": ["xs"], "properties": {"xs": {"type": "array", **items}}}
        return {"model": "m", "messages": [{"role": "user", "content": "list"}], "temperature": 0.0,
                "max_completion_tokens": 64,
                "response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}}

    refused = {"uniqueItems": {"items": {"type": "string"}, "uniqueItems": True},
               "contains": {"contains": {"const": "a"}},
               "minContains": {"contains": {"const": "a"}, "minContains": 1},
               "maxContains": {"contains": {"const": "a"}, "maxContains": 2}}
    assert set(refused) == set(vllm.REFUSED_SCHEMA_KEYWORDS)
    accepted = {"items": {"type": "string", "enum": ["a", "b"]}, "minItems": 1, "maxItems": 3}
    requests = [body(items) for items in refused.values()] + [body(accepted)]
    report = vllm_check(requests, [], tmp_path)["requests"]
    for result, request in zip(report, requests[:-1]):
        keywords = vllm.refused_keywords(schema_of(request))
        assert result["status"] == "refused" and result["error"].endswith(vllm.grammar_error(keywords)), result
    assert report[-1]["status"] == "ok" and vllm.refused_keywords(schema_of(requests[-1])) == []


def test_the_launchers_command_is_one_vllm_parses_with_its_own_sampling_defaults(tmp_path):
    ours = [vllm.command("Qwen/Qwen2-72B-Instruct", tensor_parallel_size=4),
            vllm.command("Qwen/Qwen2-72B-Instruct", tensor_parallel_size=4, host="0.0.0.0", port=8001,
                         max_num_seqs=128)]
    at = ours[0].index("--generation-config")
    without_flag = ours[0][:at] + ours[0][at + 2:]
    report = vllm_check([], ours + [without_flag], tmp_path)["commands"]
    for result in report[:2]:
        assert result["status"] == "ok" and result["warnings"] == [], result
        assert result["parsed"]["generation_config"] == "vllm" and result["parsed"]["enable_prefix_caching"] is True
        assert result["parsed"]["tensor_parallel_size"] == 4 and result["parsed"]["served_model_name"] == [
            "Qwen/Qwen2-72B-Instruct"]
        assert result["model_sampling_defaults"] == {}  # what a request does not say is vLLM's neutral default
    assert report[1]["parsed"]["host"] == "0.0.0.0" and report[1]["parsed"]["max_num_seqs"] == 128
    assert report[1]["parsed"]["api_key"] is None  # the key travels in the environment, not on the command line
    # without the flag, vLLM would apply Qwen2's generation_config.json to every request
    assert report[2]["model_sampling_defaults"] == {"repetition_penalty": 1.05, "temperature": 0.7, "top_k": 20,
                                                    "top_p": 0.8}
