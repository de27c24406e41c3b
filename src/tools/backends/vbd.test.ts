// A vbd backend's xenbus handshake against a scripted frontend: the real
// xenstored with the frontend's own connection (its permissions apply) and
// grants that are pages of the test's XenDevices. The frontend side follows
// what Linux's blkfront and GRUB's xendisk write, in their order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Xenstored, LocalClient } from '../xenstored/index.js';
import type { XenDevices, GrantCopySide } from '../libs/devices.js';
import { writeVbdNodes } from '../disk.js';
import { VbdBackend } from './vbd.js';
import { BlkifFrontRing, BLKIF_OP_READ, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY, PAGE_SIZE, VDISK_READONLY } from './blkif.js';

const FRONT = 7;
const FE = `/local/domain/${FRONT}/device/vbd/51712`;
const BE = `/local/domain/0/backend/vbd/${FRONT}/51712`;

async function until<T>(what: string, f: () => Promise<T | undefined | false>): Promise<T> {
  const end = Date.now() + 5000;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

interface Bound { domid: number; remote: number; local: number; onEvent: () => void }

function fakeDevices(xs: LocalClient, grants: Map<number, Uint8Array>) {
  const bound: Bound[] = [];
  const mapped = new Set<number>();
  let nextHandle = 0, nextPort = 20;
  const side = (s: GrantCopySide, len: number): Uint8Array | number => {
    if ('buf' in s) return s.buf.subarray(s.offset, s.offset + len);
    const p = s.domid === FRONT ? grants.get(s.ref) : undefined;
    return p ? p.subarray(s.offset, s.offset + len) : -3;
  };
  const devices: XenDevices = {
    domid: 0,
    xenstore: xs,
    evtchn: {
      allocUnbound: async () => { throw new Error('a backend binds its frontend\'s ports; it allocates none'); },
      bindInterdomain: async (domid, remote, onEvent) => {
        // the frontend's unbound ports are 5..8
        if (domid !== FRONT || remote < 5 || remote > 8) throw new Error('EINVAL');
        const local = nextPort++;
        bound.push({ domid, remote, local, onEvent });
        return local;
      },
      notify: () => {},
      unbind: (port) => { bound.splice(bound.findIndex((b) => b.local === port), 1); },
    },
    gnttab: {
      copy: async (ops) => ops.map((op) => {
        const s = side(op.source, op.len), d = side(op.dest, op.len);
        if (typeof s === 'number') return s;
        if (typeof d === 'number') return d;
        d.set(s);
        return 0;
      }),
      map: async (domid, ref, readonly) => {
        const page = domid === FRONT ? grants.get(ref) : undefined;
        if (!page) return -3; // GNTST_bad_gntref
        const handle = nextHandle++;
        mapped.add(handle);
        return { handle, domid, ref, readonly, page };
      },
      unmap: async (h) => (mapped.delete(h) ? 0 : -4),
      allocBuffer: (n) => new Uint8Array(n),
    },
    close: () => {},
  };
  return { devices, bound, mapped };
}

async function setup(o: { readOnly?: boolean; maxQueues?: number; discard?: boolean } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'xenode-vbd-'));
  const img = path.join(dir, 'disk.img');
  const data = Buffer.alloc(16 * 512);
  for (let s = 0; s < 16; s++) data.fill(0x40 + s, s * 512, s * 512 + 512);
  writeFileSync(img, data);
  const xs = new Xenstored({ log: () => {} });
  await xs.start();
  const dom0 = new LocalClient(xs, 0);
  await dom0.write(`/local/domain/${FRONT}`, '');
  await dom0.setPerms(`/local/domain/${FRONT}`, [`n${FRONT}`]);
  await writeVbdNodes(dom0, FRONT, 0, [{ target: img, vdev: 'xvda', readOnly: o.readOnly, discard: o.discard }]);
  const backendXs = new LocalClient(xs, 0);
  const front = new LocalClient(xs, FRONT);
  const grants = new Map<number, Uint8Array>(Array.from({ length: 12 }, (_, i) => [i, new Uint8Array(PAGE_SIZE)]));
  const f = fakeDevices(backendXs, grants);
  const log: string[] = [];
  const backend = await VbdBackend.start({ devices: f.devices, path: BE, log: (l) => log.push(l), maxQueues: o.maxQueues });
  const state = (p: string) => dom0.read(`${p}/state`);
  const close = async () => {
    await backend.close();
    for (const c of [front, backendXs, dom0]) c.close();
    await xs.stop();
  };
  return { xs, dom0, front, grants, backend, state, close, log, ...f };
}

/** What a frontend publishes before it says Initialised (blkfront's talk_to_blkback). */
async function publish(front: LocalClient, ref: string, port: string, protocol?: string) {
  await front.transaction(async (tx) => {
    await front.write(`${FE}/ring-ref`, ref, tx);
    await front.write(`${FE}/event-channel`, port, tx);
    if (protocol) await front.write(`${FE}/protocol`, protocol, tx);
  });
  await front.write(`${FE}/state`, '3');
}

test('the backend publishes the disk and waits in InitWait; the frontend can read its directory and write only its own', async () => {
  const s = await setup();
  try {
    assert.equal(await s.state(BE), '2');
    assert.deepEqual(
      await Promise.all(['sectors', 'sector-size', 'info', 'feature-flush-cache', 'feature-max-indirect-segments', 'hotplug-status', 'mode', 'dev', 'frontend'].map((k) => s.front.read(`${BE}/${k}`))),
      ['16', '512', '0', '1', '256', 'connected', 'w', 'xvda', FE]);
    assert.deepEqual([await s.front.read(`${FE}/backend`), await s.front.read(`${FE}/backend-id`), await s.front.read(`${FE}/virtual-device`)], [BE, '0', '51712']);
    assert.deepEqual(
      await Promise.all(['discard-enable', 'feature-discard', 'discard-granularity', 'discard-alignment', 'discard-secure', 'max-ring-page-order'].map((k) => s.front.read(`${BE}/${k}`))),
      ['1', '1', '4096', '0', '0', '4']);
    await assert.rejects(s.front.write(`${BE}/state`, '4'), /EACCES/);
  } finally {
    await s.close();
  }
});

test('Initialised: the ring is mapped, the port bound, Connected; requests are served; Closing, Closed, and a new frontend finds InitWait again', async () => {
  const s = await setup();
  try {
    await publish(s.front, '0', '5', 'x86_32-abi');
    await until('Connected', async () => (await s.state(BE)) === '4');
    assert.equal(s.bound.length, 1);
    assert.equal(s.mapped.size, 1);
    // a read of sector 3 into gref 1, through the mapped ring
    const ring = new BlkifFrontRing(s.grants.get(0)!, 'x86_32-abi');
    ring.put({ operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: 77n, sectorNumber: 3n, segments: [{ gref: 1, firstSect: 0, lastSect: 0 }] });
    ring.push();
    s.bound[0]!.onEvent();
    const rs = await until('the response', async () => { const r = ring.responses(); return r.length ? r : undefined; });
    assert.deepEqual(rs, [{ id: 77n, operation: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
    assert.equal(s.grants.get(1)![0], 0x43);
    // the frontend closes: so does the backend, letting go of the ring and the port
    await s.front.write(`${FE}/state`, '5');
    await until('Closing', async () => (await s.state(BE)) === '5');
    assert.deepEqual([s.bound.length, s.mapped.size], [0, 0]);
    await s.front.write(`${FE}/state`, '6');
    await until('Closed', async () => (await s.state(BE)) === '6');
    // the next frontend (GRUB's kernel after GRUB) starts over and connects in the 64-bit layout
    await s.front.write(`${FE}/state`, '1');
    await until('InitWait', async () => (await s.state(BE)) === '2');
    s.grants.get(0)!.fill(0);
    await publish(s.front, '0', '5', 'x86_64-abi');
    await until('Connected again', async () => (await s.state(BE)) === '4');
    const ring64 = new BlkifFrontRing(s.grants.get(0)!, 'x86_64-abi');
    ring64.put({ operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: 78n, sectorNumber: 9n, segments: [{ gref: 1, firstSect: 1, lastSect: 1 }] });
    ring64.push();
    s.bound[0]!.onEvent();
    await until('the second response', async () => ring64.responses().length === 1);
    assert.equal(s.grants.get(1)![512], 0x49);
  } finally {
    await s.close();
  }
});

test('feature-persistent: each grant a request names is mapped once and kept; the data moves through the mapping; a grant that cannot be mapped goes by copy; Closing unmaps them', async () => {
  const s = await setup();
  try {
    assert.equal(await s.dom0.read(`${BE}/feature-persistent`), '1', 'offered');
    await s.front.write(`${FE}/feature-persistent`, '1');
    await publish(s.front, '0', '5', 'x86_64-abi');
    await until('Connected', async () => (await s.state(BE)) === '4');
    assert.equal(s.backend.lastConnection?.persistent, true);
    const ring = new BlkifFrontRing(s.grants.get(0)!, 'x86_64-abi');
    const serve = async (id: bigint) => {
      ring.push();
      s.bound[0]!.onEvent();
      return until(`response ${id}`, async () => { const r = ring.responses(); return r.length ? r : undefined; });
    };
    // a read into grants 1 and 2 (sectors 4 and 5): both mapped, the ring's mapping besides
    ring.put({ operation: BLKIF_OP_READ, nrSegments: 2, handle: 0, id: 1n, sectorNumber: 4n, segments: [{ gref: 1, firstSect: 0, lastSect: 0 }, { gref: 2, firstSect: 3, lastSect: 3 }] });
    assert.deepEqual(await serve(1n), [{ id: 1n, operation: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
    assert.deepEqual([s.grants.get(1)![0], s.grants.get(2)![3 * 512]], [0x44, 0x45]);
    assert.equal(s.mapped.size, 3);
    // the same grants again: no new mapping; grant 40 was never given, so that segment fails as with copy
    ring.put({ operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: 2n, sectorNumber: 9n, segments: [{ gref: 2, firstSect: 0, lastSect: 0 }] });
    assert.deepEqual(await serve(2n), [{ id: 2n, operation: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
    assert.equal(s.grants.get(2)![0], 0x49);
    assert.equal(s.mapped.size, 3);
    ring.put({ operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: 3n, sectorNumber: 0n, segments: [{ gref: 40, firstSect: 0, lastSect: 0 }] });
    assert.deepEqual(await serve(3n), [{ id: 3n, operation: BLKIF_OP_READ, status: BLKIF_RSP_ERROR }]);
    assert.equal(s.backend.stats.persistentSegs, 3);
    // the frontend closes: every persistent mapping goes with the ring's
    await s.front.write(`${FE}/state`, '5');
    await until('Closing', async () => (await s.state(BE)) === '5');
    assert.deepEqual([s.bound.length, s.mapped.size], [0, 0]);
  } finally {
    await s.close();
  }
});

for (const [what, ref, port, protocol, reason] of [
  ['a ring-ref that is not a number', 'x', '5', undefined, /ring-ref: 'x' is not a grant reference/],
  ['a ring-ref the frontend did not grant', '99', '5', undefined, /mapping ring-ref 99 port 5: GNTST -3/],
  ['an event channel that cannot be bound', '0', '9', undefined, /binding event-channel 9/],
  ['an unknown protocol', '0', '5', 'arm-abi', /unknown fe protocol arm-abi/],
] as const) {
  test(`${what}: the backend says why in its error node and closes, holding nothing`, async () => {
    const s = await setup();
    try {
      await publish(s.front, ref, port, protocol);
      await until('Closing', async () => (await s.state(BE)) === '5');
      assert.match(await s.front.read(`${BE}/error`), reason);
      assert.deepEqual([s.bound.length, s.mapped.size], [0, 0]);
      assert.match(s.log.join('\n'), reason);
    } finally {
      await s.close();
    }
  });
}

/** Linux's talk_to_blkback with several queues: multi-queue-num-queues and queue-N/{ring-ref,event-channel}. */
async function publishQueues(front: LocalClient, queues: { ref?: string | string[]; port: string }[], num = String(queues.length), order?: string) {
  await front.transaction(async (tx) => {
    if (num !== '1') await front.write(`${FE}/multi-queue-num-queues`, num, tx);
    if (order !== undefined) await front.write(`${FE}/ring-page-order`, order, tx);
    for (const [i, q] of queues.entries()) {
      const dir = num === '1' ? FE : `${FE}/queue-${i}`;
      if (typeof q.ref === 'string') await front.write(`${dir}/ring-ref`, q.ref, tx);
      // blkfront's write_per_ring_nodes with more than one page
      if (Array.isArray(q.ref)) for (const [j, r] of q.ref.entries()) await front.write(`${dir}/ring-ref${j}`, r, tx);
      await front.write(`${dir}/event-channel`, q.port, tx);
    }
    await front.write(`${FE}/protocol`, 'x86_64-abi', tx);
  });
  await front.write(`${FE}/state`, '3');
}

test('multi-queue: each queue-N gets its ring mapped, its port bound and its own service; Closing releases them all', async () => {
  const s = await setup({ maxQueues: 3 });
  try {
    assert.equal(await s.front.read(`${BE}/multi-queue-max-queues`), '3');
    await publishQueues(s.front, [{ ref: '0', port: '5' }, { ref: '2', port: '6' }, { ref: '3', port: '7' }]);
    await until('Connected', async () => (await s.state(BE)) === '4');
    assert.deepEqual([s.bound.map((b) => b.remote), s.mapped.size], [[5, 6, 7], 3]);
    // a read on queue 2 answered on queue 2's ring, another on queue 1's
    const rings = [2, 3].map((ref) => new BlkifFrontRing(s.grants.get(ref)!, 'x86_64-abi'));
    rings.forEach((ring, i) => {
      ring.put({ operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: BigInt(100 + i), sectorNumber: BigInt(4 + i), segments: [{ gref: 8 + i, firstSect: 0, lastSect: 0 }] });
      ring.push();
      s.bound[1 + i]!.onEvent();
    });
    for (const [i, ring] of rings.entries()) {
      const rs = await until(`queue ${i + 1}'s response`, async () => { const r = ring.responses(); return r.length ? r : undefined; });
      assert.deepEqual(rs, [{ id: BigInt(100 + i), operation: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
      assert.equal(s.grants.get(8 + i)![0], 0x44 + i);
    }
    await s.front.write(`${FE}/state`, '5');
    await until('Closing', async () => (await s.state(BE)) === '5');
    assert.deepEqual([s.bound.length, s.mapped.size], [0, 0]);
  } finally {
    await s.close();
  }
});

for (const [what, queues, num, reason] of [
  ['more queues than offered', [{ ref: '0', port: '5' }, { ref: '2', port: '6' }, { ref: '3', port: '7' }], '3', /guest requested 3 queues, exceeding the maximum of 2/],
  ['zero queues', [{ ref: '0', port: '5' }], '0', /guest requested 0 queues/],
  ['a queue count that is not a number', [{ ref: '0', port: '5' }], 'two', /guest requested two queues/],
  ['a second queue without its ring-ref', [{ ref: '0', port: '5' }, { port: '6' }], '2', /queue-1\/ring-ref: '' is not a grant reference/],
  ['a second queue whose port cannot be bound', [{ ref: '0', port: '5' }, { ref: '2', port: '9' }], '2', /binding event-channel 9/],
] as const) {
  test(`multi-queue, ${what}: the device closes with the reason, holding nothing`, async () => {
    const s = await setup({ maxQueues: 2 });
    try {
      await publishQueues(s.front, [...queues], num);
      await until('Closing', async () => (await s.state(BE)) === '5');
      assert.match(await s.front.read(`${BE}/error`), reason);
      assert.deepEqual([s.bound.length, s.mapped.size], [0, 0]);
    } finally {
      await s.close();
    }
  });
}

test('multi-page rings: ring-page-order and ring-ref0.. map every page as one ring, alone or with several queues (io/blkif.h\'s example)', async () => {
  const s = await setup({ maxQueues: 2 });
  try {
    assert.equal(await s.front.read(`${BE}/max-ring-page-order`), '4');
    await publishQueues(s.front, [{ ref: ['0', '2', '3', '4'], port: '5' }], '1', '2');
    await until('Connected', async () => (await s.state(BE)) === '4');
    assert.equal(s.mapped.size, 4);
    const ring = new BlkifFrontRing([0, 2, 3, 4].map((r) => s.grants.get(r)!), 'x86_64-abi');
    assert.equal(ring.size, 128);
    // past the first page's slots, so that the backend reads and answers in the later pages
    for (let i = 0; i < 40; i++) ring.put({ operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: BigInt(i), sectorNumber: BigInt(i % 16), segments: [{ gref: 8, firstSect: 0, lastSect: 0 }] });
    ring.push();
    s.bound[0]!.onEvent();
    const rs: ReturnType<BlkifFrontRing['responses']> = [];
    await until('40 responses', async () => { rs.push(...ring.responses()); return rs.length >= 40; });
    // several are served at once: answered in completion order, each once, by id
    assert.deepEqual(rs.map((r) => [r.id, r.status]).sort((a, b) => Number(a[0]) - Number(b[0])), Array.from({ length: 40 }, (_, i) => [BigInt(i), BLKIF_RSP_OKAY]));
    ring.put({ operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: 40n, sectorNumber: 5n, segments: [{ gref: 8, firstSect: 0, lastSect: 0 }] });
    ring.push();
    s.bound[0]!.onEvent();
    await until('the 41st response', async () => ring.responses().length === 1);
    assert.equal(s.grants.get(8)![0], 0x45);
    await s.front.write(`${FE}/state`, '6');
    await until('Closed', async () => (await s.state(BE)) === '6');
    assert.equal(s.mapped.size, 0);
    // a new frontend with two queues of two pages each
    await s.front.write(`${FE}/state`, '1');
    await until('InitWait', async () => (await s.state(BE)) === '2');
    for (const r of [0, 2, 3, 4]) s.grants.get(r)!.fill(0);
    await publishQueues(s.front, [{ ref: ['0', '2'], port: '5' }, { ref: ['3', '4'], port: '6' }], '2', '1');
    await until('Connected again', async () => (await s.state(BE)) === '4');
    assert.deepEqual([s.bound.length, s.mapped.size], [2, 4]);
    const q1 = new BlkifFrontRing([s.grants.get(3)!, s.grants.get(4)!], 'x86_64-abi');
    q1.put({ operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: 7n, sectorNumber: 5n, segments: [{ gref: 9, firstSect: 0, lastSect: 0 }] });
    q1.push();
    s.bound[1]!.onEvent();
    await until('queue 1\'s response', async () => q1.responses().length === 1);
    assert.equal(s.grants.get(9)![0], 0x45);
    assert.deepEqual(s.backend.lastConnection, { protocol: 'x86_64-abi', queues: 2, ringPages: 2, persistent: false });
    assert.equal(s.backend.stats.rdReq, 42);
  } finally {
    await s.close();
  }
});

for (const [what, ref, order, reason] of [
  ['a ring-page-order past max-ring-page-order', ['0', '2'], '5', /ring-page-order: '5' exceeds max-ring-page-order 4/],
  ['a ring-page-order that is not a number', ['0', '2'], 'x', /ring-page-order: 'x'/],
  ['a ring-ref1 missing', ['0'], '1', /ring-ref1: '' is not a grant reference/],
  ['a ring-ref1 the frontend did not grant', ['0', '99'], '1', /mapping ring-ref 0,99 port 5: GNTST -3/],
] as const) {
  test(`multi-page ring, ${what}: the device closes with the reason, holding nothing`, async () => {
    const s = await setup();
    try {
      await publishQueues(s.front, [{ ref: [...ref], port: '5' }], '1', order);
      await until('Closing', async () => (await s.state(BE)) === '5');
      assert.match(await s.front.read(`${BE}/error`), reason);
      assert.deepEqual([s.bound.length, s.mapped.size], [0, 0]);
    } finally {
      await s.close();
    }
  });
}

test('no-discard (discard-enable 0): feature-discard 0', async () => {
  const s = await setup({ discard: false });
  try {
    assert.deepEqual([await s.front.read(`${BE}/discard-enable`), await s.front.read(`${BE}/feature-discard`)], ['0', '0']);
  } finally {
    await s.close();
  }
});

test('a state node that is not a state is ignored; a read-only disk says so in info', async () => {
  const s = await setup({ readOnly: true });
  try {
    assert.deepEqual([await s.front.read(`${BE}/mode`), await s.front.read(`${BE}/info`)], ['r', String(VDISK_READONLY)]);
    // nothing to discard on a read-only disk
    assert.deepEqual([await s.front.read(`${BE}/discard-enable`), await s.front.read(`${BE}/feature-discard`), await s.front.tryRead(`${BE}/discard-granularity`)], ['0', '0', undefined]);
    await s.front.write(`${FE}/state`, 'banana');
    await sleep(50);
    assert.equal(await s.state(BE), '2');
  } finally {
    await s.close();
  }
});

test('a backend directory naming an image that is not there: start fails, hotplug-status says error', async () => {
  const xs = new Xenstored({ log: () => {} });
  await xs.start();
  const dom0 = new LocalClient(xs, 0);
  try {
    await writeVbdNodes(dom0, FRONT, 0, [{ target: '/no/such.img', vdev: 'xvda' }]);
    const f = fakeDevices(dom0, new Map());
    await assert.rejects(VbdBackend.start({ devices: f.devices, path: BE }), /ENOENT/);
    assert.equal(await dom0.read(`${BE}/hotplug-status`), 'error');
    assert.match(await dom0.read(`${BE}/hotplug-error`), /ENOENT/);
    assert.equal(await dom0.read(`${BE}/state`), '1');
  } finally {
    dom0.close();
    await xs.stop();
  }
});
