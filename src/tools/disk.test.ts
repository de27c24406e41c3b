// Virtual disks end to end: the toolstack writes a disk's frontend and
// backend directories as libxl does, the control domain's blkback serves it,
// and GRUB's xendisk (a 32-bit blkfront: protocol x86_32-abi, one segment per
// request) lists it, reads a file from the ext2 filesystem on it and writes
// its environment block back through it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { needsGuestCpu } from '../testing/accel.js';
import { havePeer, which } from '../testing/peers.js';
import { guest, xenodeRun } from '../testing/xenode.js';
import type { Toolstack } from './toolstack.js';

const mke2fs = which('mke2fs') ?? (existsSync('/usr/sbin/mke2fs') ? '/usr/sbin/mke2fs' : null);
const haveGrub = which('grub-mkimage') !== null && existsSync('/usr/lib/grub/i386-xen_pvh');

async function start(): Promise<Toolstack> {
  const { Toolstack } = await import('./toolstack.js');
  return Toolstack.start({ pcpus: 1, log: () => {} });
}

async function waitFor<T>(what: string, ms: number, f: () => T | undefined | null | false | Promise<T | undefined | null | false>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** An ext2 image of `files` (mke2fs -d), 4 MiB. */
function ext2Image(dir: string, files: Record<string, string | Buffer>): string {
  const root = path.join(dir, 'root');
  mkdirSync(root);
  for (const [name, data] of Object.entries(files)) writeFileSync(path.join(root, name), data);
  const img = path.join(dir, 'disk.img');
  const r = spawnSync(mke2fs!, ['-q', '-F', '-t', 'ext2', '-b', '1024', '-d', root, img, '4M']);
  assert.equal(r.status, 0, r.stderr?.toString());
  return img;
}

/** GRUB's 1024-byte environment block (grub-editenv's format) with nothing set. */
function emptyEnvBlock(): Buffer {
  const head = '# GRUB Environment Block\n';
  return Buffer.from(head + '#'.repeat(1024 - head.length), 'latin1');
}

function grubImage(dir: string, script: string): string {
  writeFileSync(path.join(dir, 'early.cfg'), script);
  const img = path.join(dir, 'grub-disk.elf');
  const mk = spawnSync('grub-mkimage', ['-O', 'i386-xen_pvh', '-o', img, '-p', '', '-c', path.join(dir, 'early.cfg'), 'echo', 'halt', 'ls', 'cat', 'ext2', 'loadenv']);
  assert.equal(mk.status, 0, mk.stderr?.toString());
  return img;
}

for (const driver of [undefined, 'storage'] as const) {
  const where = driver ? `a driver domain's blkback (backend=${driver})` : "the control domain's blkback";
  test(`GRUB's xendisk reads a file from an ext2 disk served by ${where} and writes its environment block back`, needsGuestCpu(), async (t) => {
    if (!havePeer(t, haveGrub, 'grub-mkimage -O i386-xen_pvh', 'apt-get install grub-xen-bin grub-common')) return;
    if (!havePeer(t, mke2fs !== null, 'mke2fs', 'apt-get install e2fsprogs')) return;
    const dir = mkdtempSync(path.join(tmpdir(), 'xenode-vbd-grub-'));
    const disk = ext2Image(dir, { 'hello.txt': 'hello from the disk\n', grubenv: emptyEnvBlock() });
    const kernel = grubImage(dir, [
      'ls',
      'cat (xen/xvda)/hello.txt',
      'set xenode_wrote=through-blkback',
      'save_env -f (xen/xvda)/grubenv xenode_wrote',
      'echo saved',
      'halt',
      '',
    ].join('\n'));
    const ts = await start();
    try {
      let out = '';
      const down = new Map<number, number>();
      ts.hv.on('shutdown', (domid: number, reason: number) => down.set(domid, reason));
      const d = await ts.create({ name: 'grub-disk', kernel: readFileSync(kernel), memoryMiB: 32, vcpus: 1 }, (b) => { out += Buffer.from(b).toString('latin1'); },
        { disks: [{ target: disk, vdev: 'xvda', backend: driver }] });
      const bd = driver ? ts.driverDomains.get(driver)!.domid : 0;
      // the grants a backend holds: the control domain's gntdev, or the driver domain's
      const maps = () => (driver ? ts.hv.processDomain(bd).gntdev : ts.hv.gntdev).maptrack.inUse;
      const fe = `/local/domain/${d.domid}/device/vbd/51712`, be = `/local/domain/${bd}/backend/vbd/${d.domid}/51712`;
      assert.deepEqual([...d.disks, ...d.driverDisks].map((x) => [x.devid, x.frontendPath, x.backendPath]), [[51712, fe, be]]);
      assert.equal(await ts.client.read(`${fe}/backend-id`), String(bd));
      assert.equal(await ts.client.read(`${be}/sectors`), String(4 * 1024 * 2));
      assert.equal(await ts.client.read(`${be}/sector-size`), '512');
      await waitFor('GRUB to power off', 120_000, () => down.has(d.domid)).catch((e: Error) => { throw new Error(`${e.message}; console:\n${out}`); });
      assert.equal(down.get(d.domid), 0, `poweroff:\n${out}`);
      assert.match(out, /\(xen\/xvda\)/, `ls lists the disk:\n${out}`);
      assert.match(out, /hello from the disk/, out);
      assert.doesNotMatch(out, /error/i, out);
      // GRUB spoke the 32-bit layout; halting, it leaves the device connected (only a kernel hand-over closes it)
      assert.equal(await ts.client.read(`${fe}/protocol`), 'x86_32-abi');
      assert.deepEqual([await ts.client.read(`${fe}/state`), await ts.client.read(`${be}/state`)], ['3', '4']);
      assert.equal(maps(), 1, 'the ring is mapped');
      const env = readFileSync(disk).toString('latin1');
      assert.match(env, /# GRUB Environment Block\nxenode_wrote=through-blkback\n/, 'the write reached the image');
      // destroyed: the backend lets go of the ring and its directory goes with the domain's
      await ts.destroy(d.domid);
      await waitFor('the backend to unmap the ring', 5000, () => maps() === 0);
      assert.deepEqual(await ts.client.directory(`/local/domain/${bd}/backend/vbd`), []);
    } finally {
      await ts.shutdown();
    }
  });
}

test('xenode run --disk: a read-only disk named relative to the current directory; GRUB reads it, its write is refused', needsGuestCpu(), async (t) => {
  if (!havePeer(t, haveGrub, 'grub-mkimage -O i386-xen_pvh', 'apt-get install grub-xen-bin grub-common')) return;
  if (!havePeer(t, mke2fs !== null, 'mke2fs', 'apt-get install e2fsprogs')) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'xenode-vbd-run-'));
  const disk = ext2Image(dir, { 'hello.txt': 'read-only hello\n', grubenv: emptyEnvBlock() });
  const before = readFileSync(disk);
  const kernel = grubImage(dir, 'cat (xen/xvda)/hello.txt\nset x=1\nsave_env -f (xen/xvda)/grubenv x\necho after-save\nhalt\n');
  const r = await xenodeRun([kernel, '--disk', `${path.basename(disk)},raw,xvda,ro`], { cwd: dir, timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /read-only hello/);
  assert.match(r.stdout, /error: write failed/, 'GRUB saw its write refused');
  assert.match(r.stdout, /after-save/);
  assert.ok(readFileSync(disk).equals(before), 'the image is unchanged');
  for (const [spec, why] of [['nbd:host:10809,xvda', /--disk: disk xvda: script block-nbd: block hotplug scripts are not run/], ['a.img,raw,xvd1', /--disk: .*xvd1/]] as const) {
    const bad = await xenodeRun([kernel, '--disk', spec], { cwd: dir });
    assert.equal(bad.code, 2, spec);
    assert.match(bad.stderr, why);
  }
  const dup = await xenodeRun([kernel, '--disk', 'a,,xvda', '--disk', 'b,,xvda'], { cwd: dir });
  assert.equal(dup.code, 2);
  assert.match(dup.stderr, /--disk: disk .*b: vdev 'xvda' is the same device as 'xvda'/);
});

test("a qcow2 disk through qemu-nbd: GRUB reads the file qemu-img put in it and writes its environment back into the qcow2", needsGuestCpu(), async (t) => {
  if (!havePeer(t, haveGrub, 'grub-mkimage -O i386-xen_pvh', 'apt-get install grub-xen-bin grub-common')) return;
  if (!havePeer(t, mke2fs !== null, 'mke2fs', 'apt-get install e2fsprogs')) return;
  if (!havePeer(t, which('qemu-nbd') !== null && which('qemu-img') !== null, 'qemu-nbd and qemu-img', 'apt-get install qemu-utils')) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'xenode-vbd-qcow2-'));
  const raw = ext2Image(dir, { 'hello.txt': 'hello from qcow2\n', grubenv: emptyEnvBlock() });
  const qcow2 = path.join(dir, 'disk.qcow2');
  const conv = spawnSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
  assert.equal(conv.status, 0, conv.stderr?.toString());
  const kernel = grubImage(dir, 'cat (xen/xvda)/hello.txt\nset via=qemu-nbd\nsave_env -f (xen/xvda)/grubenv via\necho saved\nhalt\n');
  const r = await xenodeRun([kernel, '--disk', `format=qcow2, vdev=xvda, target=${qcow2}`], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /hello from qcow2/);
  assert.match(r.stdout, /saved/);
  assert.doesNotMatch(r.stdout, /error/i, r.stdout);
  const back = path.join(dir, 'back.raw');
  assert.equal(spawnSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', qcow2, back]).status, 0);
  assert.match(readFileSync(back).toString('latin1'), /# GRUB Environment Block\nvia=qemu-nbd\n/, 'the write is in the qcow2');
});

test('a disk whose image cannot be opened fails the create with the disk named, and leaves nothing behind', async () => {
  const ts = await start();
  try {
    await assert.rejects(
      ts.create({ name: 'nodisk', kernel: readFileSync(guest('hello')), memoryMiB: 8, vcpus: 1 }, () => {}, { disks: [{ target: '/no/such/image.img', vdev: 'xvda' }] }),
      /disk xvda \(\/no\/such\/image\.img\): ENOENT/,
    );
    assert.deepEqual(ts.hv.list().map((x) => x.domid).filter((x) => x !== 0), []);
    assert.deepEqual(await ts.client.directory('/local/domain/0/backend/vbd').catch(() => []), []);
    await assert.rejects(
      ts.create({ name: 'badvdev', kernel: readFileSync(guest('hello')), memoryMiB: 8, vcpus: 1 }, () => {}, { disks: [{ target: '/x', vdev: 'xvd1' }] }),
      /'xvd1' is not a virtual device name/,
    );
  } finally {
    await ts.shutdown();
  }
});
