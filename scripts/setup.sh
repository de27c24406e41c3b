#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for xenode: the system packages the
# build and the tests use, then the npm dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(gcc make libxen-dev)
# the tests also talk to real Xen software and to QEMU
if [ "${1:-}" = "--test" ]; then
  pkgs+=(xenstore-utils python3-pyxs grub-xen-bin grub-common device-tree-compiler qemu-system-x86 gdb binutils lz4 zstd bzip2 xz-utils e2fsprogs qemu-utils iproute2)
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
# The software CPU's engine: Unicorn 2.1 (QEMU's TCG as a library), from its Python wheel, which
# carries the C library itself (unicorn/lib/libunicorn.so.2). Debian 12's libunicorn2 is 2.0,
# which does not translate through guest page tables.
UNICORN_VERSION=2.1.4
if [ ! -f .cache/unicorn/unicorn/lib/libunicorn.so.2 ] || ! grep -qs "^Version: $UNICORN_VERSION$" .cache/unicorn/unicorn-*.dist-info/METADATA; then
  echo "setup: installing Unicorn $UNICORN_VERSION (the software CPU) into .cache/unicorn"
  rm -rf .cache/unicorn
  python3 -m pip install --quiet --no-deps --retries 0 --target .cache/unicorn "unicorn==$UNICORN_VERSION"
fi
[ -e /dev/kvm ] || echo "setup: /dev/kvm is absent: guests run on the software CPU (--accel tcg)"
npm ci --no-audit --no-fund --loglevel=error
