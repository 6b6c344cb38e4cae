#!/usr/bin/env bash
# Set up .venv with the test extras (and .venv-tpu) and run every test. Exits non-zero on any failure.
# Arguments are passed to pytest (e.g. -k loader, --update-golden, or -m "not slow" for the fast tier).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh test
# The TPU path's tests run torch-xla in its own environment (.venv-tpu, ~7 GB the first time);
# SPECC_SKIP_TPU=1 skips creating it, and those tests then skip unless it already exists.
# The fast tier (`-m "not slow"`) has no TPU-venv test, so it does not create it either.
fast_tier=0
previous=""
for argument in "$@"; do
  if [ "$previous" = "-m" ] && [ "$argument" = "not slow" ]; then fast_tier=1; fi
  previous="$argument"
done
if [ "${SPECC_SKIP_TPU:-0}" != 1 ] && [ "$fast_tier" != 1 ]; then
  scripts/setup-tpu-venv.sh
fi
# headless Chromium for the report tests (slow tier: they open the HTML reports and take screenshots)
if [ "$fast_tier" != 1 ]; then
  scripts/setup-chromium.sh
fi
.venv/bin/python -m pytest "$@"
