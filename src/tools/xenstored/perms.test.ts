// Permissions as seen by unprivileged guests talking over their rings.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { fixture, raw, type Fixture, type RingGuest } from './helpers.js';
import { XsType } from './wire.js';

let f: Fixture;
let g1: RingGuest;
let g2: RingGuest;
before(async () => {
  f = await fixture();
  g1 = await f.guest(1);
  g2 = await f.guest(2);
  // The libxl skeleton: home read-only to the guest, a few writable subtrees.
  for (const d of [1, 2]) {
    await f.dom0.mkdir(`/local/domain/${d}`);
    await f.dom0.setPerms(`/local/domain/${d}`, ['n0', `r${d}`]);
    await f.dom0.mkdir(`/local/domain/${d}/data`);
    await f.dom0.setPerms(`/local/domain/${d}/data`, [`n${d}`]);
  }
});
after(async () => {
  await f.close();
});

test('a guest reads its read-only home and cannot write there', async () => {
  await f.dom0.write('/local/domain/1/name', 'guest1');
  assert.equal(await g1.read('name'), 'guest1');
  assert.equal(await g1.read('/local/domain/1/name'), 'guest1');
  assert.equal(await raw(g1, XsType.WRITE, 'name\0x'), 'ERROR EACCES|');
  assert.equal(await raw(g1, XsType.WRITE, 'newnode\0x'), 'ERROR EACCES|');
  assert.equal(await raw(g1, XsType.RM, 'name\0'), 'ERROR EACCES|');
});

test('the default entry decides for domains not listed; the root is closed', async () => {
  assert.equal(await raw(g2, XsType.READ, '/local/domain/1/name\0'), 'ERROR EACCES|');
  assert.equal(await raw(g2, XsType.DIRECTORY, '/local/domain/1\0'), 'ERROR EACCES|');
  assert.equal(await raw(g2, XsType.GET_PERMS, '/local/domain/1\0'), 'ERROR EACCES|');
  assert.equal(await raw(g1, XsType.DIRECTORY, '/\0'), 'ERROR EACCES|');
  assert.equal(await raw(g1, XsType.WRITE, '/x\0y'), 'ERROR EACCES|');
});

test('nodes a guest creates are owned by it and inherit the rest of the ACL', async () => {
  await f.dom0.setPerms('/local/domain/1/data', ['n1', 'r2']);
  await g1.write('data/a/b', 'v');
  assert.deepEqual(await g1.getPerms('data/a'), ['n1', 'r2']);
  assert.deepEqual(await g1.getPerms('data/a/b'), ['n1', 'r2']);
  assert.equal(await g2.read('/local/domain/1/data/a/b'), 'v');
  assert.equal(await raw(g2, XsType.WRITE, '/local/domain/1/data/a/b\0w'), 'ERROR EACCES|');
  // dom0 creating below keeps the parent's owner.
  await f.dom0.write('/local/domain/1/data/a/z', '');
  assert.deepEqual(await f.dom0.getPerms('/local/domain/1/data/a/z'), ['n1', 'r2']);
});

test('only the owner changes an ACL, and only privileged domains change the owner', async () => {
  await g1.write('data/own', '');
  await g1.setPerms('data/own', ['n1', 'b2']);
  assert.equal(await g2.read('/local/domain/1/data/own'), '');
  await g2.write('/local/domain/1/data/own', 'by2');
  assert.equal(await raw(g2, XsType.SET_PERMS, '/local/domain/1/data/own\0n2\0'), 'ERROR EACCES|');
  assert.equal(await raw(g1, XsType.SET_PERMS, 'data/own\0n2\0'), 'ERROR EPERM|');
  await f.dom0.setPerms('/local/domain/1/data/own', ['n2']);
  assert.equal(await raw(g1, XsType.READ, 'data/own\0'), 'ERROR EACCES|');
});

test('privileged operations are refused to guests', async () => {
  for (const [t, p] of [
    [XsType.INTRODUCE, '5\0\x31\0\x31\0'], [XsType.RELEASE, '2\0'], [XsType.IS_DOMAIN_INTRODUCED, '2\0'],
    [XsType.RESUME, '2\0'], [XsType.SET_TARGET, '1\0\x32\0'], [XsType.SET_FEATURE, '1\0\x31\0'],
    [XsType.GET_QUOTA, ''], [XsType.SET_QUOTA, 'nodes\0\x31\0'], [XsType.CONTROL, 'memreport\0'],
  ] as const) {
    assert.equal(await raw(g1, t, p), 'ERROR EACCES|', `type ${t}`);
  }
  assert.equal(await g1.getDomainPath(1), '/local/domain/1');
  assert.equal(await g1.getFeature(), 7);
  assert.equal(await g1.getFeature(1), 7);
  assert.equal(await raw(g1, XsType.GET_FEATURE, '2\0'), 'ERROR EACCES|');
});

test('SET_TARGET gives a device model its target domain\'s rights', async () => {
  await f.dom0.write('/local/domain/2/data/secret', 's');
  assert.equal(await raw(g1, XsType.READ, '/local/domain/2/data/secret\0'), 'ERROR EACCES|');
  await f.dom0.setTarget(1, 2);
  assert.equal(await g1.read('/local/domain/2/data/secret'), 's');
  await g1.write('/local/domain/2/data/from-dm', 'x');
  await f.dom0.setTarget(1, 0);
  assert.equal(await raw(g1, XsType.READ, '/local/domain/2/data/secret\0'), 'ERROR EACCES|');
});

test('relative paths of a guest resolve under its own home', async () => {
  await g2.write('data/rel', 'r');
  assert.equal(await f.dom0.read('/local/domain/2/data/rel'), 'r');
  assert.deepEqual(await g2.directory('data'), ['secret', 'from-dm', 'rel']);
});

test('the nodes a domain owns are indexed: outermost ones only, following chown, rm and transactions', async () => {
  const s = f.d.store;
  await f.dom0.write('/own/a/b/c/d', '');
  await f.dom0.setPerms('/own/a/b', ['n7']);
  await f.dom0.setPerms('/own/a/b/c/d', ['n7', 'r0']); // below another of its nodes: not a root
  await f.dom0.transaction(async (tx) => {
    await f.dom0.write('/own/x', '', tx);
    await f.dom0.setPerms('/own/x', ['n7'], tx);
  });
  assert.deepEqual(s.ownedRoots(7), ['/own/a/b', '/own/x']);
  await f.dom0.setPerms('/own/x', ['n0']);
  await f.dom0.setPerms('/own/a/b', ['n0']);
  // /own/a/b/c (dom0's) now stands between: d is a root of its own
  assert.deepEqual(s.ownedRoots(7), ['/own/a/b/c/d']);
  await f.dom0.rm('/own');
  assert.deepEqual(s.ownedRoots(7), []);
});

test('released domains lose the nodes they own', async () => {
  await g2.write('data/x/y', '1');
  await f.dom0.release(2);
  assert.equal(await f.dom0.tryRead('/local/domain/2/data'), undefined);
  assert.equal(await f.dom0.read('/local/domain/2'), '');
  assert.deepEqual(f.d.store.check(), []);
});
