#!/usr/bin/env bash
# Build the medsearch images (`make images`):
#
#   bash scripts/build-images.sh [--context DIR] [api|workers|model-server|operator ...]   (default: all four)
#
# Each image is built from <context>/<component>/Dockerfile with the classic builder and the host network, tagged
# ${IMAGE_PREFIX}<image>:${IMAGE_TAG} (IMAGE_PREFIX defaults to "medsearch-", IMAGE_TAG to `git describe --tags
# --always --dirty`, else "dev"). The images' tags are printed on stdout, one a line; progress goes to stderr.
#
# Base images: PYTHON_IMAGE / NODE_IMAGE when set (e.g. python:3.11-slim-bookworm from a registry); otherwise
# scripts/base-image.sh makes them from Debian packages (cached). The engine: DOCKER_HOST when it answers,
# otherwise scripts/docker-engine.sh starts a private one. Extra `docker build` arguments: DOCKER_BUILD_ARGS (e.g.
# "--build-arg API_EXTRAS=").
#
# Python dependencies are installed in a layer of their own, keyed by the pyprojects and constraints.txt only, so a
# rebuild after a source change reuses the downloaded dependencies (the engine's build cache persists between runs).
#
# A failed build stops with the image, the Dockerfile step that failed and the end of its output, e.g.
#   build-images: medsearch-operator: failed at Step 12/27 : COPY operator/missing.txt /src/ (operator/Dockerfile)
# and exit status 1; 3 means no engine or base image can be had here (the images tier skips on it).
set -euo pipefail

say() { echo "build-images: $*" >&2; }
here=$(cd "$(dirname "$0")" && pwd)
context=$(cd "$here/.." && pwd)
if [ "${1:-}" = "--context" ]; then context=$(cd "$2" && pwd); shift 2; fi
images=("$@")
[ ${#images[@]} -gt 0 ] || images=(operator api workers model-server)

dockerfile_of() {
  case "$1" in
    api) echo api/Dockerfile ;;
    workers) echo ingest_workers/Dockerfile ;;
    model-server) echo model_server/Dockerfile ;;
    operator) echo operator/Dockerfile ;;
    *) say "unknown image '$1' (api, workers, model-server, operator)"; exit 2 ;;
  esac
}

if [ -z "${DOCKER_HOST:-}" ] || ! timeout 20 docker version >/dev/null 2>&1; then
  set +e; DOCKER_HOST=$(bash "$here/docker-engine.sh"); rc=$?; set -e
  [ "$rc" = 0 ] || exit "$rc"
  export DOCKER_HOST
fi
tag=${IMAGE_TAG:-$(git -C "$context" describe --tags --always --dirty 2>/dev/null || echo dev)}
prefix=${IMAGE_PREFIX:-medsearch-}

base_args=()
if [ -z "${PYTHON_IMAGE:-}" ]; then
  set +e; PYTHON_IMAGE=$(bash "$here/base-image.sh" python); rc=$?; set -e
  [ "$rc" = 0 ] || exit "$rc"
fi
base_args+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
for image in "${images[@]}"; do
  if [ "$image" = api ]; then
    if [ -z "${NODE_IMAGE:-}" ]; then
      set +e; NODE_IMAGE=$(bash "$here/base-image.sh" node); rc=$?; set -e
      [ "$rc" = 0 ] || exit "$rc"
    fi
    base_args+=(--build-arg "NODE_IMAGE=$NODE_IMAGE")
  fi
done

logs=$(mktemp -d /tmp/medsearch-build-logs.XXXXXX)
for image in "${images[@]}"; do
  dockerfile=$(dockerfile_of "$image")
  [ -f "$context/$dockerfile" ] || { say "$context/$dockerfile: no such Dockerfile"; exit 1; }
  ref=$prefix$image:$tag
  log=$logs/$image.log
  start=$(date +%s)
  say "building $ref from $dockerfile"
  # shellcheck disable=SC2086  # DOCKER_BUILD_ARGS is a list of words on purpose
  if ! DOCKER_BUILDKIT=0 docker build --network=host -f "$context/$dockerfile" "${base_args[@]}" \
      --label "org.opencontainers.image.version=$tag" ${DOCKER_BUILD_ARGS:-} -t "$ref" "$context" >"$log" 2>&1; then
    step=$(grep -E '^Step [0-9]+/[0-9]+ : ' "$log" | tail -n1 || true)
    say "$ref: failed at ${step:-the start (before the first step)} ($dockerfile)"
    grep -vE '^( ---> |Removing intermediate container|Step [0-9]+/)' "$log" | tail -n 25 | sed 's/^/  | /' >&2
    say "full log: $log"
    exit 1
  fi
  size=$(docker image inspect --format '{{.Size}}' "$ref")
  say "$ref: built in $(( $(date +%s) - start )) s, $(( size / 1000000 )) MB"
  echo "$ref"
done
rm -rf "$logs"
# Earlier builds of these images, now untagged, and the cache layers only they used: keep the disk bounded on a
# machine that builds on every run (only dangling images carrying the Dockerfiles' source label are removed).
docker image prune -f --filter "label=org.opencontainers.image.source=https://github.com/medsearch/medsearch" >/dev/null
