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
. "$(dirname "$0")/lib/apt-install.sh"
# The package's post-install tries to start a system service; without an init system that fails harmlessly.
apt_install promtool "install Prometheus and set MEDSEARCH_PROMTOOL" prometheus || [ -x /usr/bin/promtool ]
[ -x /usr/bin/promtool ] || { echo "error: apt-get finished but /usr/bin/promtool is missing" >&2; exit 1; }
echo /usr/bin/promtool
