#!/usr/bin/env bash
# A Docker engine for `make images` and the images test tier. Prints the DOCKER_HOST to use on stdout
# (messages go to stderr):
#
#   export DOCKER_HOST=$(bash scripts/docker-engine.sh)
#
# 1. An engine that already answers (DOCKER_HOST, or the default socket) is used as it is.
# 2. Otherwise a private dockerd is started (and left running for later runs) with its own data root, exec root
#    and socket under MEDSEARCH_DOCKER_DIR (default ~/.cache/medsearch/docker), so images and build cache survive
#    between runs on the same machine. Networking stays off the host: no bridge, no iptables, no NAT; builds and
#    containers use the host network (`--network=host`). Installs Debian's docker.io first when dockerd is missing
#    and this is root with apt.
#
# Exit status: 0 engine ready; 3 no engine can be had here (not root / no apt / no dockerd), with the reason on
# stderr (the images tier skips on it); anything else is a failure.
set -euo pipefail

say() { echo "docker-engine: $*" >&2; }

answers() { DOCKER_HOST="$1" timeout 20 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if command -v docker >/dev/null; then
  current=${DOCKER_HOST:-unix:///var/run/docker.sock}
  if answers "$current"; then echo "$current"; exit 0; fi
fi

dir=${MEDSEARCH_DOCKER_DIR:-$HOME/.cache/medsearch/docker}
sock=$dir/docker.sock
host=unix://$sock
if command -v docker >/dev/null && [ -S "$sock" ] && answers "$host"; then echo "$host"; exit 0; fi

if [ "$(id -u)" != 0 ]; then
  say "no Docker engine answers and a private dockerd needs root (set DOCKER_HOST to a running engine)"
  exit 3
fi
if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
  command -v apt-get >/dev/null || { say "no dockerd and no apt-get to install Debian's docker.io"; exit 3; }
  say "installing docker.io (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q docker.io >&2 || { apt-get update -q >&2 && apt-get install -y -q docker.io >&2; }
fi

mkdir -p "$dir/data"
# The exec root holds containerd's sockets: keep its path short (unix socket paths are limited to 108 bytes).
exec_root=/run/medsearch-docker-$(id -u)
if [ -f "$dir/dockerd.pid" ] && kill -0 "$(cat "$dir/dockerd.pid")" 2>/dev/null; then
  say "dockerd (pid $(cat "$dir/dockerd.pid")) is starting or stuck; waiting for it"
else
  rm -f "$sock"
  say "starting a private dockerd (data root $dir/data, log $dir/dockerd.log)"
  setsid nohup dockerd --data-root "$dir/data" --exec-root "$exec_root" --pidfile "$dir/dockerd.pid" \
    -H "$host" --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
    >"$dir/dockerd.log" 2>&1 </dev/null &
fi
for _ in $(seq 1 120); do
  if answers "$host"; then echo "$host"; exit 0; fi
  sleep 0.5
done
say "dockerd did not answer within 60 s; the end of $dir/dockerd.log:"
tail -n 20 "$dir/dockerd.log" >&2 || true
exit 1
