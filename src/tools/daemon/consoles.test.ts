// The per-domain console log: bounded file with one rotation, bounded tail,
// several readers, end on death.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DomainConsole } from './consoles.js';
import { ConsoleBackend } from '../console.js';
import type { Hypervisor } from '../../hv/hypervisor.js';
import { tmpStateDir } from './testing.js';
import { until } from '../../testing/wait.js';

test('the log file is capped: beyond the cap it rotates to .1 and starts again', async () => {
  const f = path.join(tmpStateDir(), 'g.log');
  const c = new DomainConsole(f, { fileBytes: 1000 });
  for (let i = 0; i < 50; i++) c.write(Buffer.from(`line ${String(i).padStart(3, '0')} ${'x'.repeat(40)}\n`));
  await c.flushed();
  assert.ok(fs.statSync(f).size <= 1000);
  assert.ok(fs.statSync(f + '.1').size <= 1000);
  assert.match(fs.readFileSync(f, 'utf8'), /line 049/);
  assert.doesNotMatch(fs.readFileSync(f, 'utf8') + fs.readFileSync(f + '.1', 'utf8'), /line 000/);
  // a new console on the same file (a restarted domain) appends and knows the size
  const again = new DomainConsole(f, { fileBytes: 1000 });
  again.write(Buffer.from('after restart\n'));
  await again.flushed();
  assert.match(fs.readFileSync(f, 'utf8'), /line 049[^]*after restart/);
});

test('the tail keeps about tailBytes of the newest output', () => {
  const c = new DomainConsole(path.join(tmpStateDir(), 't.log'), { tailBytes: 100 });
  for (let i = 0; i < 50; i++) c.write(Buffer.from(`${String(i).padStart(2, '0')}-------\n`));
  const t = c.tail().toString();
  assert.ok(t.length >= 100 && t.length < 120, `tail ${t.length}`);
  assert.ok(t.endsWith('49-------\n'));
});

test('every reader gets the output; detached readers stop; all get end once when the domain dies', () => {
  const c = new DomainConsole(path.join(tmpStateDir(), 'r.log'));
  const got = ['', '', ''];
  const ends: string[] = [];
  const det = [0, 1, 2].map((i) => c.attach({ data: (b) => { got[i] += b.toString(); }, end: (r) => ends.push(`${i}:${r}`) }));
  c.write(Buffer.from('a'));
  det[1]!();
  c.write(Buffer.from('b'));
  assert.deepEqual(got, ['ab', 'a', 'ab']);
  c.end('domain destroyed');
  c.end('again');
  assert.deepEqual(ends, ['0:domain destroyed', '2:domain destroyed']);
  c.write(Buffer.from('late'));
  assert.equal(got[0], 'ab');
  let lateEnd = '';
  c.attach({ data: () => {}, end: (r) => { lateEnd = r; } });
  assert.equal(lateEnd, 'domain is gone');
});

test('the log is opened at the first byte and closed at the end; a renamed domain keeps writing to its renamed log', async () => {
  const dir = tmpStateDir();
  // descriptors of this process open on a file under `dir`
  const open = () => fs.readdirSync('/proc/self/fd').filter((fd) => { try { return fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir); } catch { return false; } }).length;
  const c = new DomainConsole(path.join(dir, 'old.log'));
  assert.equal(open(), 0, 'nothing open before output');
  c.write(Buffer.from('one\n'));
  await c.flushed();
  assert.equal(open(), 1);
  c.rename(path.join(dir, 'new.log'));
  c.write(Buffer.from('two\n'));
  await c.flushed();
  assert.equal(fs.readFileSync(path.join(dir, 'new.log'), 'utf8'), 'one\ntwo\n');
  assert.equal(fs.existsSync(path.join(dir, 'old.log')), false);
  c.end('domain destroyed');
  await c.flushed();
  await until('the log file being closed (asynchronously) after end', () => open() === 0);
});

test('output the disk has not taken beyond the backlog cap is counted, not logged; readers still get it', async () => {
  const f = path.join(tmpStateDir(), 'b.log');
  const c = new DomainConsole(f, { backlogBytes: 100 });
  let seen = 0;
  c.attach({ data: (b) => { seen += b.length; }, end: () => {} });
  for (let i = 0; i < 10; i++) c.write(Buffer.alloc(30, 0x41));
  assert.equal(seen, 300);
  await c.flushed();
  assert.equal(fs.statSync(f).size + c.dropped, 300);
  assert.ok(c.dropped > 0);
});

test('the PV console ring (console.ts): output read across the wrap, indexes a guest garbled stay inside the ring', () => {
  const page = new Uint8Array(4096);
  const u32 = new Uint32Array(page.buffer);
  const [IN_CONS, IN_PROD, OUT_CONS, OUT_PROD] = [768, 769, 770, 771]; // xencons_interface's indexes at 3072..3087
  let notified = 0;
  const hv = { memory: () => ({ bytes: page, buffer: page.buffer }), bindDom0: () => 7, notify: () => { notified++; }, closeDom0: () => {} } as unknown as Hypervisor;
  const got: string[] = [];
  const con = new ConsoleBackend(hv, 1, 0, 3, (b) => got.push(Buffer.from(b).toString('latin1')));
  const put = (at: number, text: string) => { for (let i = 0; i < text.length; i++) page[1024 + ((at + i) & 2047)] = text.charCodeAt(i); };
  // across the end of out[2048], with the indexes about to wrap at 2^32
  const cons = 2 ** 32 - 3;
  put(cons, 'wrapped!');
  u32[OUT_CONS] = cons;
  u32[OUT_PROD] = (cons + 8) >>> 0;
  con.drain();
  assert.deepEqual(got, ['wrapped!']);
  assert.equal(u32[OUT_CONS], 5);
  assert.equal(notified, 1);
  // prod more than a ring ahead: the last 2048 bytes, once
  put(0, 'x'.repeat(2048));
  u32[OUT_CONS] = 0;
  u32[OUT_PROD] = 100_000;
  con.drain();
  assert.equal(got[1]!.length, 2048);
  assert.equal(u32[OUT_CONS], 100_000);
  con.drain();
  assert.equal(got.length, 2);
  // input: what fits in in[1024]; a consumer index ahead of prod takes nothing; out[] untouched
  const out = page.slice(1024, 3072);
  u32[IN_CONS] = 10;
  u32[IN_PROD] = 10;
  assert.equal(con.write(Buffer.alloc(1500, 0x41)), 1024);
  assert.equal(u32[IN_PROD], 1034);
  u32[IN_CONS] = 2000;
  assert.equal(con.write(Buffer.from('more')), 0);
  assert.deepEqual(page.slice(1024, 3072), out);
});
