// Transaction conflicts under load: concurrent read-modify-write never loses an update.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SocketClient, type XsClientBase } from './client.js';
import { socketFixture } from './helpers.js';
import { XsError } from './wire.js';
import { within } from '../../testing/wait.js';

const ctx = socketFixture();

async function increment(c: XsClientBase, key: string): Promise<number> {
  let attempts = 0;
  for (;;) {
    attempts++;
    const tx = await c.transactionStart();
    const v = Number(await c.read(key, tx));
    await c.write(key, String(v + 1), tx);
    try {
      await c.transactionEnd(tx, true);
      return attempts;
    } catch (e) {
      if (!(e instanceof XsError) || e.errno !== 'EAGAIN') throw e;
    }
  }
}

test('16 socket clients increment one counter 50 times each', async () => {
  await ctx.f.dom0.write('/stress/counter', '0');
  const clients = await Promise.all(Array.from({ length: 16 }, () => SocketClient.connect(ctx.sock)));
  const before = ctx.f.d.stats.conflicts;
  let retries = 0;
  await Promise.all(clients.map(async (c) => {
    for (let i = 0; i < 50; i++) {
      const attempts = await increment(c, '/stress/counter');
      retries += attempts - 1;
    }
  }));
  assert.equal(await ctx.f.dom0.read('/stress/counter'), '800');
  assert.ok(ctx.f.d.stats.conflicts - before > 0, 'some commits conflicted');
  assert.equal(ctx.f.d.stats.conflicts - before, retries);
  clients.forEach((c) => c.close());
});

test('socket clients and guests on rings share counters; transfers keep the total', async () => {
  const guests = await Promise.all([11, 12, 13, 14].map((d) => ctx.f.guest(d)));
  await ctx.f.dom0.mkdir('/stress/bank');
  await ctx.f.dom0.setPerms('/stress/bank', ['b0', 'b11', 'b12', 'b13', 'b14']);
  const accounts = ['a', 'b', 'c', 'd', 'e'];
  for (const a of accounts) await ctx.f.dom0.write(`/stress/bank/${a}`, '100');
  const socks = await Promise.all(Array.from({ length: 4 }, () => SocketClient.connect(ctx.sock)));
  const all: XsClientBase[] = [...guests, ...socks];
  let seed = 7;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  await Promise.all(all.map(async (c) => {
    for (let i = 0; i < 60; i++) {
      const from = accounts[rnd(5)]!;
      const to = accounts[rnd(5)]!;
      await c.transaction(async (tx) => {
        const a = Number(await c.read(`/stress/bank/${from}`, tx));
        const b = Number(await c.read(`/stress/bank/${to}`, tx));
        if (from === to) return;
        await c.write(`/stress/bank/${from}`, String(a - 1), tx);
        await c.write(`/stress/bank/${to}`, String(b + 1), tx);
      }, 10000);
    }
  }));
  let total = 0;
  for (const a of accounts) total += Number(await ctx.f.dom0.read(`/stress/bank/${a}`));
  assert.equal(total, 500);
  assert.deepEqual(ctx.f.d.store.check(), []);
  socks.forEach((c) => c.close());
  for (const g of guests) await ctx.f.dom0.release(g.domid);
});

test('readers are never blocked by a writer storm', async () => {
  const writer = await SocketClient.connect(ctx.sock);
  const reader = await SocketClient.connect(ctx.sock);
  await writer.write('/stress/r', 'x');
  let stop = false;
  let written = 0;
  const storm = (async () => {
    let i = 0;
    while (!stop) await Promise.all(Array.from({ length: 32 }, () => writer.write(`/stress/storm/${i++ % 100}`, 'y').then(() => { written++; })));
  })();
  // Counted in the storm's own writes, not in milliseconds: a read served in
  // turn waits for a batch or two of them; a starved one for the whole storm,
  // which never ends (the bounded wait then says so).
  const during: number[] = [];
  try {
    await within('200 reads during a writer storm', (async () => {
      for (let i = 0; i < 200; i++) {
        const w0 = written;
        assert.equal(await reader.read('/stress/r'), 'x');
        during.push(written - w0);
      }
    })());
  } finally {
    stop = true;
    await storm;
  }
  during.sort((x, y) => x - y);
  assert.ok(written > 0, 'the storm wrote');
  assert.ok(during[during.length - 1]! <= 256, `the slowest read waited for ${during[during.length - 1]} storm writes (median ${during[100]})`);
  writer.close();
  reader.close();
});
