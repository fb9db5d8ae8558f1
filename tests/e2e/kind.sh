#!/usr/bin/env bash
# The kind cluster of the end-to-end tier (tests/e2e/test_kind.py drives it; usable by hand too):
#   tests/e2e/kind.sh up       create cluster "medsearch", install cert-manager and KServe (RawDeployment)
#   tests/e2e/kind.sh deploy   skaffold run -p kind (builds the four images, loads them, installs both charts)
#   tests/e2e/kind.sh down     delete the cluster
# Needs docker (or podman), kind, kubectl, helm and skaffold on PATH, and network access to pull images/charts.
set -euo pipefail

CLUSTER="${MEDSEARCH_KIND_CLUSTER:-medsearch}"
CONTEXT="kind-$CLUSTER"
CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-v1.16.2}"
KSERVE_VERSION="${KSERVE_VERSION:-v0.15.2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

log() { echo "kind.sh: $*" >&2; }
need() { for b in "$@"; do command -v "$b" >/dev/null || { log "error: $b not found on PATH"; exit 3; }; done; }

up() {
    need kind kubectl helm
    if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
        log "cluster $CLUSTER exists"
    else
        log "creating kind cluster $CLUSTER"
        kind create cluster --name "$CLUSTER" --wait 180s
    fi
    log "installing cert-manager $CERT_MANAGER_VERSION (KServe's webhooks need it)"
    kubectl --context "$CONTEXT" apply --server-side \
        -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
    kubectl --context "$CONTEXT" -n cert-manager wait --for=condition=Available deployment --all --timeout=300s
    log "installing KServe $KSERVE_VERSION (RawDeployment mode: no Knative, no Istio)"
    helm --kube-context "$CONTEXT" upgrade --install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd \
        --version "$KSERVE_VERSION" --namespace kserve --create-namespace --wait
    helm --kube-context "$CONTEXT" upgrade --install kserve oci://ghcr.io/kserve/charts/kserve \
        --version "$KSERVE_VERSION" --namespace kserve --create-namespace --wait \
        --set kserve.controller.deploymentMode=RawDeployment
}

deploy() {
    need skaffold kubectl helm
    cd "$ROOT"
    skaffold run -p kind --kube-context "$CONTEXT" --status-check=true
}

down() {
    need kind
    kind delete cluster --name "$CLUSTER"
}

case "${1:-}" in
    up) up ;;
    deploy) deploy ;;
    down) down ;;
    *) echo "usage: $0 up|deploy|down" >&2; exit 2 ;;
esac
