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
if ! command -v apt-get >/dev/null; then
  echo "error: Chromium is missing and apt-get is not available; install Chromium and set MEDSEARCH_CHROMIUM" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  sudo=sudo
  command -v sudo >/dev/null || { echo "error: Chromium is missing; run as root: apt-get install -y chromium" >&2; exit 1; }
else
  sudo=
fi
echo "installing chromium with apt-get (one time)" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q --no-install-recommends chromium >&2 \
  || { $sudo apt-get update -q >&2 && $sudo apt-get install -y -q --no-install-recommends chromium >&2; }
[ -x /usr/bin/chromium ] || { echo "error: apt-get finished but /usr/bin/chromium is missing" >&2; exit 1; }
echo /usr/bin/chromium
