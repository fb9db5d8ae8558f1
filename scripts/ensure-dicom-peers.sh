#!/usr/bin/env bash
# Make sure the real DICOM peers used by the DICOM networking tests are installed (idempotent):
# dcmtk (echoscu, storescu) and Orthanc with its DICOMweb plugin, from the distribution's packages.
# The Debian orthanc package tries to start a system service on install; that may fail harmlessly where there
# is no init system: the tests start their own Orthanc per test with a private configuration on loopback ports.
set -euo pipefail
have_all() {
  command -v echoscu >/dev/null && command -v storescu >/dev/null && command -v Orthanc >/dev/null \
    && ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so >/dev/null 2>&1
}
if have_all; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "error: dcmtk/Orthanc are missing and apt-get is not available; install dcmtk, orthanc, orthanc-dicomweb" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  sudo=sudo
  command -v sudo >/dev/null || { echo "error: run as root: apt-get install -y dcmtk orthanc orthanc-dicomweb" >&2; exit 1; }
else
  sudo=
fi
echo "installing dcmtk, orthanc and orthanc-dicomweb with apt-get (one time)" >&2
export DEBIAN_FRONTEND=noninteractive
pkgs=(dcmtk orthanc orthanc-dicomweb)
$sudo apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2 \
  || { $sudo apt-get update -q >&2 && $sudo apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2; } \
  || true
have_all || { echo "error: apt-get finished but echoscu/storescu/Orthanc/the DICOMweb plugin are missing" >&2; exit 1; }
