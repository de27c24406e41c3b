import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { LocalClient, SocketClient } from './client.js';
import { Xenstored } from './daemon.js';
import { spawnDaemon, tmpDir } from './helpers.js';
import { until, within } from '../../testing/wait.js';

function dump(d: Xenstored): string[] {
  const out: string[] = [];
  d.store.forEach((p, n) => out.push(`${p}=${n.value.toString('hex')} ${n.perms.map((e) => `${e.p}:${e.id}`).join(',')}`));
  return out;
}

test('the store survives a restart: values, perms, removals and transactions', async () => {
  const dir = tmpDir();
  const db = path.join(dir, 'db');
  const d1 = new Xenstored({ dbPath: db, log: () => {} });
  await d1.start();
  const c = new LocalClient(d1);
  await c.write('/a/b', 'x');
  await c.write('/a/bin', Buffer.from([0, 1, 2, 255]));
  await c.write('/a/gone/deep', 'y');
  await c.setPerms('/a/b', ['n3', 'r4']);
  await c.rm('/a/gone');
  await c.transaction(async (tx) => {
    await c.write('/t/1', 'one', tx);
    await c.write('/t/2', 'two', tx);
    await c.rm('/a/bin', tx);
  });
  const tx = await c.transactionStart();
  await c.write('/t/aborted', 'no', tx);
  await c.transactionEnd(tx, false);
  const before = dump(d1);
  await d1.stop();

  const d2 = new Xenstored({ dbPath: db, log: () => {} });
  await d2.start();
  assert.deepEqual(dump(d2), before);
  assert.deepEqual(d2.store.check(), []);
  const c2 = new LocalClient(d2);
  assert.deepEqual(await c2.getPerms('/a/b'), ['n3', 'r4']);
  assert.deepEqual(await c2.directory('/t'), ['1', '2']);
  await d2.stop();
  fs.rmSync(dir, { recursive: true });
});

test('a torn or corrupt tail is cut off at load and the rest is kept', async () => {
  const dir = tmpDir();
  const db = path.join(dir, 'db');
  const d1 = new Xenstored({ dbPath: db, log: () => {} });
  await d1.start();
  const c = new LocalClient(d1);
  await c.write('/keep', '1');
  await c.write('/torn', '2');
  await d1.stop();
  // Appended garbage: a record header claiming more bytes than there are.
  fs.appendFileSync(db, Buffer.from([0xff, 0x00, 0x00, 0x00, 1, 2, 3, 4, 5]));
  const logs: string[] = [];
  const d2 = new Xenstored({ dbPath: db, log: (l) => logs.push(l) });
  await d2.start();
  assert.equal(await new LocalClient(d2).read('/torn'), '2');
  assert.ok(logs.some((l) => l.includes('torn tail')));
  await d2.stop();
  // Flip a byte inside the last record: its CRC fails and only it is lost.
  const b = fs.readFileSync(db);
  b[b.length - 2] ^= 0xff;
  fs.writeFileSync(db, b);
  const d3 = new Xenstored({ dbPath: db, log: () => {} });
  await d3.start();
  const c3 = new LocalClient(d3);
  assert.equal(await c3.read('/keep'), '1');
  assert.deepEqual(d3.store.check(), []);
  await d3.stop();
  fs.rmSync(dir, { recursive: true });
});

test('the journal is compacted to a snapshot', async () => {
  const dir = tmpDir();
  const db = path.join(dir, 'db');
  const d1 = new Xenstored({ dbPath: db, log: () => {}, fsync: false });
  await d1.start();
  const c = new LocalClient(d1);
  const value = Buffer.alloc(1000, 0x61);
  for (let i = 0; i < 6000; i++) await c.write(`/churn/${i % 10}`, value);
  assert.ok(fs.statSync(db).size < 4 * 1024 * 1024 + 100000, 'compacted while running');
  await d1.stop();
  const d2 = new Xenstored({ dbPath: db, log: () => {} });
  await d2.start();
  assert.ok(fs.statSync(db).size < 20000, `snapshot at start is small (${fs.statSync(db).size})`);
  assert.deepEqual(await new LocalClient(d2).directory('/churn'), ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
  await d2.stop();
  fs.rmSync(dir, { recursive: true });
});

test('SIGKILL in the middle of a stream of writes loses nothing that was acknowledged', async () => {
  const dir = tmpDir();
  const db = path.join(dir, 'db');
  const sock = path.join(dir, 'sock');
  const child = await spawnDaemon(sock, ['--db', db]);
  const clients = await Promise.all([1, 2, 3, 4].map(() => SocketClient.connect(sock)));
  const acked = new Set<string>();
  const txAcked = new Set<number>();
  let stop = false;
  let seq = 0;
  const worker = async (c: SocketClient, k: number): Promise<void> => {
    while (!stop) {
      const i = seq++;
      try {
        if (k === 3) {
          await c.transaction(async (tx) => {
            await c.write(`/tx/${i}/a`, `${i}`, tx);
            await c.write(`/tx/${i}/b`, `${i}`, tx);
          });
          txAcked.add(i);
        } else {
          // Pipeline a few writes at a time.
          await Promise.all([0, 1, 2, 3].map(async (j) => {
            await c.write(`/w/${i}-${j}`, `v${i}-${j}`);
            acked.add(`${i}-${j}`);
          }));
        }
      } catch {
        return; // the daemon died under us
      }
    }
  };
  const workers = clients.map((c, k) => worker(c, k));
  // Killed in full flow, once enough of both kinds are on disk to be worth checking.
  try {
    await until('200 writes and 10 transactions acknowledged', () => acked.size >= 200 && txAcked.size >= 10, 60_000);
  } finally {
    child.proc.kill('SIGKILL');
  }
  await within('every client seeing the daemon die', Promise.all(workers));
  stop = true;
  await child.stop();

  const again = await spawnDaemon(sock, ['--db', db]);
  const c = await SocketClient.connect(sock);
  for (const k of acked) assert.equal(await c.read(`/w/${k}`), `v${k}`);
  for (const i of txAcked) assert.equal(await c.read(`/tx/${i}/b`), `${i}`);
  // Transactions are atomic on disk: never half of one (acknowledged ones
  // are all there; one committed as the daemon died may be too, but whole).
  const onDisk = await c.directory('/tx');
  assert.ok(onDisk.length >= txAcked.size, `${onDisk.length} transactions on disk, ${txAcked.size} acknowledged`);
  for (const i of onDisk) {
    const kids = await c.directory(`/tx/${i}`);
    assert.deepEqual(kids, ['a', 'b'], `transaction ${i}`);
  }
  assert.equal(await c.control('check'), 'OK');
  c.close();
  clients.forEach((x) => x.close());
  await again.stop();
  fs.rmSync(dir, { recursive: true });
});
