import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NullSched } from './null.js';
import { simulate, unit } from './sim.js';
import type { SchedUnit } from './scheduler.js';

const MS = 1_000_000n;

test('null: the assigned vCPU is never preempted; the others wait in the waitqueue', () => {
  const n = new NullSched<SchedUnit>();
  const [a, b, c] = [unit(1), unit(2), unit(3)];
  // a blocks and wakes (a periodic task), b and c are hogs arriving later.
  const res = simulate(n, [{ unit: a, period: 10n * MS, work: 3n * MS }, { unit: b, offset: 1n * MS }, { unit: c, offset: 2n * MS }], 1000n * MS);
  const sa = res.stats.get(a)!;
  assert.equal(sa.preempted, 0, 'never preempted');
  assert.equal(sa.runtime, 300n * MS);
  assert.equal(sa.runs, 100, 'one run per job: it runs to completion each time');
  assert.equal(res.stats.get(b)!.runtime, 0n, 'b waits: the pCPU is a\'s even while a is blocked');
  assert.equal(res.stats.get(c)!.runtime, 0n);
  assert.deepEqual(n.assignment(), { assigned: a, waiting: [b, c] });
  assert.deepEqual(sa.wakeLatency.filter((x) => x !== 0n), [], 'a runs the instant it wakes');
});

test('null: when the assigned domain goes, the first waiter gets the pCPU', () => {
  const n = new NullSched<SchedUnit>();
  const [a, b, c] = [unit(1), unit(2), unit(3)];
  n.insert(a, 0n);
  n.insert(b, 0n);
  n.insert(c, 0n);
  assert.equal(n.pick(0n), a);
  assert.equal(n.slice(a, 0n), 0n);
  n.removeDomain(1);
  assert.equal(n.pick(1n), b);
  assert.deepEqual(n.assignment(), { assigned: b, waiting: [c] });
  assert.equal(n.hasWaiting(), false, 'b runs; c waits for the pCPU, not for a turn');
});
