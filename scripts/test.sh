#!/usr/bin/env bash
# Set up .venv with the test extras and run every test. Exits non-zero on any failure.
# Arguments are passed to pytest (e.g. -k loader, --update-golden).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh test
.venv/bin/python -m pytest "$@"
