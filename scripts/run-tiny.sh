#!/usr/bin/env bash
# The main job: set up .venv, then take the embedded default spec (specs/tiny.yaml)
# through the pipeline on this machine's CPU with the local executor.
# Extra arguments are passed to specc (e.g. --set schedule.steps=50).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
spec="${SPEC:-specs/tiny.yaml}"
.venv/bin/specc validate "$spec" "$@"
