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
. "$(dirname "$0")/lib/apt-install.sh"
apt_install "dcmtk or Orthanc" "install dcmtk, orthanc, orthanc-dicomweb" dcmtk orthanc orthanc-dicomweb || true
have_all || { echo "error: apt-get finished but echoscu/storescu/Orthanc/the DICOMweb plugin are missing" >&2; exit 1; }
