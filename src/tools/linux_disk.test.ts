// Debian's kernel with its own xen-blkfront (the module Debian ships,
// loaded from the initramfs) on a disk served by the control domain's
// blkback: Linux finds xvda with the image's size, mounts the ext2
// filesystem on it, reads a file, writes one, and the write is in the image
// on the host once Linux has unmounted it and powered off. A second boot, with
// two vCPUs and blkfront asked for what blkback offers beyond its defaults,
// negotiates multi-queue, a multi-page ring, indirect descriptors and discard,
// and moves a random pattern through them that both sides checksum.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { busyboxInitramfs, haveLinux, linuxBzImage, linuxDir } from '../testing/initramfs.js';
import { havePeer, which } from '../testing/peers.js';
import { until } from '../testing/wait.js';
import type { VbdSpec } from './disk.js';
import { MAX_QUEUES } from './backends/vbd.js';

/** A boot under the software CPU on a loaded 2-CPU host: ~60-90 s to /init. */
const BOOT_MS = 200_000;
const blkfront = path.join(linuxDir, 'modules', 'xen-blkfront.ko');
const mke2fs = which('mke2fs') ?? (existsSync('/usr/sbin/mke2fs') ? '/usr/sbin/mke2fs' : null);

/** One Linux guest on a toolstack of its own, with xen-blkfront.ko in its initramfs and its console kept. */
async function bootLinux(o: { name: string; init: string; vcpus?: number; pcpus?: number; disks?: VbdSpec[] }) {
  const { Toolstack } = await import('./toolstack.js');
  const log: string[] = [];
  const ts = await Toolstack.start({ pcpus: o.pcpus ?? 2, log: (l) => log.push(l) });
  let out = '';
  const down = new Map<number, number>();
  ts.hv.on('shutdown', (domid: number, reason: number) => down.set(domid, reason));
  const initrd = busyboxInitramfs({ init: o.init, files: { 'xen-blkfront.ko': readFileSync(blkfront) } });
  try {
    const d = await ts.create({ name: o.name, kernel: readFileSync(linuxBzImage), ramdisk: initrd, memoryMiB: 256, vcpus: o.vcpus ?? 1, cmdline: 'console=hvc0' },
      (b) => { out += Buffer.from(b).toString('latin1'); }, { disks: o.disks });
    /** a failed wait says what the console showed */
    const fail = (e: Error): never => { throw new Error(`${e.message}; console:\n${out.slice(-4000)}`); };
    return {
      ts, d, log, fail,
      get out() { return out; },
      poweredOff: (ms = BOOT_MS) => until('Linux to power off', () => down.has(d.domid) || undefined, ms, 100).catch(fail),
    };
  } catch (e) {
    await ts.shutdown();
    throw e;
  }
}

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
  let g: Awaited<ReturnType<typeof bootLinux>> | undefined;
  try {
    const root = path.join(dir, 'root');
    mkdirSync(root);
    writeFileSync(path.join(root, 'hello.txt'), 'hello from the host');
    const img = path.join(dir, 'disk.img');
    const mk = spawnSync(mke2fs!, ['-q', '-F', '-t', 'ext2', '-b', '1024', '-d', root, img, '8M']);
    assert.equal(mk.status, 0, mk.stderr?.toString());
    g = await bootLinux({ name: 'linux-disk', init: INIT, pcpus: 2, vcpus: 1, disks: [{ target: img, vdev: 'xvda' }] });
    const guest = g;
    const { ts, d } = guest;
    const be = `/local/domain/0/backend/vbd/${d.domid}/51712`, fe = `/local/domain/${d.domid}/device/vbd/51712`;
    await guest.poweredOff();
    assert.doesNotMatch(guest.out, /insmod failed/, guest.out.slice(-4000));
    assert.match(guest.out, /disk: size 16384 ro 0/, guest.out.slice(-4000));
    assert.match(guest.out, /disk: mounted/);
    assert.match(guest.out, /disk: read \[hello from the host\]/);
    assert.match(guest.out, /disk: unmounted/);
    // Linux spoke the 64-bit layout, and closed the device on its way down (xenbus_dev_shutdown): the backend followed
    assert.equal(await ts.client.read(`${fe}/protocol`), 'x86_64-abi');
    assert.deepEqual([await ts.client.read(`${fe}/state`), await ts.client.read(`${be}/state`)], ['6', '6']);
    assert.equal(ts.hv.gntdev.maptrack.inUse, 0, 'the ring unmapped');
    await ts.destroy(d.domid);
    assert.match(readFileSync(img).toString('latin1'), /written by linux through blkfront\n/, 'the write reached the image');
  } finally {
    await g?.ts.shutdown();
    rmSync(dir, { recursive: true, force: true });
  }
});

const MIB = 1 << 20;
/**
 * blkfront's defaults are one page, 32 indirect segments; asked for more, it takes what the backend offers.
 * Persistent grants off: with them blkfront gives every grant of every slot a page of its own up front,
 * 257 x 128 x 2 queues here, more than the guest's 256 MiB (the next test has them on).
 */
const INIT_FEATURES = `
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
insmod /xen-blkfront.ko max_ring_page_order=2 max_indirect_segments=256 feature_persistent=0 || echo "disk: insmod failed"
for i in $(seq 1 200); do [ -b /dev/xvda ] && break; sleep 0.1; done
q=/sys/block/xvda/queue
echo "disk: cpus $(nproc) hwq $(ls /sys/block/xvda/mq | wc -l) max_segments $(cat $q/max_segments) max_hw_sectors_kb $(cat $q/max_hw_sectors_kb) discard_max_bytes $(cat $q/discard_max_bytes) discard_granularity $(cat $q/discard_granularity)"
dd if=/dev/urandom of=/tmp/pattern bs=1M count=4 2>/dev/null
echo "disk: pattern $(md5sum < /tmp/pattern | cut -c1-32) tail $(dd if=/tmp/pattern bs=1M skip=1 2>/dev/null | md5sum | cut -c1-32)"
# 1 MiB direct writes and reads: far more than 11 segments a request, so indirect ones
dd if=/tmp/pattern of=/dev/xvda bs=1M seek=1 oflag=direct conv=fsync 2>/dev/null && echo "disk: written"
echo "disk: readback $(dd if=/dev/xvda bs=1M skip=1 count=4 iflag=direct 2>/dev/null | md5sum | cut -c1-32)"
blkdiscard -o 1048576 -l 1048576 /dev/xvda && echo "disk: discarded"
echo "disk: after discard $(dd if=/dev/xvda bs=1M skip=1 count=1 iflag=direct 2>/dev/null | md5sum | cut -c1-32) tail $(dd if=/dev/xvda bs=1M skip=2 count=3 iflag=direct 2>/dev/null | md5sum | cut -c1-32)"
sync
poweroff -f
`;

test("Linux's xen-blkfront negotiates multi-queue, a 4-page ring, 256 indirect segments and discard, and its data survives them", { timeout: BOOT_MS + 60_000 }, async (t) => {
  if (!haveLinux(t)) return;
  if (!havePeer(t, existsSync(blkfront), 'xen-blkfront.ko from Debian\'s kernel package', 'scripts/fetch-linux.sh')) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'xenode-linux-disk-'));
  let g: Awaited<ReturnType<typeof bootLinux>> | undefined;
  try {
    const img = path.join(dir, 'disk.img');
    writeFileSync(img, Buffer.alloc(8 * MIB, 0x5a));
    g = await bootLinux({ name: 'linux-disk-features', init: INIT_FEATURES, pcpus: 2, vcpus: 2, disks: [{ target: img, vdev: 'xvda' }] });
    const guest = g;
    const { ts, d } = guest;
    const fe = `/local/domain/${d.domid}/device/vbd/51712`;
    // Linux's blkfront asks for min(offered, its max_queues 4, its CPUs 2) queues
    const queues = Math.min(MAX_QUEUES, 2);
    const nodes = await until('blkfront to connect', async () => ((await ts!.client.tryRead(`${fe}/state`)) === '4' ? {
      order: await ts!.client.tryRead(`${fe}/ring-page-order`),
      num: await ts!.client.tryRead(`${fe}/multi-queue-num-queues`),
      refs: await Promise.all(Array.from({ length: queues }, (_, i) => ts!.client.tryRead(`${queues > 1 ? `${fe}/queue-${i}` : fe}/ring-ref3`))),
    } : undefined), BOOT_MS, 100).catch(guest.fail);
    await guest.poweredOff();
    const tail = guest.out.slice(-4000);
    assert.doesNotMatch(guest.out, /insmod failed|disabled for further use|response has wrong operation/, tail);
    assert.equal(nodes.order, '2', 'ring-page-order');
    assert.equal(nodes.num, queues > 1 ? String(queues) : undefined, 'multi-queue-num-queues');
    assert.ok(nodes.refs.every((r) => r !== undefined && /^\d+$/.test(r)), `ring-ref3 of every queue: ${nodes.refs.join(',')}`);
    const backend = d.disks[0]!.backend;
    assert.deepEqual(backend.lastConnection, { protocol: 'x86_64-abi', queues, ringPages: 4, persistent: false });
    // what Linux made of it: 256 segments of a page (1 MiB requests), discard up to the whole disk by 4 KiB
    const limits = /disk: cpus (\d+) hwq (\d+) max_segments (\d+) max_hw_sectors_kb (\d+) discard_max_bytes (\d+) discard_granularity (\d+)/.exec(guest.out);
    assert.ok(limits, tail);
    assert.deepEqual(limits.slice(1).map(Number), [2, queues, 256, 1024, 8 * MIB, 4096]);
    const pattern = /disk: pattern ([0-9a-f]{32}) tail ([0-9a-f]{32})/.exec(guest.out);
    assert.ok(pattern, tail);
    assert.match(guest.out, /disk: written/);
    assert.match(guest.out, new RegExp(`disk: readback ${pattern[1]}`), 'the pattern read back as written');
    assert.match(guest.out, /disk: discarded/);
    const zeroMiB = createHash('md5').update(Buffer.alloc(MIB)).digest('hex');
    assert.match(guest.out, new RegExp(`disk: after discard ${zeroMiB} tail ${pattern[2]}`), 'the discarded MiB reads as zeros, the rest as written');
    // served as such: indirect requests of many segments, a discard, nothing refused
    const st = backend.stats;
    t.diagnostic(`${limits[0]}; served ${JSON.stringify(st)}`);
    assert.ok(st.indirectReq >= 8 && st.maxSegments > 11 && st.maxSegments <= 256, JSON.stringify(st));
    assert.ok(st.dsReq >= 1, JSON.stringify(st));
    assert.equal(st.errReq, 0, JSON.stringify(st));
    await ts.destroy(d.domid);
    const disk = readFileSync(img);
    assert.ok(disk.subarray(MIB, 2 * MIB).every((b) => b === 0), 'the discarded MiB is zeros in the image');
    assert.equal(createHash('md5').update(disk.subarray(2 * MIB, 5 * MIB)).digest('hex'), pattern[2], 'the pattern is in the image');
    assert.ok(disk.subarray(0, MIB).every((b) => b === 0x5a) && disk.subarray(5 * MIB).every((b) => b === 0x5a), 'the rest untouched');
  } finally {
    await g?.ts.shutdown();
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * Without indirect descriptors every request carries at most 11 segments: thousands of ring round trips.
 * blkfront's persistent grants are on (its default): each of its 352 pages is mapped once, then reused.
 */
const INIT_MANY = `
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
insmod /xen-blkfront.ko max_indirect_segments=0 || echo "disk: insmod failed"
for i in $(seq 1 200); do [ -b /dev/xvda ] && break; sleep 0.1; done
dd if=/dev/xvda of=/dev/null bs=1M count=64 iflag=direct 2>/dev/null && echo "disk: read 64"
dd if=/dev/zero of=/dev/xvda bs=1M count=64 oflag=direct conv=fsync 2>/dev/null && echo "disk: wrote 64"
poweroff -f
`;

test('64 MiB each way in 11-segment requests: every request is answered, no notification is lost on either side of the ring', { timeout: BOOT_MS + 60_000 }, async (t) => {
  if (!haveLinux(t)) return;
  if (!havePeer(t, existsSync(blkfront), 'xen-blkfront.ko from Debian\'s kernel package', 'scripts/fetch-linux.sh')) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'xenode-linux-disk-'));
  let g: Awaited<ReturnType<typeof bootLinux>> | undefined;
  try {
    const img = path.join(dir, 'disk.img');
    writeFileSync(img, '');
    truncateSync(img, 72 * MIB);
    g = await bootLinux({ name: 'linux-disk-many', init: INIT_MANY, pcpus: 1, vcpus: 1, disks: [{ target: img, vdev: 'xvda' }] });
    const guest = g;
    const { d } = guest;
    // A lost event stalls blkfront for ever (it has no timeout): the bound here is what catches it.
    await guest.poweredOff().catch((e: Error) => { throw new Error(`${e.message}; served ${JSON.stringify(d.disks[0]!.backend.stats)}`); });
    assert.match(guest.out, /disk: read 64\r?\n[^]*disk: wrote 64/, guest.out.slice(-3000));
    const st = d.disks[0]!.backend.stats;
    t.diagnostic(JSON.stringify(st));
    assert.equal(st.indirectReq, 0, 'no indirect requests');
    assert.ok(st.rdReq >= Math.ceil((64 * MIB) / (11 * 4096)), `reads in 11-segment requests: ${st.rdReq}`);
    assert.ok(st.rdSect >= 64 * 2048, `${st.rdSect}`); // and the partition table Linux reads first
    assert.ok(st.wrSect >= 64 * 2048, `${st.wrSect}`);
    assert.equal(st.errReq, 0);
    // Linux's blkfront keeps its granted pages when offered feature-persistent: all the data went through mappings
    assert.equal(d.disks[0]!.backend.lastConnection?.persistent, true);
    assert.ok(st.persistentSegs >= (st.rdSect + st.wrSect) / 8, `every segment through a persistent mapping: ${JSON.stringify(st)}`);
  } finally {
    await g?.ts.shutdown();
    rmSync(dir, { recursive: true, force: true });
  }
});

const INIT_HOTPLUG = `
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
insmod /xen-blkfront.ko || echo "disk: insmod failed"
echo "hotplug: waiting"
for i in $(seq 1 600); do [ -b /dev/xvdb ] && break; sleep 0.1; done
echo "hotplug: seen [$(dd if=/dev/xvdb bs=512 count=1 2>/dev/null | head -c 18)] size $(cat /sys/block/xvdb/size)"
for i in $(seq 1 600); do [ -b /dev/xvdb ] || break; sleep 0.1; done
[ -b /dev/xvdb ] && echo "hotplug: still there" || echo "hotplug: gone"
poweroff -f
`;

test('a disk attached to a running Linux appears as xvdb and is read; detached, Linux closes it and it goes', { timeout: BOOT_MS + 90_000 }, async (t) => {
  if (!haveLinux(t)) return;
  if (!havePeer(t, existsSync(blkfront), 'xen-blkfront.ko from Debian\'s kernel package', 'scripts/fetch-linux.sh')) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'xenode-linux-disk-'));
  let g: Awaited<ReturnType<typeof bootLinux>> | undefined;
  try {
    const img = path.join(dir, 'hot.img');
    const data = Buffer.alloc(2 * MIB);
    data.write('hot-plugged disk!!', 0, 'latin1');
    writeFileSync(img, data);
    g = await bootLinux({ name: 'linux-hotplug', init: INIT_HOTPLUG, pcpus: 1, vcpus: 1 });
    const guest = g;
    const { ts, d } = guest;
    const fail = guest.fail;
    await until('the guest to wait for its disk', () => /hotplug: waiting/.test(guest.out) || undefined, BOOT_MS, 50).catch(fail);
    const v = await ts.attachDisk(d.domid, { target: img, vdev: 'xvdb' });
    assert.equal(v.devid, 51728);
    await until('Linux to read the new disk', () => /hotplug: seen/.test(guest.out) || undefined, 60_000, 50).catch(fail);
    assert.match(guest.out, /hotplug: seen \[hot-plugged disk!!\] size 4096/);
    assert.equal(await ts.client.read(`${v.backendPath}/state`), '4');
    const t0 = Date.now();
    await ts.detachDisk(d.domid, 'xvdb');
    t.diagnostic(`detach took ${Date.now() - t0} ms`);
    assert.deepEqual(guest.log.filter((l) => /removed anyway/.test(l)), [], 'Linux closed the device itself');
    assert.equal(await ts.client.tryRead(`${v.frontendPath}/state`), undefined, 'the frontend directory is gone');
    assert.equal(await ts.client.tryRead(`${v.backendPath}/state`), undefined, 'the backend directory is gone');
    assert.equal(ts.hv.gntdev.maptrack.inUse, 0, 'the ring unmapped');
    await guest.poweredOff(90_000);
    assert.match(guest.out, /hotplug: gone/);
    await assert.rejects(ts.detachDisk(d.domid, 'xvdb'), /Device xvdb not connected/);
  } finally {
    await g?.ts.shutdown();
    rmSync(dir, { recursive: true, force: true });
  }
});
