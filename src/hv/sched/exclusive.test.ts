// The exclusivity record on its own (no pCPU workers: nrPcpus 0 makes the
// kicks no-ops, pCPU acknowledgements are written by hand).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HostShared, DomainShared } from '../shared.js';
import { acquireExclusive, releaseExclusive, exclusiveState, exclusiveAllows, allPcpusStopped, exclusiveTriggered, EXCLUSIVE_END } from './exclusive.js';
import { XenError, EBUSY } from '../errno.js';

const busy = (e: unknown) => e instanceof XenError && e.errno === EBUSY;

test('one holder at a time: a second acquire is -EBUSY, the holder included; release frees it for the next', () => {
  const host = new HostShared();
  assert.ok(exclusiveAllows(host, 5) && exclusiveAllows(host, 6), 'nobody holds it: everyone runs');
  const a = acquireExclusive(host, 5, 1000n, 500n, -1);
  assert.equal(a.expires, 1500n);
  assert.ok(exclusiveAllows(host, 5));
  assert.ok(!exclusiveAllows(host, 6), 'others stop');
  assert.throws(() => acquireExclusive(host, 6, 1100n, 10n, -1), busy);
  assert.throws(() => acquireExclusive(host, 5, 1100n, 10n, -1), busy);
  assert.equal(releaseExclusive(host, 6, EXCLUSIVE_END.released), false, 'only the holder releases');
  assert.equal(releaseExclusive(host, 5, EXCLUSIVE_END.released), true);
  assert.equal(releaseExclusive(host, 5, EXCLUSIVE_END.released), false, 'once');
  const s = exclusiveState(host);
  assert.equal(s.holder, 0);
  assert.equal(s.previous, 5);
  assert.equal(s.endReason, EXCLUSIVE_END.released);
  assert.ok(s.epoch > a.epoch);
  const b = acquireExclusive(host, 6, 2000n, 10n, -1);
  assert.equal(exclusiveState(host).holder, 6);
  assert.ok(b.epoch > s.epoch);
});

test('an expiry seen late ends only its own period, not the holder\'s next one', () => {
  const host = new HostShared();
  const first = acquireExclusive(host, 5, 0n, 100n, -1);
  assert.ok(releaseExclusive(host, 5, EXCLUSIVE_END.released));
  const second = acquireExclusive(host, 5, 200n, 100n, -1);
  assert.equal(releaseExclusive(host, 5, EXCLUSIVE_END.expired, first.epoch), false);
  assert.equal(exclusiveState(host).holder, 5);
  assert.ok(releaseExclusive(host, 5, EXCLUSIVE_END.expired, second.epoch));
  assert.equal(exclusiveState(host).endReason, EXCLUSIVE_END.expired);
});

test('the machine is exclusive once every pCPU has acknowledged the epoch', () => {
  const host = new HostShared();
  host.nrPcpus = 3;
  const { epoch } = acquireExclusive(host, 7, 0n, 100n, 1);
  assert.equal(exclusiveState(host).waiter, 1);
  assert.ok(!allPcpusStopped(host, epoch));
  host.setExclusiveAck(0, epoch);
  host.setExclusiveAck(2, epoch);
  assert.ok(!allPcpusStopped(host, epoch));
  host.setExclusiveAck(1, epoch);
  assert.ok(allPcpusStopped(host, epoch));
  releaseExclusive(host, 7, EXCLUSIVE_END.gone);
  assert.ok(!allPcpusStopped(host, exclusiveState(host).epoch));
});

test('a trigger event takes the machine for the granted limit only for a granted domain, and is ignored while it is held', () => {
  const host = new HostShared();
  const granted = DomainShared.create(3, 1, 63);
  granted.set('exclusiveMaxUs', 2000);
  const other = DomainShared.create(4, 1, 63);
  exclusiveTriggered(host, other, 0n);
  assert.equal(exclusiveState(host).holder, 0, 'not granted: nothing');
  exclusiveTriggered(host, granted, 1000n);
  assert.deepEqual([exclusiveState(host).holder, exclusiveState(host).expires], [3, 1000n + 2_000_000n]);
  other.set('exclusiveMaxUs', 1000);
  exclusiveTriggered(host, other, 2000n);
  assert.equal(exclusiveState(host).holder, 3, 'held: the second trigger changes nothing');
});
