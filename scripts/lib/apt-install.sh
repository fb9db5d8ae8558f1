# Sourced by scripts/ensure-*.sh: install Debian/Ubuntu packages on demand, once.
# apt_install WHAT MANUAL PKG...: WHAT names what is missing, MANUAL what to do without apt-get. Exits with an
# error where apt-get or root is missing; otherwise returns apt-get's status (an update and a second try first).
apt_install() {
  local what=$1 manual=$2
  shift 2
  if ! command -v apt-get >/dev/null; then
    echo "error: $what is missing and apt-get is not available; $manual" >&2
    exit 1
  fi
  local sudo=
  if [ "$(id -u)" != 0 ]; then
    sudo=sudo
    command -v sudo >/dev/null || { echo "error: $what is missing; run as root: apt-get install -y $*" >&2; exit 1; }
  fi
  echo "installing $* with apt-get (one time)" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q --no-install-recommends "$@" >&2 \
    || { $sudo apt-get update -q >&2 && $sudo apt-get install -y -q --no-install-recommends "$@" >&2; }
}
