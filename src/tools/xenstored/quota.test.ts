import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { fixture, raw, type Fixture, type RingGuest } from './helpers.js';
import { XsType } from './wire.js';
import { until } from '../../testing/wait.js';

let f: Fixture;
let g: RingGuest;
before(async () => {
  f = await fixture();
  g = await f.guest(3);
  await f.dom0.mkdir('/local/domain/3');
  await f.dom0.setPerms('/local/domain/3', ['n3']);
});
after(async () => {
  await f.close();
});

test('defaults are cxenstored\'s', async () => {
  const q = f.d.getQuota(3);
  assert.deepEqual(
    [q.nodes, q.watches, q.outstanding, q.transactions, q.nodeSize, q.permissions, q.transactionNodes, q.memory, q.memorySoft, q.pathMax],
    [1000, 128, 20, 10, 2048, 5, 1024, 2621440, 2097152, 2048],
  );
});

test('node quota: ENOSPC once the guest owns too many nodes; removing frees them', async () => {
  await f.dom0.setQuota('nodes', 10, 3);
  const owned = f.d.store.accounting(3).nodes; // its home
  for (let i = 0; i < 10 - owned; i++) await g.write(`n${i}`, '');
  assert.equal(await raw(g, XsType.WRITE, 'one-more\0'), 'ERROR ENOSPC|');
  assert.equal(await raw(g, XsType.MKDIR, 'one-more\0'), 'ERROR ENOSPC|');
  await g.rm('n0');
  await g.write('one-more', '');
  // dom0 is never limited
  for (let i = 0; i < 20; i++) await f.dom0.write(`/local/domain/3/dom0-${i}`, '');
  for (let i = 1; i < 10 - owned; i++) await g.rm(`n${i}`);
  await g.rm('one-more');
  await f.dom0.setQuota('nodes', 1000, 3);
});

test('node size: a value past 2048 bytes is ENOSPC for a guest, fine for dom0', async () => {
  await g.write('small', Buffer.alloc(2000, 0x41));
  assert.equal(await raw(g, XsType.WRITE, Buffer.concat([Buffer.from('big\0'), Buffer.alloc(2100, 0x41)])), 'ERROR ENOSPC|');
  await f.dom0.write('/local/domain/3/dom0-big', Buffer.alloc(4000, 0x41));
});

test('permissions per node: at most 5 entries for a guest', async () => {
  await g.write('acl', '');
  await g.setPerms('acl', ['n3', 'r1', 'r2', 'r4', 'r5']);
  assert.equal(await raw(g, XsType.SET_PERMS, 'acl\0n3\0r1\0r2\0r4\0r5\0r6\0'), 'ERROR ENOSPC|');
});

test('path length quota applies to the part below the guest\'s home', async () => {
  await f.dom0.setQuota('path-max', 16, 3);
  await g.write('a'.repeat(16), '');
  assert.equal(await raw(g, XsType.WRITE, `${'a'.repeat(17)}\0`), 'ERROR EINVAL|');
  await f.dom0.setQuota('path-max', 2048, 3);
});

test('memory quota: ENOMEM when a guest\'s nodes exceed it; soft limit logs', async () => {
  await f.dom0.setQuota('memory', 20000, 3);
  await f.dom0.setQuota('memory-soft', 10000, 3);
  let err = '';
  for (let i = 0; i < 40 && !err; i++) {
    const r = await raw(g, XsType.WRITE, Buffer.concat([Buffer.from(`mem${i}\0`), Buffer.alloc(1000, 0x42)]));
    if (r !== 'OK OK|') err = r;
  }
  assert.equal(err, 'ERROR ENOMEM|');
  assert.ok(f.logs.some((l) => l.includes('over soft memory quota')));
  await f.dom0.setQuota('memory', 2621440, 3);
});

test('outstanding requests: a guest that stops reading replies cannot queue without bound', async () => {
  await f.dom0.setQuota('outstanding', 4, 3);
  g.consuming = false;
  const ps: Promise<unknown>[] = [];
  for (let i = 0; i < 200; i++) ps.push(g.read('small').catch(() => {}));
  const queued = () => Number(f.d.memreport().match(/queued output bytes: (\d+)/)![1]);
  await until('replies piling up for the guest that stopped reading', () => queued() > 2000);
  // The daemon stops taking requests once replies pile up; others are served meanwhile.
  assert.equal(await f.dom0.read('/local/domain/3/small').then((v) => v.length), 2000);
  assert.equal(await f.dom0.read('/local/domain/3/small').then((v) => v.length), 2000);
  assert.ok(queued() < 4 * 2100 + 4096, `queued ${queued()}`);
  g.consuming = true;
  g.pump();
  await Promise.all(ps);
  await f.dom0.setQuota('outstanding', 20, 3);
});

test('accounting matches the tree after all of that', () => {
  assert.deepEqual(f.d.store.check(), []);
});
