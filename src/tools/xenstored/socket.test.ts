import assert from 'node:assert/strict';
import * as net from 'node:net';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { SocketClient } from './client.js';
import { Xenstored } from './daemon.js';
import { tmpDir, XENODE_JS } from './helpers.js';
import { until } from '../../testing/wait.js';
import { main } from './main.js';
import { FrameReader, XsType, encodeMessage } from './wire.js';

let d: Xenstored;
let sock: string;
const logs: string[] = [];
before(async () => {
  sock = path.join(tmpDir(), 'sub', 'socket');
  d = new Xenstored({ socketPath: sock, log: (l) => logs.push(l) });
  await d.start();
});
after(async () => {
  await d.stop();
});

/** A bare socket that collects whole reply frames. */
async function bare(): Promise<{ s: net.Socket; frames: { type: number; reqId: number; txId: number; body: string }[]; closed: Promise<void> }> {
  const s = net.createConnection(sock);
  await new Promise((r) => s.once('connect', r));
  const r = new FrameReader();
  const frames: { type: number; reqId: number; txId: number; body: string }[] = [];
  s.on('data', (b) => {
    r.push(b);
    for (;;) {
      const m = r.next();
      if (typeof m !== 'object') break;
      frames.push({ type: m.type, reqId: m.reqId, txId: m.txId, body: m.payload.toString('latin1') });
    }
  });
  const closed = new Promise<void>((res) => s.once('close', () => res()));
  return { s, frames, closed };
}

test('the socket directory is created; a connection is privileged dom0', async () => {
  const c = await SocketClient.connect(sock);
  await c.write('rel', '1');
  assert.equal(await c.read('/local/domain/0/rel'), '1');
  assert.equal(await c.control('check'), 'OK');
  c.close();
});

test('req_id and tx_id are echoed; requests may be pipelined', async () => {
  const b = await bare();
  const msgs = [];
  for (let i = 0; i < 50; i++) msgs.push(encodeMessage(XsType.GET_DOMAIN_PATH, 1000 + i, 0, `${i}\0`));
  msgs.push(encodeMessage(XsType.READ, 0xfffffffe, 77, '/tool\0'));
  b.s.write(Buffer.concat(msgs));
  await until('51 replies to 51 pipelined requests', () => b.frames.length === 51);
  for (let i = 0; i < 50; i++) {
    assert.deepEqual(b.frames[i], { type: XsType.GET_DOMAIN_PATH, reqId: 1000 + i, txId: 0, body: `/local/domain/${i}\0` });
  }
  assert.deepEqual(b.frames[50], { type: XsType.ERROR, reqId: 0xfffffffe, txId: 77, body: 'ENOENT\0' });
  b.s.destroy();
});

test('a request split into single bytes is still understood', async () => {
  const b = await bare();
  const m = encodeMessage(XsType.GET_DOMAIN_PATH, 5, 0, '12\0');
  for (const byte of m) {
    b.s.write(Buffer.from([byte]));
    await new Promise((r) => setImmediate(r));
  }
  await until('the reply to a request sent a byte at a time', () => b.frames.length === 1);
  assert.equal(b.frames[0]!.body, '/local/domain/12\0');
  b.s.destroy();
});

test('an oversized message closes only that connection, with a log line', async () => {
  const good = await SocketClient.connect(sock);
  const b = await bare();
  const h = Buffer.alloc(16);
  h.writeUInt32LE(XsType.WRITE, 0);
  h.writeUInt32LE(5000, 12);
  b.s.write(h);
  await b.closed;
  assert.ok(logs.some((l) => l.includes('over 4096 bytes; closing')));
  assert.equal(await good.getDomainPath(1), '/local/domain/1');
  good.close();
});

test('unknown types get EINVAL and the connection stays up', async () => {
  const b = await bare();
  b.s.write(Buffer.concat([encodeMessage(99, 1, 0, 'x'), encodeMessage(XsType.GET_DOMAIN_PATH, 2, 0, '3\0')]));
  await until('2 replies after the frames were reset', () => b.frames.length === 2);
  assert.equal(b.frames[0]!.body, 'EINVAL\0');
  assert.equal(b.frames[1]!.body, '/local/domain/3\0');
  b.s.destroy();
});

test('a client vanishing mid-message or mid-transaction leaves no trace', async () => {
  const c = await SocketClient.connect(sock);
  const tx = await c.transactionStart();
  await c.write('/sock/tx', '1', tx);
  await c.watch('/sock', 'w');
  c.writeRaw(encodeMessage(XsType.WRITE, 0, 0, '/sock/partial\0value').subarray(0, 20));
  c.close();
  const c2 = await SocketClient.connect(sock);
  // The daemon notices the close asynchronously: its watch and transaction go then.
  await until('the vanished client\'s watch and transaction being released', async () => /watches: 0\ntransactions: 0/.test(await c2.control('memreport')));
  assert.equal(await c2.tryRead('/sock/tx'), undefined);
  assert.equal(await c2.tryRead('/sock/partial'), undefined);
  c2.close();
});

test('watch events interleave with replies on the socket', async () => {
  const a = await SocketClient.connect(sock);
  const b = await SocketClient.connect(sock);
  const first = a.waitWatch('tok', '/sock/w');
  await a.watch('/sock/w', 'tok');
  await first;
  const ev = a.waitWatch('tok', '/sock/w/x');
  await b.write('/sock/w/x', '1');
  await ev;
  a.close();
  b.close();
});

test('one busy client does not starve another', async () => {
  const busy = await SocketClient.connect(sock);
  const other = await SocketClient.connect(sock);
  await busy.write('/sock/v', 'x');
  let done = 0;
  const flood: Promise<unknown>[] = [];
  for (let i = 0; i < 20000; i++) flood.push(busy.read('/sock/v').then(() => { done++; }));
  // Sent after all 20000: answered while most of them are still queued.
  assert.equal(await other.getDomainPath(1), '/local/domain/1');
  const doneBeforeOther = done;
  await Promise.all(flood);
  assert.equal(done, 20000);
  assert.ok(doneBeforeOther < 10000, `the other client was answered only after ${doneBeforeOther} of the busy client's 20000 requests`);
  busy.close();
  other.close();
});

test('a client that never reads its replies cannot make the daemon buffer without bound', async () => {
  const c = await SocketClient.connect(sock);
  await c.write('/sock/fat', Buffer.alloc(3000, 0x66));
  c.close();
  const s = net.createConnection(sock);
  await new Promise((r) => s.once('connect', r));
  s.on('error', () => {});
  s.pause(); // never read
  const req = encodeMessage(XsType.READ, 0, 0, '/sock/fat\0');
  const batch = Buffer.concat(Array.from({ length: 1000 }, () => req));
  // 20000 requests would produce ~60 MB of replies.
  for (let i = 0; i < 20; i++) s.write(batch);
  const queued = () => Number(d.memreport().match(/queued output bytes: (\d+)/)![1]);
  // The daemon has answered enough to reach its high-water mark (1 MiB)...
  await until('the daemon queueing 1 MiB of replies for the client that does not read', () => queued() > 1 << 20);
  // ...and while another client is served (a daemon reading on would queue
  // megabytes more per turn of the event loop), it reads no further.
  const other = await SocketClient.connect(sock);
  assert.equal(await other.getDomainPath(2), '/local/domain/2');
  assert.equal(await other.getDomainPath(3), '/local/domain/3');
  assert.ok(queued() < 4 << 20, `daemon holds ${queued()} bytes for a client that does not read`);
  other.close();
  s.destroy();
});

test('CLI: bad flags are a usage error (exit 2)', async () => {
  const errs: string[] = [];
  const orig = console.error;
  console.error = (m: string) => errs.push(m);
  try {
    assert.equal(await main(['--bogus']), 2);
    assert.equal(await main(['positional']), 2);
    assert.equal(await main(['--socket']), 2);
  } finally {
    console.error = orig;
  }
  assert.match(errs.join('\n'), /usage: xenode xenstored/);
  const r = spawnSync(process.execPath, [XENODE_JS, 'xenstored', '--nope'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /usage/);
});
