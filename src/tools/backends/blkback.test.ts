// blkback's request path against a hand-written frontend: the frontend's
// grants are pages of a test XenDevices whose copy checks refs, bounds and
// read-only grants as GNTTABOP_copy does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { XenDevices, GrantCopySide } from '../libs/devices.js';
import type { XsClientBase } from '../xenstored/client.js';
import { FileImage } from './image.js';
import { BlkifService } from './blkback.js';
import {
  BlkifBackRing, BlkifFrontRing, BlkifProtocol, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_RSP_OKAY,
  BLKIF_RSP_ERROR, BLKIF_RSP_EOPNOTSUPP, BLKIF_OP_INDIRECT, BLKIF_OP_DISCARD, BLKIF_DISCARD_SECURE, MAX_INDIRECT_SEGMENTS, PAGE_SIZE, writeSegment,
  type BlkifSegment,
} from './blkif.js';

const FRONT = 7;
const GNTST_bad_gntref = -3;

function testDevices(grants: Map<number, Uint8Array>, notified: number[]): XenDevices {
  const side = (s: GrantCopySide, len: number): Uint8Array | number => {
    if ('buf' in s) return s.buf.subarray(s.offset, s.offset + len);
    const p = s.domid === FRONT ? grants.get(s.ref) : undefined;
    if (!p || s.offset + len > PAGE_SIZE) return GNTST_bad_gntref;
    return p.subarray(s.offset, s.offset + len);
  };
  return {
    domid: 0,
    xenstore: null as unknown as XsClientBase,
    evtchn: { bindInterdomain: async () => 1, allocUnbound: async () => { throw new Error('a backend binds its frontend\'s ports; it allocates none'); }, notify: (p) => notified.push(p), unbind: () => {} },
    gnttab: {
      copy: async (ops) => ops.map((op) => {
        const s = side(op.source, op.len), d = side(op.dest, op.len);
        if (typeof s === 'number') return s;
        if (typeof d === 'number') return d;
        d.set(s);
        return 0;
      }),
      map: async () => -1,
      unmap: async () => -4,
      allocBuffer: (n) => new Uint8Array(n),
    },
    close: () => {},
  };
}

interface SetupOptions { readOnly?: boolean; log?: (line: string) => void; sectors?: number; ringPages?: number; discard?: boolean }

async function setup(protocol: BlkifProtocol, { readOnly = false, log, sectors = 64, ringPages = 1, discard = false }: SetupOptions = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'xenode-blkback-'));
  const file = path.join(dir, 'disk.img');
  const img = Buffer.alloc(sectors * 512);
  for (let s = 0; s < sectors; s++) img.fill(s & 0xff, s * 512, s * 512 + 512);
  writeFileSync(file, img);
  const image = await FileImage.open(file, readOnly);
  const ringPage = Array.from({ length: ringPages }, () => new Uint8Array(PAGE_SIZE));
  const grants = new Map<number, Uint8Array>([[0, new Uint8Array(PAGE_SIZE)], [1, new Uint8Array(PAGE_SIZE)]]);
  const notified: number[] = [];
  const svc = new BlkifService({ devices: testDevices(grants, notified), frontDomid: FRONT, ring: new BlkifBackRing(ringPage, protocol), port: 5, image, sectors: BigInt(sectors), readOnly, discard, log });
  const front = new BlkifFrontRing(ringPage, protocol);
  const submit = async (...reqs: Parameters<BlkifFrontRing['put']>[0][]) => {
    for (const r of reqs) front.put(r);
    front.push();
    svc.kick();
    await svc.idle;
    // requests are served several at a time: responses come in completion order, matched by id
    return front.responses().sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  };
  return { file, image, grants, notified, svc, front, submit };
}

/** An indirect page granted as `ref`, holding `segs` (blkfront's blkif_setup_rw_req_grant). */
function indirectPage(grants: Map<number, Uint8Array>, ref: number, segs: BlkifSegment[]): void {
  const page = new Uint8Array(PAGE_SIZE);
  const v = new DataView(page.buffer);
  segs.forEach((sg, i) => writeSegment(v, i * 8, sg));
  grants.set(ref, page);
}

for (const protocol of ['x86_32-abi', 'x86_64-abi'] as const) {
  test(`${protocol}: reads and writes move sectors between the image and granted pages, answered by id`, async () => {
    const { file, image, grants, notified, submit } = await setup(protocol);
    // one segment of sectors 2..3 of gref 0 (GRUB's kind of request), then two segments across grefs 0 and 1
    let rs = await submit({ operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: 0x1122334455667788n, sectorNumber: 10n, segments: [{ gref: 0, firstSect: 2, lastSect: 3 }] });
    assert.deepEqual(rs, [{ id: 0x1122334455667788n, operation: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
    assert.deepEqual([grants.get(0)![1023], grants.get(0)![1024], grants.get(0)![2047], grants.get(0)![2048]], [0, 10, 11, 0]);
    assert.deepEqual(notified, [5]);
    grants.get(1)!.fill(0xab, 0, 512);
    grants.get(0)!.fill(0xcd, 7 * 512);
    rs = await submit({ operation: BLKIF_OP_WRITE, nrSegments: 2, handle: 0, id: 2n, sectorNumber: 20n, segments: [{ gref: 0, firstSect: 7, lastSect: 7 }, { gref: 1, firstSect: 0, lastSect: 0 }] });
    assert.deepEqual(rs.map((r) => r.status), [BLKIF_RSP_OKAY]);
    rs = await submit({ operation: BLKIF_OP_FLUSH_DISKCACHE, nrSegments: 0, handle: 0, id: 3n, sectorNumber: 0n, segments: [] });
    assert.deepEqual(rs, [{ id: 3n, operation: BLKIF_OP_FLUSH_DISKCACHE, status: BLKIF_RSP_OKAY }]);
    // a flush with data (Linux's FUA/PREFLUSH writes) is a write too
    grants.get(1)!.fill(0xef, 512, 1024);
    rs = await submit({ operation: BLKIF_OP_FLUSH_DISKCACHE, nrSegments: 1, handle: 0, id: 4n, sectorNumber: 30n, segments: [{ gref: 1, firstSect: 1, lastSect: 1 }] });
    assert.deepEqual(rs, [{ id: 4n, operation: BLKIF_OP_FLUSH_DISKCACHE, status: BLKIF_RSP_OKAY }]);
    await image.close();
    const disk = readFileSync(file);
    assert.deepEqual([disk[19 * 512 + 511], disk[20 * 512], disk[21 * 512], disk[22 * 512]], [19, 0xcd, 0xab, 22]);
    assert.deepEqual([disk[29 * 512 + 511], disk[30 * 512], disk[30 * 512 + 511], disk[31 * 512]], [29, 0xef, 0xef, 31]);
  });

  test(`${protocol}: hostile requests get BLKIF_RSP_ERROR and the ring goes on`, async () => {
    const { image, submit, grants } = await setup(protocol);
    const seg = { gref: 0, firstSect: 0, lastSect: 0 };
    const rs = await submit(
      { operation: BLKIF_OP_READ, nrSegments: 0, handle: 0, id: 1n, sectorNumber: 0n, segments: [] },
      { operation: BLKIF_OP_READ, nrSegments: 12, handle: 0, id: 2n, sectorNumber: 0n, segments: Array(11).fill(seg) },
      { operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: 3n, sectorNumber: 64n, segments: [seg] },
      { operation: BLKIF_OP_READ, nrSegments: 2, handle: 0, id: 4n, sectorNumber: 63n, segments: [seg, seg] },
      { operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: 5n, sectorNumber: 0xffffffffffffffffn, segments: [seg] },
      { operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: 6n, sectorNumber: 0n, segments: [{ gref: 99, firstSect: 0, lastSect: 0 }] },
      { operation: BLKIF_OP_WRITE, nrSegments: 1, handle: 0, id: 7n, sectorNumber: 0n, segments: [{ gref: 0, firstSect: 3, lastSect: 2 }] },
      { operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: 8n, sectorNumber: 0n, segments: [{ gref: 0, firstSect: 0, lastSect: 8 }] },
      { operation: 42, nrSegments: 1, handle: 0, id: 9n, sectorNumber: 0n, segments: [seg] },
      { operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: 10n, sectorNumber: 63n, segments: [seg] },
    );
    const E = BLKIF_RSP_ERROR;
    assert.deepEqual(rs.map((r) => [r.id, r.status]), [[1n, E], [2n, E], [3n, E], [4n, E], [5n, E], [6n, E], [7n, E], [8n, E], [9n, BLKIF_RSP_EOPNOTSUPP], [10n, BLKIF_RSP_OKAY]]);
    assert.equal(grants.get(0)![0], 63);
    await image.close();
  });

  test(`${protocol}: a read-only disk refuses writes and serves reads`, async () => {
    const { image, submit } = await setup(protocol, { readOnly: true });
    const seg = { gref: 1, firstSect: 0, lastSect: 0 };
    const rs = await submit({ operation: BLKIF_OP_WRITE, nrSegments: 1, handle: 0, id: 1n, sectorNumber: 0n, segments: [seg] },
      { operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: 2n, sectorNumber: 0n, segments: [seg] });
    assert.deepEqual(rs.map((r) => r.status), [BLKIF_RSP_ERROR, BLKIF_RSP_OKAY]);
    await image.close();
  });

  test(`${protocol}: indirect requests: segments from granted indirect pages, up to MAX_INDIRECT_SEGMENTS, answered with their operation`, async () => {
    const { file, image, grants, submit, svc } = await setup(protocol, { sectors: 512 });
    // 20 one-sector segments (more than a ring slot holds), each from a page of its own, written at sector 10
    const segs: BlkifSegment[] = [];
    for (let i = 0; i < 20; i++) {
      const page = new Uint8Array(PAGE_SIZE);
      page.fill(0x80 + i, (i % 8) * 512, (i % 8) * 512 + 512);
      grants.set(100 + i, page);
      segs.push({ gref: 100 + i, firstSect: i % 8, lastSect: i % 8 });
    }
    indirectPage(grants, 50, segs);
    let rs = await submit({ operation: BLKIF_OP_INDIRECT, indirectOp: BLKIF_OP_WRITE, nrSegments: 20, handle: 0, id: 0xabcdn, sectorNumber: 10n, segments: [], indirectGrefs: [50] });
    assert.deepEqual(rs, [{ id: 0xabcdn, operation: BLKIF_OP_WRITE, status: BLKIF_RSP_OKAY }]);
    // read sectors 9..264 back: 256 segments, one sector each, into 32 pages at every sector
    const rsegs: BlkifSegment[] = [];
    for (let i = 0; i < MAX_INDIRECT_SEGMENTS; i++) {
      if (i % 8 === 0) grants.set(200 + i / 8, new Uint8Array(PAGE_SIZE));
      rsegs.push({ gref: 200 + Math.floor(i / 8), firstSect: i % 8, lastSect: i % 8 });
    }
    indirectPage(grants, 51, rsegs);
    rs = await submit({ operation: BLKIF_OP_INDIRECT, indirectOp: BLKIF_OP_READ, nrSegments: MAX_INDIRECT_SEGMENTS, handle: 0, id: 2n, sectorNumber: 9n, segments: [], indirectGrefs: [51] });
    assert.deepEqual(rs, [{ id: 2n, operation: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
    const back = (sector: number) => grants.get(200 + Math.floor((sector - 9) / 8))![((sector - 9) % 8) * 512];
    assert.deepEqual([back(9), back(10), back(29), back(30), back(264)], [9, 0x80, 0x80 + 19, 30, 264 & 0xff]);
    assert.deepEqual([svc.stats.indirectReq, svc.stats.maxSegments, svc.stats.wrSect, svc.stats.rdSect], [2, MAX_INDIRECT_SEGMENTS, 20, MAX_INDIRECT_SEGMENTS]);
    await image.close();
    const disk = readFileSync(file);
    assert.deepEqual([disk[10 * 512], disk[29 * 512 + 511], disk[30 * 512]], [0x80, 0x80 + 19, 30]);
  });

  test(`${protocol}: hostile indirect requests get BLKIF_RSP_ERROR`, async () => {
    const { image, grants, submit } = await setup(protocol, { sectors: 512 });
    grants.set(100, new Uint8Array(PAGE_SIZE));
    const one = (i: number): BlkifSegment => ({ gref: 100, firstSect: i % 8, lastSect: i % 8 });
    indirectPage(grants, 50, Array.from({ length: 300 }, (_, i) => one(i)));
    indirectPage(grants, 51, [one(0), { gref: 100, firstSect: 5, lastSect: 4 }]);
    indirectPage(grants, 52, [one(0), { gref: 999, firstSect: 0, lastSect: 0 }]);
    indirectPage(grants, 53, [{ gref: 100, firstSect: 0, lastSect: 8 }]);
    const ind = (id: bigint, indirectOp: number, nrSegments: number, ref: number, sectorNumber = 0n) =>
      ({ operation: BLKIF_OP_INDIRECT, indirectOp, nrSegments, handle: 0, id, sectorNumber, segments: [], indirectGrefs: [ref] });
    const rs = await submit(
      ind(1n, BLKIF_OP_FLUSH_DISKCACHE, 1, 50), // only reads and writes are indirect
      ind(2n, 42, 1, 50),
      ind(3n, BLKIF_OP_READ, 0, 50),
      ind(4n, BLKIF_OP_READ, MAX_INDIRECT_SEGMENTS + 1, 50),
      ind(5n, BLKIF_OP_READ, 0xffff, 50),
      ind(6n, BLKIF_OP_READ, 2, 51), // first_sect > last_sect
      ind(7n, BLKIF_OP_READ, 2, 52), // a data grant the frontend did not give
      ind(8n, BLKIF_OP_READ, 1, 53), // last_sect past the page
      ind(9n, BLKIF_OP_READ, 1, 999), // an indirect page it did not give
      ind(10n, BLKIF_OP_READ, 2, 50, 511n), // past the end of the disk
      ind(11n, BLKIF_OP_READ, 11, 50, 501n), // and the ring goes on
    );
    const E = BLKIF_RSP_ERROR;
    assert.deepEqual(rs.map((r) => [r.id, r.operation, r.status]), [
      [1n, BLKIF_OP_FLUSH_DISKCACHE, E], [2n, 42, E], [3n, BLKIF_OP_READ, E], [4n, BLKIF_OP_READ, E], [5n, BLKIF_OP_READ, E],
      [6n, BLKIF_OP_READ, E], [7n, BLKIF_OP_READ, E], [8n, BLKIF_OP_READ, E], [9n, BLKIF_OP_READ, E], [10n, BLKIF_OP_READ, E],
      [11n, BLKIF_OP_READ, BLKIF_RSP_OKAY]]);
    assert.equal(grants.get(100)![7 * 512], (501 + 7) & 0xff);
    await image.close();
  });

  test(`${protocol}: a ring of 4 pages: 128 slots, slots across page boundaries, wrapping around`, async () => {
    const { image, grants, submit, front } = await setup(protocol, { ringPages: 4 });
    assert.equal(front.size, 128);
    for (let batch = 0; batch < 3; batch++) {
      const reqs = Array.from({ length: 100 }, (_, k) => {
        const i = batch * 100 + k;
        return { operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: BigInt(i), sectorNumber: BigInt(i % 64), segments: [{ gref: i % 2, firstSect: i % 8, lastSect: i % 8 }] };
      });
      const rs = await submit(...reqs);
      assert.deepEqual(rs, reqs.map((r) => ({ id: r.id, operation: BLKIF_OP_READ, status: BLKIF_RSP_OKAY })));
    }
    // the last two reads: 298 (sector 42 into gref 0 at 2) and 299 (sector 43 into gref 1 at 3)
    assert.deepEqual([grants.get(0)![2 * 512], grants.get(1)![3 * 512]], [42, 43]);
    await image.close();
  });

  test(`${protocol}: discard gives the sectors back: they read as zeros, the rest is untouched; bounds checked`, async () => {
    const { file, image, submit } = await setup(protocol, { sectors: 512, discard: true });
    const disc = (id: bigint, sectorNumber: bigint, nrSectors: bigint, flag = 0) => ({ operation: BLKIF_OP_DISCARD, nrSegments: 0, handle: 0, id, sectorNumber, segments: [], nrSectors, flag });
    const rs = await submit(
      disc(1n, 8n, 16n), // a whole 4 KiB block and more
      disc(2n, 101n, 3n, BLKIF_DISCARD_SECURE), // part of a block; discard-secure is 0, so the flag asks for nothing more
      disc(3n, 500n, 12n), // up to the end
      disc(4n, 500n, 13n), // past it
      disc(5n, 513n, 0n),
      disc(6n, 1n, 0xffffffffffffffffn),
      disc(7n, 0xfffffffffffffff0n, 0x20n), // wraps
      disc(8n, 0n, 0n),
    );
    const E = BLKIF_RSP_ERROR, OK = BLKIF_RSP_OKAY;
    assert.deepEqual(rs.map((r) => [r.id, r.operation, r.status]), [1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n].map((id, i) => [id, BLKIF_OP_DISCARD, [OK, OK, OK, E, E, E, E, OK][i]]));
    await image.close();
    const disk = readFileSync(file);
    assert.equal(disk.length, 512 * 512, 'the image keeps its size');
    const sector = (n: number) => [disk[n * 512], disk[n * 512 + 511]];
    assert.deepEqual([sector(7), sector(8), sector(23), sector(24)], [[7, 7], [0, 0], [0, 0], [24, 24]]);
    assert.deepEqual([sector(100), sector(101), sector(103), sector(104)], [[100, 100], [0, 0], [0, 0], [104, 104]]);
    assert.deepEqual([sector(499), sector(500), sector(511)], [[499 & 0xff, 499 & 0xff], [0, 0], [0, 0]]);
  });

  test(`${protocol}: discard where it was not offered is not supported; on a read-only disk it is an error`, async () => {
    const disc = { operation: BLKIF_OP_DISCARD, nrSegments: 0, handle: 0, id: 1n, sectorNumber: 0n, segments: [], nrSectors: 8n };
    for (const [o, status] of [[{}, BLKIF_RSP_EOPNOTSUPP], [{ readOnly: true, discard: true }, BLKIF_RSP_ERROR]] as const) {
      const { file, image, submit } = await setup(protocol, o);
      assert.deepEqual(await submit(disc), [{ id: 1n, operation: BLKIF_OP_DISCARD, status }]);
      await image.close();
      assert.equal(readFileSync(file)[7 * 512], 7);
    }
  });

  test(`${protocol}: a producer past the ring's size stops the service without answering`, async () => {
    const lines: string[] = [];
    const { image, svc, front } = await setup(protocol, { log: (l) => lines.push(l) });
    front.push(front.size + 1);
    svc.kick();
    await svc.idle;
    assert.deepEqual(front.responses(), []);
    assert.match(lines.join('\n'), /more requests than its ring holds/);
    await image.close();
  });
}

test('ring geometry (io/ring.h __RING_SIZE over the whole area): 32 slots in one page, 64 in 2, 512 in 16, both layouts', () => {
  const pages = (n: number) => Array.from({ length: n }, () => new Uint8Array(PAGE_SIZE));
  for (const protocol of ['x86_32-abi', 'x86_64-abi'] as const) {
    assert.deepEqual([new BlkifBackRing(new Uint8Array(PAGE_SIZE), protocol).size, new BlkifBackRing(pages(2), protocol).size, new BlkifBackRing(pages(16), protocol).size], [32, 64, 512]);
  }
});

test('an indirect request: nr_segments (u16) at 2, handle and indirect_grefs at 20 and 24 (x86_32) or 24 and 28 (x86_64)', () => {
  for (const [protocol, id, sector, handle, grefs] of [['x86_32-abi', 4, 12, 20, 24], ['x86_64-abi', 8, 16, 24, 28]] as const) {
    const page = new Uint8Array(PAGE_SIZE);
    new BlkifFrontRing(page, protocol).put({ operation: BLKIF_OP_INDIRECT, indirectOp: BLKIF_OP_WRITE, nrSegments: 0x123, handle: 0x4567, id: 0x0102n, sectorNumber: 0x0304n, segments: [], indirectGrefs: [0x99, 0x98] });
    const v = new DataView(page.buffer, 64);
    assert.deepEqual([v.getUint8(0), v.getUint8(1), v.getUint16(2, true), v.getUint32(id, true), v.getUint32(sector, true), v.getUint16(handle, true), v.getUint32(grefs, true), v.getUint32(grefs + 4, true)],
      [BLKIF_OP_INDIRECT, BLKIF_OP_WRITE, 0x123, 0x0102, 0x0304, 0x4567, 0x99, 0x98], protocol);
    const back = new BlkifBackRing(page, protocol);
    back.reqCons = 0;
    const r = back.takeRequest();
    assert.deepEqual([r.indirectOp, r.nrSegments, r.handle, r.id, r.sectorNumber, r.indirectGrefs!.slice(0, 2)], [BLKIF_OP_WRITE, 0x123, 0x4567, 0x0102n, 0x0304n, [0x99, 0x98]], protocol);
  }
});

test('a discard request: flag at 1, nr_sectors at 20 (x86_32) or 24 (x86_64) (io/blkif.h struct blkif_request_discard)', () => {
  for (const [protocol, id, sector, nr] of [['x86_32-abi', 4, 12, 20], ['x86_64-abi', 8, 16, 24]] as const) {
    const page = new Uint8Array(PAGE_SIZE);
    new BlkifFrontRing(page, protocol).put({ operation: BLKIF_OP_DISCARD, flag: 1, nrSegments: 0, handle: 0, id: 0x0102n, sectorNumber: 0x0304n, segments: [], nrSectors: 0x0506n });
    const v = new DataView(page.buffer, 64);
    assert.deepEqual([v.getUint8(1), v.getUint32(id, true), v.getUint32(sector, true), v.getUint32(nr, true)], [1, 0x0102, 0x0304, 0x0506], protocol);
    const r = new BlkifBackRing(page, protocol).takeRequest();
    assert.deepEqual([r.operation, r.flag, r.id, r.sectorNumber, r.nrSectors], [BLKIF_OP_DISCARD, 1, 0x0102n, 0x0304n, 0x0506n], protocol);
  }
});

test('the 32-bit layout packs id at 4 and sector_number at 12, the 64-bit one at 8 and 16 (io/blkif.h)', () => {
  for (const [protocol, id, sector, seg] of [['x86_32-abi', 4, 12, 20], ['x86_64-abi', 8, 16, 24]] as const) {
    const page = new Uint8Array(PAGE_SIZE);
    new BlkifFrontRing(page, protocol).put({ operation: 1, nrSegments: 1, handle: 0, id: 0x0102n, sectorNumber: 0x0304n, segments: [{ gref: 0x99, firstSect: 1, lastSect: 2 }] });
    const v = new DataView(page.buffer, 64);
    assert.deepEqual([v.getUint32(id, true), v.getUint32(sector, true), v.getUint32(seg, true), v.getUint8(seg + 4), v.getUint8(seg + 5)], [0x0102, 0x0304, 0x99, 1, 2], protocol);
  }
});

test('requests are served several at once; a flush waits for every request before it, and the ones after it wait for the flush', async () => {
  const { image, front, svc } = await setup('x86_64-abi');
  const seg = (gref: number) => [{ gref, firstSect: 0, lastSect: 7 }];
  const reqs = [
    ...[1n, 2n, 3n, 4n].map((id) => ({ operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id, sectorNumber: id * 8n, segments: seg(Number(id) % 2) })),
    { operation: BLKIF_OP_FLUSH_DISKCACHE, nrSegments: 0, handle: 0, id: 5n, sectorNumber: 0n, segments: [] },
    ...[6n, 7n].map((id) => ({ operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id, sectorNumber: 0n, segments: seg(0) })),
  ];
  for (const r of reqs) front.put(r);
  front.push();
  svc.kick();
  await svc.idle;
  const order = front.responses().map((r) => r.id);
  await image.close();
  assert.deepEqual([...order].sort(), [1n, 2n, 3n, 4n, 5n, 6n, 7n], 'every request answered once');
  const at = (id: bigint) => order.indexOf(id);
  assert.ok([1n, 2n, 3n, 4n].every((id) => at(id) < at(5n)) && [6n, 7n].every((id) => at(id) > at(5n)), `answered in the order ${order.join(',')}`);
});
