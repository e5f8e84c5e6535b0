#!/usr/bin/env bash
# Downloads, here (the GPU machine has no network), the wheels that the trainer (flows/train) and
# benchmarks/train_cost.py import but the GPU machine's image lacks, into .whl/ (ignored by git),
# for the image's CPython 3.12 on manylinux x86_64. scripts/gpu-check.sh installs them there
# offline; the device call carries the folder:  run(command="bash scripts/gpu-check.sh", carry=[".whl"])
#
#   bash scripts/gpu-wheels.sh          # -> .whl/*.whl, their names and total size
#
# tests/test_gpu_check.py checks, statically, that every third-party module those files import
# (through flows/, transitively) is in IMAGE_PACKAGES or WHEELS, and that every requirement of a
# wheel is too.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEST=.whl

# The GPU image (Python 3.12.3, /opt/torch/.venv/bin/python3), distribution names: what it holds
# already. torch requires filelock, fsspec, jinja2, networkx, sympy; transformers huggingface-hub,
# packaging, regex; so those are there too.
IMAGE_PACKAGES="torch transformers peft accelerate pyarrow pandas pyyaml jinja2 numpy tokenizers safetensors
tqdm httpx typing-extensions uvloop huggingface-hub fsspec filelock packaging regex networkx sympy"

# What it lacks, pinned (the versions the tests run with here): pydantic (flows/config.py and
# flows/train/config.py import it) and its requirements. typing-extensions is in the image, but
# pydantic 2.14 needs >= 4.16: this copy comes first on PYTHONPATH there.
WHEELS=(
  pydantic==2.14.4
  pydantic-core==2.50.5
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0
)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
           manylinux1_x86_64 any)

mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # exactly the list, nothing left from an earlier pin
platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
target_args=(--only-binary=:all: --python-version 3.12 --implementation cp "${platform_args[@]}")
for wheel in "${WHEELS[@]}"; do
  "$PYTHON" -m pip download --quiet --no-deps "${target_args[@]}" -d "$DEST" "$wheel"
done

# The set is closed: pip resolves pydantic for the image's Python from these files alone.
check=$(mktemp -d)
trap 'rm -rf "$check"' EXIT
"$PYTHON" -m pip install --quiet --dry-run --no-index --find-links "$DEST" --target "$check" \
  "${target_args[@]}" "${WHEELS[@]}"

ls -l "$DEST"/*.whl | awk '{printf "%8d  %s\n", $5, $NF}'
total=$(cat "$DEST"/*.whl | wc -c)
echo "$(ls "$DEST"/*.whl | wc -l) wheels, $total bytes ($(awk "BEGIN{printf \"%.2f\", $total/1048576}") MiB) in $DEST/"
if (( total > 48 * 1048576 )); then
  echo "warning: over 48 MiB; a device call carries at most 64 MiB in all" >&2
fi
