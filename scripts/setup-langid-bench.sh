#!/usr/bin/env bash
# Install the Debian gettext catalogs benchmarks/langid_accuracy.py builds its multilingual set
# from. Most languages come with the base system's catalogs (coreutils, tar, apt, ...); Swahili
# prose comes only from VLC's catalog (`vlc-l10n`: translations only, no dependencies, ~43 MB of
# .mo files for 100 locales; the distribution's other `sw` files are country and month names).
# Needs root and apt-get; elsewhere it says which package to install and the benchmark lists
# Swahili as skipped.
set -euo pipefail
if [ -f /usr/share/locale/sw/LC_MESSAGES/vlc.mo ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-langid-bench: install the Debian package vlc-l10n (as root) for the benchmark's Swahili documents" >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends vlc-l10n >/dev/null
dpkg-query -W vlc-l10n
