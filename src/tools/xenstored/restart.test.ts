// A xenstored that dies and is started again (kill -9 of its process, here a
// Xenstored abandoned mid-run): it comes back from its journal and its
// domains' connection state, and a guest's ring connection goes on as if
// nothing happened, bar a transaction it had open (EAGAIN: start it again).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { Xenstored } from './daemon.js';
import { RingGuest, spawnDaemon, tmpDir } from './helpers.js';
import { ReconnectingClient } from './client.js';
import { RING_REQ_CONS, RING_RSP_CONS, RING_RSP_PROD, XENSTORE_RING_SIZE, XsError } from './wire.js';

const DOMID = 5;

function start(dir: string, guests: Map<number, RingGuest>): Promise<Xenstored> {
  const d = new Xenstored({
    dbPath: path.join(dir, 'xs.journal'),
    domainsPath: path.join(dir, 'xs.domains'),
    log: () => {},
    // as over the hypervisor's interface: the ring arrives after a turn of the event loop
    hooks: { mapDomainRing: async (domid) => guests.get(domid)?.port ?? null },
  });
  return d.start().then(() => d);
}

/** A first xenstored with the guest DOMID's ring in a plain buffer introduced. */
async function firstLife(gfn: number, port: number): Promise<{ dir: string; guests: Map<number, RingGuest>; d1: Xenstored; g: RingGuest }> {
  const dir = tmpDir();
  const guests = new Map<number, RingGuest>();
  const d1 = await start(dir, guests);
  const g = new RingGuest(d1, DOMID);
  guests.set(DOMID, g);
  await d1.openClient().introduce(DOMID, gfn, port);
  return { dir, guests, d1, g };
}

const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([p, new Promise<T>((_, rej) => setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms))]);

test('a restarted xenstored takes a guest connection up where the last one died: committed writes, watches, a request left in the ring', async () => {
  const { dir, guests, d1, g } = await firstLife(0xfeffc, 7);
  const dom0 = d1.openClient();
  await dom0.write(`/local/domain/${DOMID}`, '');
  await dom0.setPerms(`/local/domain/${DOMID}`, [`n${DOMID}`]);
  await g.write('data/before', 'kept');
  const first = g.waitWatch('shut', undefined, 2000);
  await g.watch('control/shutdown', 'shut');
  await first; // fired on registration
  const oldTx = await g.transactionStart();

  // a request the xenstored carries out but cannot answer yet (the guest's response ring looks full)...
  const rspCons = g.field(RING_RSP_CONS);
  g.consuming = false;
  g.view.setUint32(RING_RSP_CONS, (g.field(RING_RSP_PROD) - XENSTORE_RING_SIZE) >>> 0, true);
  const reqCons = g.field(RING_REQ_CONS);
  const pending = g.write('data/during', 'asked before the crash');
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(g.field(RING_REQ_CONS), reqCons, 'a request whose reply is not in the ring stays in the ring');
  // ...and then it dies: nothing answers the guest any more, and the guest goes on
  g.daemon = { ringNotified: () => {} };
  g.view.setUint32(RING_RSP_CONS, rspCons, true);
  g.consuming = true;
  const pending2 = g.write('data/after', 'asked while down');

  const d2 = await start(dir, guests);
  g.daemon = d2;
  const fired = g.waitWatch('shut', undefined, 2000);
  d2.ringNotified(DOMID);
  await within(pending, 2000, 'the request left in the ring being answered');
  await within(pending2, 2000, 'the request written while no xenstored ran being answered');
  await fired; // the restored watch fires once: an event lost with the old xenstored is not missed
  const admin = d2.openClient();
  assert.equal(await admin.read(`/local/domain/${DOMID}/data/before`), 'kept');
  assert.equal(await admin.read(`/local/domain/${DOMID}/data/during`), 'asked before the crash');
  assert.equal(await admin.read(`/local/domain/${DOMID}/data/after`), 'asked while down');

  // the watch is still registered on the restored connection
  const shutdown = g.waitWatch('shut', undefined, 2000);
  await admin.write(`/local/domain/${DOMID}/control/shutdown`, 'poweroff');
  assert.equal((await shutdown).path, 'control/shutdown');
  // a transaction of the dead xenstored's is refused as a conflict, so the guest starts it again
  await assert.rejects(g.write('data/tx', 'x', oldTx), (e: unknown) => e instanceof XsError && e.errno === 'EAGAIN');
  const tx = await g.transactionStart();
  assert.notEqual(tx, oldTx);
  await g.write('data/tx', 'y', tx);
  await g.transactionEnd(tx);
  assert.equal(await admin.read(`/local/domain/${DOMID}/data/tx`), 'y');
  assert.equal(await admin.isDomainIntroduced(DOMID), true);

  // release forgets it for good: a third xenstored does not bring it back
  await admin.release(DOMID);
  await d2.stop();
  const d3 = await start(dir, guests);
  assert.equal(await d3.openClient().isDomainIntroduced(DOMID), false);
  await d3.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a domain whose ring cannot be mapped again is dropped at restart, and a damaged state file restores nothing', async () => {
  const { dir, guests, d1, g } = await firstLife(1, 1);
  await d1.stop();
  guests.delete(DOMID); // the domain went while no xenstored ran
  const d2 = await start(dir, guests);
  assert.equal(await d2.openClient().isDomainIntroduced(DOMID), false);
  await d2.stop();
  fs.writeFileSync(path.join(dir, 'xs.domains'), '{"version":1,"domains":[{"domid":"five"}]');
  guests.set(DOMID, g);
  const d3 = await start(dir, guests);
  assert.equal(await d3.openClient().isDomainIntroduced(DOMID), false);
  await d3.openClient().write('/still', 'serving');
  await d3.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a ReconnectingClient writing through two kill -9s of its xenstored sees no error, loses no acknowledged write, and its watch fires after each restart', async () => {
  const dir = tmpDir();
  const sock = path.join(dir, 'socket');
  const db = path.join(dir, 'journal');
  let x = await spawnDaemon(sock, ['--db', db, '--no-fsync']);
  const c = await ReconnectingClient.connect(sock, 20_000);
  try {
    await c.write('/w', '');
    let fired = 0;
    c.on('watch', (e: { token: string }) => { if (e.token === 'tk') fired++; });
    await c.watch('/w', 'tk');
    const acked: number[] = [];
    let stop = false;
    const writer = (async () => {
      for (let i = 0; !stop; i++) {
        await c.write(`/w/k${i}`, String(i));
        acked.push(i);
        if (i % 5 === 0) await c.transaction(async (tx) => { await c.write(`/w/t${i}`, String(i), tx); });
      }
    })();
    for (let k = 0; k < 2; k++) {
      await new Promise((r) => setTimeout(r, 150));
      const firedBefore = fired;
      await x.stop('SIGKILL');
      x = await spawnDaemon(sock, ['--db', db, '--no-fsync']);
      const t0 = Date.now();
      while (fired === firedBefore && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 10));
      assert.ok(fired > firedBefore, 'the watch fired again on the new xenstored');
    }
    await new Promise((r) => setTimeout(r, 100));
    stop = true;
    await writer; // no write failed
    assert.ok(acked.length > 10, `writes went on: ${acked.length}`);
    assert.ok(c.connects >= 3, `it connected again after each kill: ${c.connects}`);
    const values = await Promise.all(acked.map((i) => c.tryRead(`/w/k${i}`)));
    assert.deepEqual(acked.filter((i, n) => values[n] !== String(i)), [], 'every acknowledged write is there');
  } finally {
    c.close();
    await x.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
