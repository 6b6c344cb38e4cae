#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv with specc installed
# in editable mode. Re-installs only when pyproject.toml changed since the last run.
# Needs only Python 3.11 on the PATH (python3.11 or python3).
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  if command -v python3.11 >/dev/null 2>&1; then python_bin=python3.11; else python_bin=python3; fi
fi
"$python_bin" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"specc needs Python >= 3.11, found {sys.version.split()[0]}")
PY

extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
stamp=".venv/.specc-installed${extras:+-$extras}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch first, pinned: the local CPU wheel; a looser request pulls CUDA builds.
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
  echo "$want" > "$stamp"
fi
