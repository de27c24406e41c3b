// Debian's xen-blkfront on a disk served by a driver domain (a process of
// its own, reaching the guest only through grants and its event channels),
// which is killed with SIGKILL while Linux writes: the toolstack starts it
// again with the same domid, its xenbus takes the device up where blkfront
// is, blkfront's requests in flight are served by the new process, and
// every block Linux was told was written is in the image, as Linux reads it
// back and as the host finds it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { busyboxInitramfs, haveLinux, linuxBzImage, linuxDir } from '../testing/initramfs.js';
import { havePeer } from '../testing/peers.js';
import { until } from '../testing/wait.js';

const BOOT_MS = 200_000;
const blkfront = path.join(linuxDir, 'modules', 'xen-blkfront.ko');
const BLOCKS = 120;
const BLOCK = 65536;

/** Block i's contents: "blk<i>\n" over and over, cut at 64 KiB (what `yes | head -c` writes). */
function pattern(i: number): Buffer {
  return Buffer.from(`blk${i}\n`.repeat(Math.ceil(BLOCK / `blk${i}\n`.length))).subarray(0, BLOCK);
}

const INIT = `
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
insmod /xen-blkfront.ko || echo "disk: insmod failed"
for i in $(seq 1 200); do [ -b /dev/xvda ] && break; sleep 0.1; done
echo "disk: size $(cat /sys/block/xvda/size)"
i=1
while [ $i -le ${BLOCKS} ]; do
  yes "blk$i" | head -c ${BLOCK} > /tmp/p
  dd if=/tmp/p of=/dev/xvda bs=${BLOCK} seek=$i count=1 oflag=direct conv=fsync 2>/dev/null && echo "disk: wrote $i"
  i=$((i+1))
done
bad=0
i=1
while [ $i -le ${BLOCKS} ]; do
  yes "blk$i" | head -c ${BLOCK} > /tmp/p
  [ "$(dd if=/dev/xvda bs=${BLOCK} skip=$i count=1 iflag=direct 2>/dev/null | md5sum | cut -c1-32)" = "$(md5sum < /tmp/p | cut -c1-32)" ] || bad=$((bad+1))
  i=$((i+1))
done
echo "disk: verified, $bad bad"
poweroff -f
`;

test('a driver domain killed with SIGKILL mid-write is started again, blkfront goes on, and no acknowledged write is lost', { timeout: BOOT_MS + 90_000 }, async (t) => {
  if (!haveLinux(t)) return;
  if (!havePeer(t, existsSync(blkfront), "xen-blkfront.ko from Debian's kernel package", 'scripts/fetch-linux.sh')) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'xenode-dd-'));
  const img = path.join(dir, 'disk.img');
  writeFileSync(img, Buffer.alloc(8 << 20));
  const { Toolstack } = await import('./toolstack.js');
  const log: string[] = [];
  const ts = await Toolstack.start({ pcpus: 2, log: (l) => log.push(l) });
  let out = '';
  const down = new Set<number>();
  ts.hv.on('shutdown', (domid: number) => down.add(domid));
  try {
    const initrd = busyboxInitramfs({ init: INIT, files: { 'xen-blkfront.ko': readFileSync(blkfront) } });
    const d = await ts.create({ name: 'linux-dd', kernel: readFileSync(linuxBzImage), ramdisk: initrd, memoryMiB: 256, vcpus: 1, cmdline: 'console=hvc0' },
      (b) => { out += Buffer.from(b).toString('latin1'); }, { disks: [{ target: img, vdev: 'xvda', backend: 'blkdd' }] });
    const fail = (e: Error): never => { throw new Error(`${e.message}; console:\n${out.slice(-3000)}\nlog:\n${log.slice(-30).join('\n')}`); };
    const dd = ts.driverDomains.get('blkdd')!;
    assert.ok(dd && dd.pid, 'the driver domain runs');
    const be = `/local/domain/${dd.domid}/backend/vbd/${d.domid}/51712`;
    // the frontend names the driver domain; the backend directory is the driver domain's own
    assert.equal(await ts.client.read(`/local/domain/${d.domid}/device/vbd/51712/backend-id`), String(dd.domid));
    assert.deepEqual(await ts.client.getPerms(be), [`n${dd.domid}`, `r${d.domid}`]);
    await until('Linux to write its third block', () => /disk: wrote 3\r?\n/.test(out) || undefined, BOOT_MS, 50).catch(fail);
    const firstPid = dd.pid!;
    process.kill(firstPid, 'SIGKILL');
    await until('the driver domain to be started again', () => (ts.driverDomains.get('blkdd')!.starts === 2 && ts.driverDomains.get('blkdd')!.pid) || undefined, 20_000, 20).catch(fail);
    await until('Linux to power off', () => down.has(d.domid) || undefined, BOOT_MS, 100).catch(fail);
    t.diagnostic(`driver domain d${dd.domid}: pid ${firstPid}, then ${ts.driverDomains.get('blkdd')!.pid}`);
    const wrote = [...out.matchAll(/disk: wrote (\d+)/g)].map((m) => Number(m[1]));
    assert.deepEqual(wrote, Array.from({ length: BLOCKS }, (_, i) => i + 1), `every write completed: ${out.slice(-2000)}`);
    assert.match(out, /disk: verified, 0 bad/);
    assert.equal(ts.driverDomains.get('blkdd')!.domid, dd.domid, 'the same domid');
    assert.ok(log.some((l) => /killed by SIGKILL/.test(l)), log.join('\n'));
    await ts.destroy(d.domid);
    const image = readFileSync(img);
    for (let i = 1; i <= BLOCKS; i++) assert.ok(image.subarray(i * BLOCK, (i + 1) * BLOCK).equals(pattern(i)), `block ${i} in the image`);
  } finally {
    await ts.shutdown();
    rmSync(dir, { recursive: true, force: true });
  }
});
