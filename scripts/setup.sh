#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for xenode: the system packages the
# build and the tests use, then the npm dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(gcc make libxen-dev)
# the tests also talk to real Xen software and to QEMU
if [ "${1:-}" = "--test" ]; then
  pkgs+=(xenstore-utils python3-pyxs grub-xen-bin grub-common device-tree-compiler qemu-system-x86 gdb binutils)
fi
need=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -e /dev/kvm ] || echo "setup: WARNING: /dev/kvm is absent: guests cannot run here (KVM tests will skip)"
npm ci --no-audit --no-fund --loglevel=error
