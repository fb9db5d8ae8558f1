#!/usr/bin/env bash
# Make sure a headless Chromium is available for the browser test tier (idempotent).
# Uses the distribution's package (Debian/Ubuntu `chromium`); playwright-core drives it through
# executablePath, so no browser is ever downloaded by Playwright itself.
# Prints the browser's path on success. Set MEDSEARCH_CHROMIUM to use a browser elsewhere.
set -euo pipefail
for candidate in "${MEDSEARCH_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then
    echo "$candidate"
    exit 0
  fi
done
. "$(dirname "$0")/lib/apt-install.sh"
apt_install Chromium "install Chromium and set MEDSEARCH_CHROMIUM" chromium
[ -x /usr/bin/chromium ] || { echo "error: apt-get finished but /usr/bin/chromium is missing" >&2; exit 1; }
echo /usr/bin/chromium
