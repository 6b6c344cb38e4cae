#!/usr/bin/env bash
# Create (or refresh) .venv-tpu: the environment of the TPU path (torch-xla SPMD), with
# specc installed in editable mode. torch-xla 2.9.0 is built against torch 2.9.0 and
# cannot share the main environment (torch 2.13.0), so it lives beside it. On a CPU-only
# machine the same environment runs the TPU path on XLA's CPU backend
# (PJRT_DEVICE=CPU CPU_NUM_DEVICES=4); on a TPU VM with PJRT_DEVICE=TPU.
# The torch 2.9.0 wheel on the registry is a CUDA build: expect ~4 GB of downloads and
# ~7 GB on disk, a few minutes. Skipped when the stamp matches the pinned requirements.
# Needs Python 3.11 (the torch-xla wheels are cp311): python3.11, python3 or $PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=(
  "torch==2.9.0"
  "torch-xla==2.9.0"
  "numpy>=1.26"
  "pydantic>=2.9,<3"
  "PyYAML>=6.0"
  "safetensors>=0.4"
  "requests"   # imported by torch-xla
  "absl-py"    # imported by torch-xla
  "tensorboard==2.21.0"  # the trainer's TensorBoard event files (spec `tracking:`)
)
venv=.venv-tpu
stamp="$venv/.specc-tpu-installed"
want="$(printf '%s\n' "${requirements[@]}" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  if command -v python3.11 >/dev/null 2>&1; then python_bin=python3.11; else python_bin=python3; fi
fi
"$python_bin" - <<'PY'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f"the TPU environment needs Python 3.11 (torch-xla 2.9.0 ships cp311 wheels), found {sys.version.split()[0]}")
PY

if [ ! -x "$venv/bin/python" ]; then
  "$python_bin" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "${requirements[@]}"
# specc itself without its dependencies: they pin torch 2.13.0, which torch-xla cannot load.
"$venv/bin/python" -m pip install --quiet --no-deps -e .
echo "$want" > "$stamp"
