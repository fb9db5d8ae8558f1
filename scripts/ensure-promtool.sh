#!/usr/bin/env bash
# Make sure `promtool` (Prometheus' rule checker) is available for the render tier (idempotent).
# Uses the distribution's package (Debian/Ubuntu `prometheus`, which ships promtool); the service it would
# start is not used. Prints promtool's path on success. Set MEDSEARCH_PROMTOOL to use one elsewhere.
set -euo pipefail
for candidate in "${MEDSEARCH_PROMTOOL:-}" "$(command -v promtool || true)" /usr/bin/promtool; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then
    echo "$candidate"
    exit 0
  fi
done
if ! command -v apt-get >/dev/null; then
  echo "error: promtool is missing and apt-get is not available; install Prometheus and set MEDSEARCH_PROMTOOL" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  sudo=sudo
  command -v sudo >/dev/null || { echo "error: promtool is missing; run as root: apt-get install -y prometheus" >&2; exit 1; }
else
  sudo=
fi
echo "installing prometheus (for promtool) with apt-get (one time)" >&2
export DEBIAN_FRONTEND=noninteractive
# The package's post-install tries to start a system service; without an init system that fails harmlessly.
$sudo apt-get install -y -q --no-install-recommends prometheus >&2 \
  || { $sudo apt-get update -q >&2 && $sudo apt-get install -y -q --no-install-recommends prometheus >&2; } \
  || [ -x /usr/bin/promtool ]
[ -x /usr/bin/promtool ] || { echo "error: apt-get finished but /usr/bin/promtool is missing" >&2; exit 1; }
echo /usr/bin/promtool
