// The API socket's framing and its defences against a hostile client, on a
// server with stand-in handlers (no hypervisor).

import { test } from 'node:test';
import { until } from '../../testing/wait.js';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { LineReader } from './protocol.js';
import { ApiServer, type Handlers } from './server.js';
import { tmpStateDir } from './testing.js';

test('LineReader: lines across chunks, blank lines skipped, an overlong line dropped whole once', () => {
  let overlong = 0;
  const r = new LineReader(10, () => overlong++);
  const all = () => { const out: string[] = []; let l; while ((l = r.shift()) !== null) out.push(l); return out; };
  r.push('ab');
  assert.deepEqual(all(), []);
  r.push('c\n\n  \nde');
  assert.deepEqual(all(), ['abc']);
  r.push('f\n0123456789ab');
  assert.deepEqual(all(), ['def']);
  assert.equal(overlong, 1);
  r.push('cdefghijklmnop');
  r.push('qrstuvwxyz');
  assert.deepEqual(all(), []);
  assert.equal(overlong, 1);
  r.push('end of it\nnext\n');
  assert.deepEqual(all(), ['next']);
});

async function serve(handlers: Partial<Handlers>): Promise<ApiServer> {
  const s = new ApiServer(path.join(tmpStateDir(), 'api.sock'), handlers as Handlers, () => {});
  await s.listen();
  return s;
}

function connect(s: ApiServer): Promise<net.Socket> {
  return new Promise((ok, fail) => {
    const c = net.createConnection(s.socketPath);
    c.once('connect', () => ok(c)).once('error', fail);
  });
}

/** Reads `n` response lines. */
function read(c: net.Socket, n: number): Promise<Record<string, unknown>[]> {
  const lines = new LineReader();
  const out: Record<string, unknown>[] = [];
  return new Promise((ok) => {
    c.setEncoding('utf8');
    c.on('data', (d: string) => {
      lines.push(d);
      let l;
      while ((l = lines.shift()) !== null) out.push(JSON.parse(l) as Record<string, unknown>);
      if (out.length >= n) ok(out);
    });
    c.resume();
  });
}

const req = (id: number, op: string) => JSON.stringify({ v: 1, id, op, args: {} }) + '\n';

test('a stream id already open on the connection is refused, and the refused source is closed', async () => {
  let open = 0;
  const s = await serve({
    'events.subscribe': (_a, { conn, id }) => {
      open++;
      conn.addStream(id, { kind: 'events', close: () => { open--; } });
      return null;
    },
  });
  const c = await connect(s);
  const answers = read(c, 3);
  c.write(req(1, 'events.subscribe') + req(1, 'events.subscribe') + req(2, 'events.subscribe'));
  const r = await answers;
  assert.deepEqual(r.map((m) => [m.id, m.ok, (m.error as { code?: string } | undefined)?.code]), [[1, true, undefined], [1, false, 'EBUSY'], [2, true, undefined]]);
  assert.equal(open, 2);
  // and a connection holds at most 1024
  const more = read(c, 1023);
  c.write(Array.from({ length: 1023 }, (_, i) => req(i + 3, 'events.subscribe')).join(''));
  const refused = (await more).filter((m) => !m.ok);
  assert.deepEqual(refused.map((m) => [m.id, (m.error as { code: string }).code]), [[1025, 'EBUSY']]);
  assert.equal(open, 1024);
  c.destroy();
  await until('the closed connection\'s 1024 streams being closed', () => open === 0);
  await s.close();
});

test('a client that sends requests without reading the answers is read no further until it catches up; none is lost', async () => {
  const big = 'x'.repeat(64 << 10);
  let served = 0;
  const s = await serve({ 'host.dmesg': () => { served++; return { text: big }; } });
  const c = await connect(s);
  c.pause();
  const N = 400; // 25 MiB of answers, over the 8 MiB backlog
  c.write(Array.from({ length: N }, (_, i) => req(i + 1, 'host.dmesg')).join(''));
  const conn = await until('the daemon pausing the connection that does not read', () => [...s.conns].find((x) => x.sock.isPaused()));
  assert.ok(served < N, `served ${served}`);
  assert.ok(conn.sock.writableLength < 10 << 20, `backlog ${conn.sock.writableLength}`);
  const r = await read(c, N);
  assert.deepEqual(r.map((m) => m.id), Array.from({ length: N }, (_, i) => i + 1));
  assert.equal(served, N);
  c.destroy();
  await s.close();
});
