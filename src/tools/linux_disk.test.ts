// Debian's kernel with its own xen-blkfront (the module Debian ships,
// loaded from the initramfs) on a disk served by the control domain's
// blkback: Linux finds xvda with the image's size, mounts the ext2
// filesystem on it, reads a file, writes one, and the write is in the image
// on the host once Linux has unmounted it and powered off.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { busyboxInitramfs, haveLinux, linuxBzImage, linuxDir } from '../testing/initramfs.js';
import { havePeer, which } from '../testing/peers.js';
import { until } from '../testing/wait.js';
import type { Toolstack } from './toolstack.js';

/** A boot under the software CPU on a loaded 2-CPU host: ~60-90 s to /init. */
const BOOT_MS = 200_000;
const blkfront = path.join(linuxDir, 'modules', 'xen-blkfront.ko');
const mke2fs = which('mke2fs') ?? (existsSync('/usr/sbin/mke2fs') ? '/usr/sbin/mke2fs' : null);

const INIT = `
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
insmod /xen-blkfront.ko || echo "disk: insmod failed"
for i in $(seq 1 200); do [ -b /dev/xvda ] && break; sleep 0.1; done
echo "disk: size $(cat /sys/block/xvda/size) ro $(cat /sys/block/xvda/ro)"
mkdir -p /mnt
mount -t ext2 /dev/xvda /mnt && echo "disk: mounted"
echo "disk: read [$(cat /mnt/hello.txt)]"
echo "written by linux through blkfront" > /mnt/from-linux.txt
umount /mnt && echo "disk: unmounted"
sync
poweroff -f
`;

test("Linux's xen-blkfront mounts an ext2 disk served by blkback, reads a file and writes one the host then finds", { timeout: BOOT_MS + 60_000 }, async (t) => {
  if (!haveLinux(t)) return;
  if (!havePeer(t, existsSync(blkfront), 'xen-blkfront.ko from Debian\'s kernel package', 'scripts/fetch-linux.sh')) return;
  if (!havePeer(t, mke2fs !== null, 'mke2fs', 'apt-get install e2fsprogs')) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'xenode-linux-disk-'));
  const { Toolstack } = await import('./toolstack.js');
  let ts: Toolstack | undefined;
  try {
    const root = path.join(dir, 'root');
    mkdirSync(root);
    writeFileSync(path.join(root, 'hello.txt'), 'hello from the host');
    const img = path.join(dir, 'disk.img');
    const mk = spawnSync(mke2fs!, ['-q', '-F', '-t', 'ext2', '-b', '1024', '-d', root, img, '8M']);
    assert.equal(mk.status, 0, mk.stderr?.toString());
    const initrd = busyboxInitramfs({ init: INIT, files: { 'xen-blkfront.ko': readFileSync(blkfront) } });
    ts = await Toolstack.start({ pcpus: 2, log: () => {} });
    let out = '';
    const down = new Map<number, number>();
    ts.hv.on('shutdown', (domid: number, reason: number) => down.set(domid, reason));
    const d = await ts.create({ name: 'linux-disk', kernel: readFileSync(linuxBzImage), ramdisk: initrd, memoryMiB: 256, vcpus: 1, cmdline: 'console=hvc0' },
      (b) => { out += Buffer.from(b).toString('latin1'); }, { disks: [{ target: img, vdev: 'xvda' }] });
    const be = `/local/domain/0/backend/vbd/${d.domid}/51712`, fe = `/local/domain/${d.domid}/device/vbd/51712`;
    await until('Linux to power off', () => down.has(d.domid) || undefined, BOOT_MS, 200).catch((e: Error) => { throw new Error(`${e.message}; console:\n${out.slice(-4000)}`); });
    assert.doesNotMatch(out, /insmod failed/, out.slice(-4000));
    assert.match(out, /disk: size 16384 ro 0/, out.slice(-4000));
    assert.match(out, /disk: mounted/);
    assert.match(out, /disk: read \[hello from the host\]/);
    assert.match(out, /disk: unmounted/);
    // Linux spoke the 64-bit layout, and closed the device on its way down (xenbus_dev_shutdown): the backend followed
    assert.equal(await ts.client.read(`${fe}/protocol`), 'x86_64-abi');
    assert.deepEqual([await ts.client.read(`${fe}/state`), await ts.client.read(`${be}/state`)], ['6', '6']);
    assert.equal(ts.hv.gntdev.maptrack.inUse, 0, 'the ring unmapped');
    await ts.destroy(d.domid);
    assert.match(readFileSync(img).toString('latin1'), /written by linux through blkfront\n/, 'the write reached the image');
  } finally {
    await ts?.shutdown();
    rmSync(dir, { recursive: true, force: true });
  }
});
