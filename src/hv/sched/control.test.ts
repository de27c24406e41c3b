import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applySchedMessage } from './control.js';
import { createScheduler } from './schedulers.js';
import { Arinc653 } from './arinc653.js';
import { Credit2 } from './credit2.js';
import type { SchedUnit } from './scheduler.js';

const w = { domains: 0, sliceNs: 10_000_000n, trace: null };

test('a pCPU joining a pool gets the pool\'s scheduler with the pool\'s and its domains\' parameters', () => {
  const cur = createScheduler<SchedUnit>('credit2');
  const next = applySchedMessage(cur, {
    type: 'sched-set', sched: 'arinc653', pool: {}, params: [],
    arinc653: { schedule: { majorFrame: 10n, entries: [{ domid: 3, vcpu: 0, runtime: 10n }] }, epoch: 5n },
  }, w);
  assert.ok(next instanceof Arinc653);
  assert.deepEqual(next.getSchedule()?.epoch, 5n);
  const rt = applySchedMessage(cur, { type: 'sched-set', sched: 'rtds', pool: {}, params: [{ domid: 4, vcpu: 1, params: { period: 2000, budget: 500 } }], arinc653: null }, w);
  assert.deepEqual(rt.params(4, 1), { period: 2000, budget: 500, extratime: 1 });
  const c2 = applySchedMessage(cur, { type: 'sched-set', sched: 'credit2', pool: { ratelimitUs: 300 }, params: [], arinc653: null }, w);
  assert.equal((c2 as Credit2).ratelimitUs, 300);
});

test('what cannot be applied is refused and leaves the policy as it was', () => {
  const cur = createScheduler<SchedUnit>('credit2');
  assert.throws(() => applySchedMessage(cur, { type: 'sched-set', sched: 'null', pool: {}, params: [], arinc653: null }, { ...w, domains: 2 }), /with 2 domain/);
  assert.throws(() => applySchedMessage(cur, { type: 'sched-arinc653', schedule: { majorFrame: 1n, entries: [{ domid: 1, vcpu: 0, runtime: 1n }] }, epoch: 0n }, w), /ARINC 653 schedule for a credit2 pCPU/);
  assert.equal(applySchedMessage(cur, { type: 'sched-adjust', domid: 1, params: { weight: 9 } }, w), cur);
  assert.deepEqual(cur.params(1), { weight: 9, cap: 0 });
});
