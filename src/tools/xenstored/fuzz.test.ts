// Random and malformed input: the daemon must stay up and the store consistent.
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { test } from 'node:test';
import { SocketClient } from './client.js';
import { socketFixture, RingGuest } from './helpers.js';
import { RING_CONNECTION, RING_REQ_CONS, RING_REQ_PROD, RING_RSP_CONS, RING_RSP_PROD, XsError, XsType, encodeMessage } from './wire.js';
import { prng } from '../../testing/prng.js';
import { within } from '../../testing/wait.js';

const SEED = Number(process.env['XS_FUZZ_SEED'] ?? 20240601);

const ctx = socketFixture();

const PIECES = ['/', 'a', 'b', 'local', 'domain', '0', '1', '@releaseDomain', '@introduceDomain', 'T', 'F', 'n0', 'r1', 'b2', '..', ' ', '//', '\0', '\0\0', 'x'.repeat(300), '-1', '99999999999', '\xff', 'w5'];

function randomPayload(r: () => number): Buffer {
  const mode = r();
  if (mode < 0.3) {
    const n = Math.floor(r() * 64);
    return Buffer.from(Array.from({ length: n }, () => Math.floor(r() * 256)));
  }
  const parts: string[] = [];
  const k = Math.floor(r() * 6);
  for (let i = 0; i < k; i++) parts.push(PIECES[Math.floor(r() * PIECES.length)]!);
  let s = parts.join(r() < 0.5 ? '/' : '\0');
  if (r() < 0.5) s = `/fuzz/${s}`;
  if (r() < 0.7) s += '\0';
  return Buffer.from(s, 'latin1').subarray(0, 4096);
}

function frame(type: number, reqId: number, txId: number, payload: Buffer, lenOverride?: number): Buffer {
  const b = encodeMessage(type, reqId, txId, payload);
  if (lenOverride !== undefined) b.writeUInt32LE(lenOverride, 12);
  return b;
}

test('random and malformed frames over the socket', async () => {
  const r = prng(SEED);
  let closedByDaemon = 0;
  for (let round = 0; round < 40; round++) {
    const s = net.createConnection(ctx.sock);
    await new Promise((res) => s.once('connect', res));
    s.on('error', () => {});
    s.on('data', () => {});
    const closed = new Promise<void>((res) => s.once('close', () => res()));
    const chunks: Buffer[] = [];
    for (let i = 0; i < 200; i++) {
      const type = r() < 0.9 ? Math.floor(r() * 28) : Math.floor(r() * 2 ** 32);
      const tx = r() < 0.8 ? 0 : Math.floor(r() * 5);
      chunks.push(frame(type, Math.floor(r() * 2 ** 32), tx, randomPayload(r)));
    }
    if (round % 5 === 4) chunks.push(frame(XsType.WRITE, 0, 0, Buffer.alloc(0), 4097 + Math.floor(r() * 1e9)));
    if (round % 7 === 6) chunks.push(Buffer.from([1, 2, 3])); // a torn header at the end
    const all = Buffer.concat(chunks);
    // Deliver in random slices.
    for (let o = 0; o < all.length; ) {
      const n = 1 + Math.floor(r() * 3000);
      s.write(all.subarray(o, o + n));
      o += n;
    }
    // A length over XENSTORE_PAYLOAD_MAX cannot be skipped: the daemon drops the
    // connection. Garbage alone may or may not end it; the daemon reads what was
    // sent even after this end closes, so there is nothing to wait for then.
    if (round % 5 === 4) {
      await within(`the daemon closing the connection that sent an oversize frame (round ${round})`, closed);
      closedByDaemon++;
    }
    s.destroy();
  }
  assert.equal(closedByDaemon, 8);
  const c = await SocketClient.connect(ctx.sock);
  assert.equal(await c.getDomainPath(4), '/local/domain/4');
  assert.equal(await c.control('check'), 'OK');
  c.close();
  assert.deepEqual(ctx.f.d.store.check(), []);
});

test('hostile guests: garbage in the ring, bad indexes, reconnect storms', async () => {
  const r = prng(SEED + 1);
  const honest = await ctx.f.guest(100);
  for (let round = 0; round < 30; round++) {
    const domid = 200 + round;
    const g = await ctx.f.guest(domid);
    for (let i = 0; i < 20; i++) {
      const what = r();
      if (what < 0.5) {
        g.sendBytes(frame(Math.floor(r() * 30), i, r() < 0.9 ? 0 : 1, randomPayload(r)));
      } else if (what < 0.6) {
        g.sendBytes(Buffer.from(Array.from({ length: Math.floor(r() * 100) }, () => Math.floor(r() * 256))));
      } else if (what < 0.7) {
        const off = [RING_REQ_CONS, RING_REQ_PROD, RING_RSP_CONS, RING_RSP_PROD][Math.floor(r() * 4)]!;
        g.view.setUint32(off, Math.floor(r() * 2 ** 32), true);
        ctx.f.d.ringNotified(domid);
      } else if (what < 0.75) {
        g.view.setUint32(RING_CONNECTION, Math.floor(r() * 3), true);
        ctx.f.d.ringNotified(domid);
      } else if (what < 0.8) {
        g.page.set(Buffer.from(Array.from({ length: 64 }, () => Math.floor(r() * 256))), Math.floor(r() * 4000));
        ctx.f.d.ringNotified(domid);
      } else {
        ctx.f.d.ringNotified(domid);
      }
      await new Promise((res) => setImmediate(res));
    }
    assert.equal(await honest.getDomainPath(100), '/local/domain/100');
    await ctx.f.dom0.release(domid);
  }
  assert.deepEqual(ctx.f.d.store.check(), []);
  await ctx.f.dom0.release(100);
});

test('random operations against a model of the tree', async () => {
  const r = prng(SEED + 2);
  const model = new Map<string, string>([['/m', '']]);
  await ctx.f.dom0.mkdir('/m');
  const names = ['a', 'b', 'c'];
  const randPath = (): string => {
    let p = '/m';
    const depth = 1 + Math.floor(r() * 3);
    for (let i = 0; i < depth; i++) p += `/${names[Math.floor(r() * names.length)]}`;
    return p;
  };
  const parent = (p: string): string => p.slice(0, p.lastIndexOf('/'));
  for (let i = 0; i < 2000; i++) {
    const p = randPath();
    const op = r();
    const inTx = r() < 0.2;
    const tx = inTx ? await ctx.f.dom0.transactionStart() : 0;
    const commit = !inTx || r() < 0.7;
    const next = new Map(model);
    if (op < 0.4) {
      const v = `v${i}`;
      await ctx.f.dom0.write(p, v, tx);
      for (let q = parent(p); q !== '/m' && !next.has(q); q = parent(q)) next.set(q, '');
      next.set(p, v);
    } else if (op < 0.55) {
      await ctx.f.dom0.mkdir(p, tx);
      if (!next.has(p)) {
        for (let q = parent(p); q !== '/m' && !next.has(q); q = parent(q)) next.set(q, '');
        next.set(p, '');
      }
    } else if (op < 0.75) {
      try {
        await ctx.f.dom0.rm(p, tx);
        for (const k of [...next.keys()]) if (k === p || k.startsWith(`${p}/`)) next.delete(k);
      } catch (e) {
        assert.ok(e instanceof XsError && e.errno === 'ENOENT');
        assert.ok(!next.has(parent(p)));
      }
    } else {
      const got = await ctx.f.dom0.tryRead(p, tx);
      assert.equal(got, model.get(p), `read ${p} at step ${i}`);
      const kids = await ctx.f.dom0.directory(p, tx).catch(() => null);
      if (kids) {
        const want = [...model.keys()].filter((k) => parent(k) === p).map((k) => k.slice(p.length + 1));
        assert.deepEqual([...kids].sort(), want.sort(), `directory ${p}`);
      }
    }
    if (inTx) await ctx.f.dom0.transactionEnd(tx, commit);
    if (commit) {
      model.clear();
      for (const [k, v] of next) model.set(k, v);
    }
  }
  assert.deepEqual(ctx.f.d.store.check(), []);
});

test('a guest sending fuzz through the typed client gets errors, never a crash', async () => {
  const r = prng(SEED + 3);
  const g: RingGuest = await ctx.f.guest(300);
  for (let i = 0; i < 500; i++) {
    const type = Math.floor(r() * 27);
    await g.request(type, randomPayload(r), r() < 0.9 ? 0 : 1).catch((e: unknown) => {
      assert.ok(e instanceof XsError, String(e));
    });
  }
  assert.deepEqual(ctx.f.d.store.check(), []);
  await ctx.f.dom0.release(300);
});

test('no request ever hit an internal error', () => {
  const bad = ctx.f.logs.filter((l) => l.includes('internal error'));
  assert.deepEqual(bad, []);
});
