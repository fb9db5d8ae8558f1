#!/usr/bin/env bash
# Build the medsearch images (`make images`, `make images-cuda`):
#
#   bash scripts/build-images.sh [--context DIR] [operator|workers|api|model-server|model-server-cuda ...]
#                                                         (default: the four images the chart deploys, not CUDA)
#
# Every image is a target of the one Dockerfile at the root of <context>, built with the classic builder and the
# host network (`docker build --target <image>`), tagged ${IMAGE_PREFIX}<image>:${IMAGE_TAG} (model-server-cuda:
# ${IMAGE_PREFIX}model-server:${IMAGE_TAG}-cuda; IMAGE_PREFIX defaults to "medsearch-", IMAGE_TAG to `git describe
# --tags --always --dirty`, else "dev"). The images' tags are printed on stdout, one a line; progress goes to stderr.
#
# Base images: PYTHON_IMAGE / NODE_IMAGE when set (e.g. python:3.11-slim-bookworm from a registry); otherwise
# scripts/base-image.sh makes them from Debian packages (cached). The engine: DOCKER_HOST when it answers,
# otherwise scripts/docker-engine.sh starts a private one. Extra `docker build` arguments: DOCKER_BUILD_ARGS (e.g.
# "--build-arg API_EXTRAS=").
#
# Python dependencies are installed in a layer of their own per image, keyed by the pyprojects and
# constraints.txt only, so a rebuild after a source change reuses the downloaded dependencies (the engine's build
# cache persists between runs). The classic builder builds every stage above the target in the Dockerfile, so
# the images are built in the Dockerfile's order and each reuses the stages the one before built.
#
# A failed build stops with the image, the Dockerfile step that failed and the end of its output, e.g.
#   build-images: medsearch-operator:dev: failed at Step 12/27 : COPY operator/missing.txt /src/ (Dockerfile, target operator)
# and exit status 1; 3 means no engine or base image can be had here (the images tier skips on it).
set -euo pipefail

say() { echo "build-images: $*" >&2; }
here=$(cd "$(dirname "$0")" && pwd)
context=$(cd "$here/.." && pwd)
if [ "${1:-}" = "--context" ]; then context=$(cd "$2" && pwd); shift 2; fi
images=("$@")
[ ${#images[@]} -gt 0 ] || images=(operator workers api model-server)
for image in "${images[@]}"; do
  case "$image" in
    operator|workers) ;;
    api|model-server|model-server-cuda) needs_node=1 ;;   # below the web client's stage in the Dockerfile
    *) say "unknown image '$image' (operator, workers, api, model-server, model-server-cuda)"; exit 2 ;;
  esac
done
[ -f "$context/Dockerfile" ] || { say "$context/Dockerfile: no such Dockerfile"; exit 1; }

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
if [ -n "${needs_node:-}" ]; then
  if [ -z "${NODE_IMAGE:-}" ]; then
    set +e; NODE_IMAGE=$(bash "$here/base-image.sh" node); rc=$?; set -e
    [ "$rc" = 0 ] || exit "$rc"
  fi
  base_args+=(--build-arg "NODE_IMAGE=$NODE_IMAGE")
fi

logs=$(mktemp -d /tmp/medsearch-build-logs.XXXXXX)
for image in "${images[@]}"; do
  case "$image" in
    model-server-cuda) ref=${prefix}model-server:$tag-cuda ;;
    *) ref=$prefix$image:$tag ;;
  esac
  log=$logs/$image.log
  start=$(date +%s)
  say "building $ref (Dockerfile, target $image)"
  # shellcheck disable=SC2086  # DOCKER_BUILD_ARGS is a list of words on purpose
  if ! DOCKER_BUILDKIT=0 docker build --network=host -f "$context/Dockerfile" --target "$image" "${base_args[@]}" \
      --label "org.opencontainers.image.version=$tag" ${DOCKER_BUILD_ARGS:-} -t "$ref" "$context" >"$log" 2>&1; then
    step=$(grep -E '^Step [0-9]+/[0-9]+ : ' "$log" | tail -n1 || true)
    say "$ref: failed at ${step:-the start (before the first step)} (Dockerfile, target $image)"
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
# machine that builds on every run (only dangling images carrying the Dockerfile's source label are removed).
docker image prune -f --filter "label=org.opencontainers.image.source=https://github.com/medsearch/medsearch" >/dev/null
