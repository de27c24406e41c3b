#!/usr/bin/env bash
# Fetch the Linux peer the Linux tests and bench/linux.ts boot: Debian 12's newest
# cloud kernel (linux-image-6.1.0-N-cloud-amd64-unsigned, CONFIG_XEN_PVH=y) and
# busybox-static, downloaded (not installed) with apt-get and unpacked into
# .cache/linux/:
#   .cache/linux/vmlinuz   the kernel as Debian ships it (a bzImage)
#   .cache/linux/vmlinux   the PVH ELF inside it (QEMU's microvm boots only the ELF by PVH)
#   .cache/linux/busybox   a static busybox for an initramfs
#   .cache/linux/modules/  the kernel's Xen PV frontends built as modules (xen-blkfront.ko, xen-netfront.ko),
#                          and virtio-blk's (bench/block.ts's QEMU side)
#   .cache/linux/VERSION   the kernel package's name and version
# Safe to run again: does nothing when those files are there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/linux
if [ -s "$dest/vmlinuz" ] && [ -s "$dest/vmlinux" ] && [ -x "$dest/busybox" ] && [ -s "$dest/modules/xen-blkfront.ko" ] && [ -s "$dest/modules/virtio_blk.ko" ] && [ -s "$dest/VERSION" ]; then
  echo "fetch-linux: $(head -1 "$dest/VERSION") and busybox already in $dest"
  exit 0
fi
command -v lz4 >/dev/null || { echo "fetch-linux: needs lz4 to extract the ELF from the bzImage (apt-get install lz4)" >&2; exit 1; }
pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$' | cut -d' ' -f1 | sort -V | tail -1)
if [ -z "$pkg" ]; then
  echo "fetch-linux: no linux-image-6.1.0-*-cloud-amd64-unsigned in apt's lists (run apt-get update; Debian 12 sources needed)" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"  # apt's download sandbox user must be able to write here
(cd "$work" && apt-get download -q "$pkg" busybox-static >/dev/null 2>&1) || {
  echo "fetch-linux: apt-get download $pkg busybox-static failed (try apt-get update first)" >&2
  exit 1
}
dpkg-deb -x "$work"/linux-image-*.deb "$work/k"
dpkg-deb -x "$work"/busybox-static_*.deb "$work/bb"
mkdir -p "$dest"
vmlinuz=$(ls "$work"/k/boot/vmlinuz-*)
cp "$vmlinuz" "$dest/vmlinuz"
cp "$work/bb/bin/busybox" "$dest/busybox"
mkdir -p "$dest/modules"
for m in drivers/block/xen-blkfront drivers/net/xen-netfront drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_mmio drivers/block/virtio_blk; do
  ko=$(ls "$work"/k/lib/modules/*/kernel/$m.ko* 2>/dev/null | head -1)
  [ -n "$ko" ] || { echo "fetch-linux: $pkg has no $m module" >&2; exit 1; }
  case "$ko" in
    *.xz) xz -dc "$ko" > "$dest/modules/$(basename "$m").ko" ;;
    *.zst) zstd -qdc "$ko" > "$dest/modules/$(basename "$m").ko" ;;
    *) cp "$ko" "$dest/modules/" ;;
  esac
done
chmod 755 "$dest/busybox"
# The ELF for QEMU: the bzImage's payload is an LZ4 legacy stream (magic 02 21 4c 18); lz4 -dc stops at
# its end and complains about the bytes after it, so its status is not the test: the ELF magic is.
off=$(grep -obUaP '\x02\x21\x4c\x18' "$dest/vmlinuz" | head -1 | cut -d: -f1)
if [ -z "$off" ]; then
  echo "fetch-linux: $vmlinuz has no LZ4 legacy payload (another compressor: extract-vmlinux by hand)" >&2
  exit 1
fi
tail -c +$((off + 1)) "$dest/vmlinuz" | lz4 -dc > "$dest/vmlinux" 2>/dev/null || true
if [ "$(head -c 4 "$dest/vmlinux" | od -An -tx1 | tr -d ' ')" != "7f454c46" ]; then
  rm -f "$dest/vmlinux"
  echo "fetch-linux: the payload of $vmlinuz did not decompress to an ELF" >&2
  exit 1
fi
printf '%s %s\n' "$pkg" "$(dpkg-deb -f "$work"/linux-image-*.deb Version)" > "$dest/VERSION"
echo "fetch-linux: $(cat "$dest/VERSION") and busybox-static unpacked into $dest"
