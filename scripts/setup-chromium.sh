#!/usr/bin/env bash
# Install headless Chromium (Debian package `chromium`) when it is missing: the report tests
# (tests/visibility) open the HTML reports in it, take screenshots and read the rendered page.
# Needs root and apt-get (CI has both); elsewhere it says so and those tests skip.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-chromium: chromium is not installed and this is not root with apt-get; the report-rendering tests will skip" >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
chromium --version
