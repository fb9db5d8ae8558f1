#!/usr/bin/env bash
# Base images for building the medsearch images where none can be pulled: made from Debian packages with
# debootstrap and imported into the engine at DOCKER_HOST. Prints the image reference on stdout:
#
#   bash scripts/base-image.sh python   # Debian bookworm minbase + python3 (3.11), venv, CA certificates
#   bash scripts/base-image.sh node     # the python base + this machine's Node.js (20+; Debian's 18 cannot run Vite)
#
# Users with a registry do not need this: the Dockerfiles default to python:3.11-slim-bookworm and
# node:20-bookworm-slim (build args PYTHON_IMAGE / NODE_IMAGE).
#
# The root filesystem tarball is cached under MEDSEARCH_IMAGE_CACHE (default ~/.cache/medsearch/images), keyed by
# its inputs (suite, mirror, packages, this script), and the image is tagged with the same key: a second run on
# the same machine costs nothing. Needs root, debootstrap (installed from apt when missing) and a Docker engine.
set -euo pipefail

kind=${1:-python}
say() { echo "base-image: $*" >&2; }
here=$(cd "$(dirname "$0")" && pwd)
cache=${MEDSEARCH_IMAGE_CACHE:-$HOME/.cache/medsearch/images}
suite=bookworm
packages=python3,python3-venv,python-is-python3,ca-certificates
mirror=${MEDSEARCH_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  # The first deb URI apt uses on this machine (deb822 or one-line format), else Debian's CDN.
  mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)
  [ -n "$mirror" ] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
fi
# Bump when the recipe below changes what the root filesystem holds.
recipe=1
key=$(echo "$recipe $suite $mirror $packages" | sha256sum | cut -c1-12)
python_ref=medsearch-base-python:$key

have() { docker image inspect "$1" >/dev/null 2>&1; }

python_base() {
  if have "$python_ref"; then echo "$python_ref"; return; fi
  mkdir -p "$cache"
  tarball=$cache/python-$suite-$key.tar
  if [ ! -f "$tarball" ]; then
    [ "$(id -u)" = 0 ] || { say "debootstrap needs root"; exit 3; }
    if ! command -v debootstrap >/dev/null; then
      say "installing debootstrap (apt)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2; }
    fi
    rootfs=$(mktemp -d /tmp/medsearch-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    say "debootstrap $suite ($packages) from $mirror"
    debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
      || { tail -n 20 "$cache/debootstrap.log" >&2; say "debootstrap failed (log: $cache/debootstrap.log)"; exit 1; }
    # Registries are reached through this machine's trust store (it may hold a proxy's CA).
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
    trap - EXIT
  fi
  say "importing $tarball as $python_ref"
  docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$tarball" "$python_ref" >/dev/null
  echo "$python_ref"
}

node_base() {
  local base node npm_dir version nkey ref ctx
  base=$(python_base)
  node=$(command -v node || true)
  [ -n "$node" ] || { say "no node on PATH (Node.js 20+ is needed for the web client)"; exit 3; }
  node=$(readlink -f "$node")
  version=$("$node" --version)
  case "$version" in v1[0-9].*|v[0-9].*) say "node $version is too old for Vite (20+ needed)"; exit 3 ;; esac
  npm_dir=$(dirname "$node")/../lib/node_modules/npm
  [ -f "$npm_dir/bin/npm-cli.js" ] || { say "npm not found beside $node"; exit 3; }
  nkey=$(echo "$recipe $base $version $(sha256sum "$node" | cut -c1-16)" | sha256sum | cut -c1-12)
  ref=medsearch-base-node:$nkey
  if have "$ref"; then echo "$ref"; return; fi
  ctx=$(mktemp -d /tmp/medsearch-node.XXXXXX)
  trap 'rm -rf "$ctx"' EXIT
  cp "$node" "$ctx/node"
  cp -r "$npm_dir" "$ctx/npm"
  cat >"$ctx/Dockerfile" <<EOF
FROM $base
COPY node /usr/bin/node
COPY npm /usr/lib/node_modules/npm
# Node.js trusts its own CA list only; registries are reached through the system store (it may hold a proxy's CA).
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/bin/npm && node --version && npm --version
EOF
  say "building $ref (node $version)"
  DOCKER_BUILDKIT=0 docker build -q --network=host -t "$ref" "$ctx" >/dev/null
  rm -rf "$ctx"
  trap - EXIT
  echo "$ref"
}

case "$kind" in
  python) python_base ;;
  node) node_base ;;
  *) say "usage: $0 python|node"; exit 2 ;;
esac
