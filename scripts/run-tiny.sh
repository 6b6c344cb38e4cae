#!/usr/bin/env bash
# The main job: set up .venv, then take the embedded default spec (specs/tiny.yaml)
# through the pipeline on this machine's CPU with the local executor.
# Extra arguments are passed to `specc launch` (e.g. --set schedule.steps=50, --out DIR).
# `specc launch` validates and plans first, emits the bundle under bundles/, then runs each
# stage; a rerun skips the stages already finished for the same settings.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
spec="${SPEC:-specs/tiny.yaml}"
.venv/bin/specc launch "$spec" --executor local "$@"
