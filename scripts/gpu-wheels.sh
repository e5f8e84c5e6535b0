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
# already. torch requires filelock, fsspec, jinja2, networkx, sympy, and on Python 3.12 setuptools;
# jinja2 markupsafe; transformers huggingface-hub, packaging, regex; so those are there too.
IMAGE_PACKAGES="torch transformers peft accelerate pyarrow pandas pyyaml jinja2 numpy tokenizers safetensors
tqdm httpx typing-extensions uvloop huggingface-hub fsspec filelock packaging regex networkx sympy setuptools
markupsafe"

# What it lacks, pinned (the versions the tests run with here): pydantic (flows/config.py and
# flows/train/config.py import it) and its requirements. typing-extensions is in the image, but
# pydantic 2.14 needs >= 4.16: this copy comes first on PYTHONPATH there. tensorboard (the trainer
# writes its event files through torch.utils.tensorboard) and its requirements.
WHEELS=(
  pydantic==2.14.4
  pydantic-core==2.50.5
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0
  tensorboard==2.21.0
  tensorboard-data-server==0.7.2
  grpcio==1.85.3
  protobuf==7.36.2
  markdown==3.11.3
  werkzeug==3.1.9
  absl-py==2.5.1
  pillow==13.0.0
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

# The set is closed: every requirement of these wheels, for the image's Python, is one of them or
# in the image (pip cannot be asked: the image's own packages are not here to resolve against).
IMAGE_PACKAGES="$IMAGE_PACKAGES" "$PYTHON" - "$DEST" <<'PY'
import os, re, sys, zipfile
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

env = {"python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
       "platform_system": "Linux", "sys_platform": "linux", "platform_machine": "x86_64", "extra": ""}
wheels = sorted(Path(sys.argv[1]).glob("*.whl"))
have = {canonicalize_name(n) for n in os.environ["IMAGE_PACKAGES"].split()}
have |= {canonicalize_name(w.name.split("-")[0]) for w in wheels}
missing = []
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if re.match(r"[^/]+\.dist-info/METADATA$", n))
        for line in z.read(meta).decode().splitlines():
            if line.startswith("Requires-Dist:"):
                req = Requirement(line.split(":", 1)[1].strip())
                if (req.marker is None or req.marker.evaluate(env)) and canonicalize_name(req.name) not in have:
                    missing.append(f"{wheel.name} needs {req}")
if missing:
    sys.exit("gpu-wheels: not closed: " + "; ".join(missing))
PY

ls -l "$DEST"/*.whl | awk '{printf "%8d  %s\n", $5, $NF}'
total=$(cat "$DEST"/*.whl | wc -c)
echo "$(ls "$DEST"/*.whl | wc -l) wheels, $total bytes ($(awk "BEGIN{printf \"%.2f\", $total/1048576}") MiB) in $DEST/"
if (( total > 48 * 1048576 )); then
  echo "warning: over 48 MiB; a device call carries at most 64 MiB in all" >&2
fi
