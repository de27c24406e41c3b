import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { WatchEvent, XsClientBase } from './client.js';
import { fixture, raw, type Fixture } from './helpers.js';
import { XsType } from './wire.js';

let f: Fixture;
before(async () => {
  f = await fixture();
});
after(async () => {
  await f.close();
});

/** Collect events on a client until `settle` resolves. */
function collect(c: XsClientBase): { events: WatchEvent[]; stop: () => WatchEvent[] } {
  const events: WatchEvent[] = [];
  const on = (e: WatchEvent): void => {
    events.push(e);
  };
  c.on('watch', on);
  return { events, stop: () => (c.off('watch', on), events) };
}
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 20));

test('a watch fires once on registration, with the path as given', async () => {
  const c = collect(f.dom0);
  await f.dom0.watch('/w/a', 'tok1');
  await settle();
  assert.deepEqual(c.stop(), [{ path: '/w/a', token: 'tok1' }]);
  assert.equal(await raw(f.dom0, XsType.WATCH, '/w/a\0tok1\0'), 'ERROR EEXIST|');
  await f.dom0.unwatch('/w/a', 'tok1');
  assert.equal(await raw(f.dom0, XsType.UNWATCH, '/w/a\0tok1\0'), 'ERROR ENOENT|');
  assert.equal(await raw(f.dom0, XsType.WATCH, '/w/a\0'), 'ERROR EINVAL|');
  assert.equal(await raw(f.dom0, XsType.WATCH, '/w/a b\0t\0'), 'ERROR EINVAL|');
});

test('write, mkdir, set_perms and rm at or below the path fire; elsewhere do not', async () => {
  await f.dom0.watch('/w/b', 'b');
  await settle();
  const c = collect(f.dom0);
  await f.dom0.write('/w/b', '1');
  await f.dom0.write('/w/b/c/d', '2');
  await f.dom0.mkdir('/w/b/m');
  await f.dom0.setPerms('/w/b/m', ['n0', 'r3']);
  await f.dom0.write('/w/bb', 'sibling-prefix');
  await f.dom0.write('/w/other', 'x');
  await f.dom0.rm('/w/b/c');
  await settle();
  assert.deepEqual(c.stop().map((e) => e.path), ['/w/b', '/w/b/c/d', '/w/b/m', '/w/b/m', '/w/b/c']);
  await f.dom0.unwatch('/w/b', 'b');
});

test('removing an ancestor reports the watched path', async () => {
  await f.dom0.write('/w/anc/x/y', '1');
  await f.dom0.watch('/w/anc/x/y', 'deep');
  await f.dom0.watch('/w/anc/x/none', 'absent');
  await settle();
  const c = collect(f.dom0);
  await f.dom0.rm('/w/anc');
  await settle();
  assert.deepEqual(c.stop(), [{ path: '/w/anc/x/y', token: 'deep' }]);
  await f.dom0.resetWatches();
});

test('relative watches report relative paths', async () => {
  await f.dom0.watch('rel/w', 'r');
  await settle();
  const c = collect(f.dom0);
  await f.dom0.write('/local/domain/0/rel/w/k', '1');
  await settle();
  assert.deepEqual(c.stop(), [{ path: 'rel/w/k', token: 'r' }]);
  await f.dom0.unwatch('rel/w', 'r');
});

test('depth-limited watches ignore deeper changes', async () => {
  await f.dom0.watch('/w/depth', 'd1', 1);
  await settle();
  const c = collect(f.dom0);
  await f.dom0.write('/w/depth', '0');
  await f.dom0.write('/w/depth/a', '1');
  await f.dom0.write('/w/depth/a/b', '2');
  await settle();
  assert.deepEqual(c.stop().map((e) => e.path), ['/w/depth', '/w/depth/a']);
  await f.dom0.unwatch('/w/depth', 'd1');
  assert.equal(await raw(f.dom0, XsType.WATCH, '/w/depth\0d\0x\0'), 'ERROR EINVAL|');
});

test('events fired inside a transaction are delivered at commit, and never on abort', async () => {
  await f.dom0.watch('/w/tx', 't');
  await settle();
  const c = collect(f.dom0);
  const tx = await f.dom0.transactionStart();
  await f.dom0.write('/w/tx/a', '1', tx);
  await settle();
  assert.equal(c.events.length, 0);
  await f.dom0.transactionEnd(tx, true);
  await settle();
  assert.deepEqual(c.events.map((e) => e.path), ['/w/tx/a']);
  const tx2 = await f.dom0.transactionStart();
  await f.dom0.write('/w/tx/b', '1', tx2);
  await f.dom0.transactionEnd(tx2, false);
  await settle();
  assert.deepEqual(c.stop().map((e) => e.path), ['/w/tx/a']);
  await f.dom0.unwatch('/w/tx', 't');
});

test('a guest only sees events for nodes it may read', async () => {
  const g = await f.guest(5);
  await f.dom0.mkdir('/local/domain/5');
  await f.dom0.setPerms('/local/domain/5', ['n5']);
  await f.dom0.mkdir('/w/shared');
  await g.watch('/w/shared', 'g');
  await g.watch('device', 'rel');
  await settle();
  const c = collect(g);
  await f.dom0.write('/w/shared/hidden', 'x');
  await f.dom0.write('/w/shared/visible', 'x');
  await f.dom0.setPerms('/w/shared/visible', ['n0', 'r5']);
  await f.dom0.write('/local/domain/5/device/vbd/1', 'x');
  await settle();
  assert.deepEqual(c.stop(), [
    { path: '/w/shared/visible', token: 'g' },
    { path: 'device/vbd/1', token: 'rel' },
  ]);
  await f.dom0.release(5);
});

test('@introduceDomain and @releaseDomain, plain, per-domid and depth forms', async () => {
  await f.dom0.watch('@introduceDomain', 'intro');
  await f.dom0.watch('@releaseDomain', 'rel');
  await f.dom0.watch('@releaseDomain', 'rel-depth', 1);
  await f.dom0.watch('@releaseDomain/7', 'only7');
  await settle();
  const c = collect(f.dom0);
  await f.guest(6);
  await f.guest(7);
  await f.dom0.release(6);
  f.d.domainDied(7);
  f.d.domainDied(7); // reported once
  await settle();
  await f.dom0.release(7);
  await settle();
  const got = c.stop().map((e) => `${e.token}:${e.path}`);
  assert.deepEqual(got, [
    'intro:@introduceDomain', 'intro:@introduceDomain',
    'rel:@releaseDomain', 'rel-depth:@releaseDomain/6',
    'rel:@releaseDomain', 'rel-depth:@releaseDomain/7', 'only7:@releaseDomain/7',
    'rel:@releaseDomain', 'rel-depth:@releaseDomain/7', 'only7:@releaseDomain/7',
  ]);
  await f.dom0.resetWatches();
});

test('guests get special events only when allowed by the special node\'s perms', async () => {
  const g = await f.guest(8);
  await g.watch('@releaseDomain', 'g');
  await settle();
  const c = collect(g);
  await f.guest(9);
  await f.dom0.release(9);
  await settle();
  assert.equal(c.events.length, 0);
  await f.dom0.setPerms('@releaseDomain', ['n0', 'r8']);
  await f.guest(10);
  await f.dom0.release(10);
  await settle();
  assert.deepEqual(c.stop(), [{ path: '@releaseDomain', token: 'g' }]);
  await f.dom0.setPerms('@releaseDomain', ['n0']);
  await f.dom0.release(8);
});

test('watch quota: E2BIG past the limit for a guest', async () => {
  const g = await f.guest(11);
  await f.dom0.setQuota('watches', 3, 11);
  for (let i = 0; i < 3; i++) await g.watch(`/w/q${i}`, 't');
  assert.equal(await raw(g, XsType.WATCH, '/w/q9\0t\0'), 'ERROR E2BIG|');
  await g.unwatch('/w/q0', 't');
  await g.watch('/w/q9', 't');
  await f.dom0.release(11);
});
