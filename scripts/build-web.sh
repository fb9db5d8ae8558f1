#!/usr/bin/env bash
# Build the web client into api/medsearch_api/web/dist when its sources changed (or it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
web=api/web
[ -f "$web/package.json" ] || { echo "web client: no sources yet, skipping"; exit 0; }
out=api/medsearch_api/web/dist
hash=$(find "$web" -path "$web/node_modules" -prune -o -type f -print | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
if [ -f "$out/.source-hash" ] && [ "$(cat "$out/.source-hash")" = "$hash" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "error: npm is needed to build the web client (Node.js 20+)"; exit 1; }
echo "web client: building ($web -> $out)"
(cd "$web" && npm ci --no-audit --no-fund --loglevel=error && npm run build)
echo "$hash" > "$out/.source-hash"
