#!/usr/bin/env bash
# Extract Xen's test-xenstore, xenstore-control and readnotes from the xen-utils-4.17
# Debian package into .cache/xen-utils/ without installing the package (it
# would pull in the Xen hypervisor). The xenstored tests look for it there.
# Needs apt-get (download only) and dpkg-deb; the binaries need libxenstore4,
# which xenstore-utils depends on.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/xen-utils
bins=(test-xenstore xenstore-control readnotes)
have=0
for b in "${bins[@]}"; do [ -x "$dest/usr/lib/xen-4.17/bin/$b" ] && have=$((have + 1)); done
if [ "$have" -eq ${#bins[@]} ]; then
  echo "fetch-test-xenstore: ${bins[*]} already present in $dest"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"  # apt's download sandbox user must be able to write here
(cd "$work" && apt-get download -q xen-utils-4.17 >/dev/null 2>&1) || {
  echo "fetch-test-xenstore: apt-get download xen-utils-4.17 failed (try apt-get update first)" >&2
  exit 1
}
mkdir -p "$dest"
dpkg-deb -x "$work"/xen-utils-4.17_*.deb "$work/x"
mkdir -p "$dest/usr/lib/xen-4.17/bin"
for b in "${bins[@]}"; do
  cp "$work/x/usr/lib/xen-4.17/bin/$b" "$dest/usr/lib/xen-4.17/bin/"
done
echo "fetch-test-xenstore: extracted into $dest"
