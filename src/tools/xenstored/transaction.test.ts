import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { fixture, raw, type Fixture } from './helpers.js';
import { XsType } from './wire.js';

let f: Fixture;
before(async () => {
  f = await fixture();
});
after(async () => {
  await f.close();
});

test('changes inside a transaction are private until commit', async () => {
  const tx = await f.dom0.transactionStart();
  assert.ok(tx > 0);
  await f.dom0.write('/tx/a', '1', tx);
  assert.equal(await f.dom0.read('/tx/a', tx), '1');
  assert.equal(await f.dom0.tryRead('/tx/a'), undefined);
  await f.dom0.transactionEnd(tx, true);
  assert.equal(await f.dom0.read('/tx/a'), '1');
});

test('abort discards everything', async () => {
  const tx = await f.dom0.transactionStart();
  await f.dom0.write('/tx/b', '1', tx);
  await f.dom0.rm('/tx/a', tx);
  await f.dom0.transactionEnd(tx, false);
  assert.equal(await f.dom0.tryRead('/tx/b'), undefined);
  assert.equal(await f.dom0.read('/tx/a'), '1');
});

test('a node read in the transaction and changed outside makes commit fail with EAGAIN', async () => {
  await f.dom0.write('/tx/c', 'a');
  const tx = await f.dom0.transactionStart();
  assert.equal(await f.dom0.read('/tx/c', tx), 'a');
  await f.dom0.write('/tx/c', 'b');
  // Reads inside stay repeatable.
  assert.equal(await f.dom0.read('/tx/c', tx), 'a');
  await f.dom0.write('/tx/c', 'c', tx);
  assert.equal(await raw(f.dom0, XsType.TRANSACTION_END, 'T\0', tx), 'ERROR EAGAIN|');
  assert.equal(await f.dom0.read('/tx/c'), 'b');
  // The transaction is gone after a failed commit.
  assert.equal(await raw(f.dom0, XsType.TRANSACTION_END, 'T\0', tx), 'ERROR ENOENT|');
});

test('a node that did not exist when read and appeared since conflicts', async () => {
  const tx = await f.dom0.transactionStart();
  assert.equal(await f.dom0.tryRead('/tx/new', tx), undefined);
  await f.dom0.write('/tx/new', 'outside');
  await f.dom0.write('/tx/other', 'x', tx);
  assert.equal(await raw(f.dom0, XsType.TRANSACTION_END, 'T\0', tx), 'ERROR EAGAIN|');
});

test('changes to nodes the transaction never touched do not conflict', async () => {
  await f.dom0.write('/tx/d/x', '1');
  await f.dom0.write('/tx/e/y', '1');
  const tx = await f.dom0.transactionStart();
  assert.equal(await f.dom0.read('/tx/d/x', tx), '1');
  await f.dom0.write('/tx/d/x', '2', tx);
  await f.dom0.write('/tx/e/y', 'outside');
  await f.dom0.write('/tx/e/z', 'outside');
  await f.dom0.transactionEnd(tx, true);
  assert.equal(await f.dom0.read('/tx/d/x'), '2');
  assert.equal(await f.dom0.read('/tx/e/z'), 'outside');
});

test('a read-only transaction whose reads changed fails; an untouched one commits', async () => {
  await f.dom0.write('/tx/ro', '1');
  const t1 = await f.dom0.transactionStart();
  await f.dom0.read('/tx/ro', t1);
  await f.dom0.write('/tx/ro', '2');
  assert.equal(await raw(f.dom0, XsType.TRANSACTION_END, 'T\0', t1), 'ERROR EAGAIN|');
  const t2 = await f.dom0.transactionStart();
  await f.dom0.read('/tx/ro', t2);
  await f.dom0.transactionEnd(t2, true);
});

test('mkdir, rm, set_perms, directory and get_perms work inside transactions', async () => {
  await f.dom0.write('/tx/m/old/deep', '1');
  const tx = await f.dom0.transactionStart();
  await f.dom0.mkdir('/tx/m/new', tx);
  await f.dom0.rm('/tx/m/old', tx);
  await f.dom0.setPerms('/tx/m/new', ['n0', 'r4'], tx);
  assert.deepEqual(await f.dom0.directory('/tx/m', tx), ['new']);
  assert.deepEqual(await f.dom0.getPerms('/tx/m/new', tx), ['n0', 'r4']);
  assert.equal(await f.dom0.tryRead('/tx/m/old/deep', tx), undefined);
  assert.deepEqual(await f.dom0.directory('/tx/m'), ['old']);
  await f.dom0.transactionEnd(tx, true);
  assert.deepEqual(await f.dom0.directory('/tx/m'), ['new']);
  assert.equal(await f.dom0.tryRead('/tx/m/old/deep'), undefined);
  assert.deepEqual(f.d.store.check(), []);
});

test('two transactions creating siblings: the second to commit conflicts on the parent', async () => {
  await f.dom0.mkdir('/tx/sib');
  const t1 = await f.dom0.transactionStart();
  const t2 = await f.dom0.transactionStart();
  await f.dom0.write('/tx/sib/a', '1', t1);
  await f.dom0.write('/tx/sib/b', '1', t2);
  await f.dom0.transactionEnd(t1, true);
  assert.equal(await raw(f.dom0, XsType.TRANSACTION_END, 'T\0', t2), 'ERROR EAGAIN|');
  assert.deepEqual(await f.dom0.directory('/tx/sib'), ['a']);
});

test('TRANSACTION_START inside a transaction is EBUSY; TRANSACTION_END needs T or F', async () => {
  const tx = await f.dom0.transactionStart();
  assert.equal(await raw(f.dom0, XsType.TRANSACTION_START, '\0', tx), 'ERROR EBUSY|');
  assert.equal(await raw(f.dom0, XsType.TRANSACTION_START, '\0', 4242), 'ERROR ENOENT|');
  assert.equal(await raw(f.dom0, XsType.TRANSACTION_END, 'X\0', tx), 'ERROR EINVAL|');
  assert.equal(await raw(f.dom0, XsType.TRANSACTION_END, 'T\0', 0), 'ERROR ENOENT|');
  await f.dom0.transactionEnd(tx, false);
});

test('transaction ids are distinct and a connection may hold several', async () => {
  const ids = await Promise.all([1, 2, 3, 4].map(() => f.dom0.transactionStart()));
  assert.equal(new Set(ids).size, 4);
  for (const id of ids) await f.dom0.transactionEnd(id, false);
});

test('per-guest transaction limit (ENOSPC) and nodes-per-transaction limit', async () => {
  const g = await f.guest(3);
  await f.dom0.mkdir('/local/domain/3');
  await f.dom0.setPerms('/local/domain/3', ['n3']);
  await f.dom0.setQuota('transactions', 2, 3);
  const a = await g.transactionStart();
  const b = await g.transactionStart();
  assert.equal(await raw(g, XsType.TRANSACTION_START, '\0'), 'ERROR ENOSPC|');
  await g.transactionEnd(a, false);
  await g.transactionEnd(b, false);
  await f.dom0.setQuota('transaction-nodes', 4, 3);
  const t = await g.transactionStart();
  await g.write('n1', '', t);
  assert.equal(await raw(g, XsType.WRITE, 'n2/x/y\0', t), 'ERROR ENOSPC|');
  await g.transactionEnd(t, false);
  await f.dom0.release(3);
});

test('a transaction dies with its connection', async () => {
  const g = await f.guest(4);
  const t = await g.transactionStart();
  assert.ok(t > 0);
  await f.dom0.release(4);
  assert.deepEqual(f.d.store.check(), []);
});

test('a create refused by the transaction-nodes quota leaves nothing half-made to commit', async () => {
  const g = await f.guest(5);
  await f.dom0.mkdir('/local/domain/5');
  await f.dom0.setPerms('/local/domain/5', ['n5']);
  await f.dom0.setQuota('transaction-nodes', 4, 5);
  const t = await g.transactionStart();
  await g.write('n1', '', t);
  assert.equal(await raw(g, XsType.WRITE, 'n2/x/y\0', t), 'ERROR ENOSPC|');
  await g.transactionEnd(t, true);
  assert.deepEqual(f.d.store.check(), []);
  assert.deepEqual(await f.dom0.directory('/local/domain/5'), ['n1']);
  await f.dom0.release(5);
});

test('a guest transaction cannot record unbounded reads (transaction-nodes counts accessed nodes)', async () => {
  const g = await f.guest(6);
  await f.dom0.setQuota('transaction-nodes', 8, 6);
  const t = await g.transactionStart();
  for (let i = 0; i < 8; i++) assert.equal(await raw(g, XsType.READ, `absent${i}\0`, t), 'ERROR ENOENT|');
  assert.equal(await raw(g, XsType.READ, 'absent8\0', t), 'ERROR ENOSPC|');
  // Nodes already accessed stay readable.
  assert.equal(await raw(g, XsType.READ, 'absent0\0', t), 'ERROR ENOENT|');
  await g.transactionEnd(t, false);
  await f.dom0.release(6);
});

test('a guest transaction cannot pile up changes by rewriting one node', async () => {
  const g = await f.guest(7);
  await f.dom0.mkdir('/local/domain/7');
  await f.dom0.setPerms('/local/domain/7', ['n7']);
  await g.write('c', '0');
  await f.dom0.setQuota('transaction-nodes', 8, 7);
  const t = await g.transactionStart();
  for (let i = 0; i < 8; i++) await g.write('c', String(i), t);
  assert.equal(await raw(g, XsType.WRITE, 'c\0x', t), 'ERROR ENOSPC|');
  await g.transactionEnd(t, true);
  assert.equal(await g.read('c'), '7');
  await f.dom0.release(7);
});
