#!/usr/bin/env bash
# Installs the Debian packages the test bed and the image build need and this machine may lack:
# mmdebstrap and umoci (the images, built without a container engine), libseccomp-dev and pkgconf
# (runc's seccomp support finds the library through pkg-config), gcc and libc6-dev (runc's cgo, the
# static pause binary), iproute2 (the bed's network namespace). Nothing is installed when all are
# present.
#
# usage: tools/host-packages.sh   (root and apt, as on Debian; elsewhere it only says what is missing)
set -euo pipefail

packages=(mmdebstrap umoci libseccomp-dev pkgconf iproute2 gcc libc6-dev)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "host-packages: missing Debian packages: ${missing[*]} (install them as root)" >&2
  exit 1
fi
echo "host-packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
