import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rtds } from './rt.js';
import { simulate, unit } from './sim.js';
import { TraceLog } from './trace.js';
import type { SchedUnit } from './scheduler.js';

const S = 1_000_000_000n;
const MS = 1_000_000n;

test('rtds: real-time vCPUs get their budgets every period with zero misses beside CPU hogs (utilisation 1.0)', () => {
  const r = new Rtds<SchedUnit>();
  const trace = new TraceLog();
  r.trace = trace;
  const [rt1, rt2, hog1, hog2] = [unit(1), unit(2), unit(3), unit(4)];
  r.adjust(1, { period: 10000, budget: 2000 }); // 20%
  r.adjust(2, { period: 5000, budget: 1500 }); // 30%
  r.adjust(3, { period: 20000, budget: 6000, extratime: 1 }); // 30% + what is left over
  r.adjust(4, { period: 10000, budget: 2000, extratime: 1 }); // 20% + what is left over
  // The real-time guests are periodic tasks using their whole budget, the hogs never block.
  const res = simulate(r, [
    { unit: rt1, period: 10n * MS, work: 2n * MS },
    { unit: rt2, period: 5n * MS, work: 1500_000n },
    { unit: hog1 },
    { unit: hog2 },
  ], 2n * S);
  for (const u of [rt1, rt2, hog1, hog2]) assert.equal(r.stats(u)!.misses, 0, `d${u.dom.domid} missed`);
  assert.equal(trace.records.filter((x) => x.event === 'miss').length, 0);
  assert.equal(res.stats.get(rt1)!.overruns, 0, 'rt1 finished every job before the next release');
  assert.equal(res.stats.get(rt2)!.overruns, 0, 'rt2 finished every job before the next release');
  assert.equal(res.stats.get(rt1)!.runtime, 400n * MS, '2 ms in each of 200 periods');
  assert.equal(res.stats.get(rt2)!.runtime, 600n * MS);
  assert.ok(r.stats(hog2)!.periods >= 199, `the hog was runnable at its ${r.stats(hog2)!.periods} deadlines, each checked`);
});

test('rtds: extratime hands out the time nobody reserved; without it a vCPU gets its budget and no more', () => {
  const r = new Rtds<SchedUnit>();
  const [a, b] = [unit(1), unit(2)];
  r.adjust(1, { period: 10000, budget: 3000, extratime: 0 });
  r.adjust(2, { period: 10000, budget: 3000, extratime: 1 });
  const res = simulate(r, [{ unit: a }, { unit: b }], S);
  assert.equal(res.stats.get(a)!.runtime, 300n * MS, '30% exactly');
  assert.equal(res.stats.get(b)!.runtime, 700n * MS, 'its 30% and the idle 40%');
  assert.equal(r.stats(a)!.misses + r.stats(b)!.misses, 0);
});

test('rtds: when the reservations exceed the pCPU, misses are counted and traced', () => {
  const r = new Rtds<SchedUnit>();
  const trace = new TraceLog();
  r.trace = trace;
  const [a, b] = [unit(1), unit(2)];
  r.adjust(1, { period: 10000, budget: 6000, extratime: 0 });
  r.adjust(2, { period: 10000, budget: 6000, extratime: 0 });
  simulate(r, [{ unit: a }, { unit: b }], S);
  const misses = r.stats(a)!.misses + r.stats(b)!.misses;
  // 120% asked of 100%: in each 10 ms period one of the two falls 2 ms short.
  assert.ok(misses >= 95 && misses <= 100, `${misses} misses in 100 periods`);
  const traced = trace.records.filter((x) => x.event === 'miss');
  assert.equal(traced.length, misses);
  assert.ok(traced.every((x) => x.arg > 0n), 'each miss records the budget left undelivered');
});

test('rtds: EDF, the earlier deadline runs first and a waking vCPU with an earlier deadline preempts at once', () => {
  const r = new Rtds<SchedUnit>();
  const [a, b] = [unit(1), unit(2)];
  r.adjust(1, { period: 10000, budget: 4000 });
  r.adjust(2, { period: 5000, budget: 1000 });
  r.insert(a, 0n);
  assert.equal(r.pick(0n), a);
  assert.equal(r.slice(a, 0n), 4n * MS, 'its budget');
  r.insert(b, 500_000n);
  assert.equal(r.slice(a, 0n), 1n, 'b (deadline 5 ms) is waiting: a (deadline 10 ms) goes now');
  r.descheduled(a, 500_000n, true);
  r.insert(a, 500_000n);
  assert.equal(r.pick(500_000n), b);
});

test('rtds: parameters are checked (Xen\'s bounds), per domain and per vCPU', () => {
  const r = new Rtds<SchedUnit>();
  assert.deepEqual(r.params(5), { period: 10000, budget: 4000, extratime: 1 });
  assert.throws(() => r.adjust(5, { period: 5 }), /period/);
  assert.throws(() => r.adjust(5, { period: 1000, budget: 2000 }), /must not exceed period/);
  assert.throws(() => r.adjust(5, { extratime: 2 }), /extratime/);
  assert.deepEqual(r.params(5), { period: 10000, budget: 4000, extratime: 1 });
  r.adjust(5, { period: 20000, budget: 5000 });
  r.adjust(5, { budget: 1000, extratime: 0 }, 1);
  assert.deepEqual(r.params(5, 0), { period: 20000, budget: 5000, extratime: 1 });
  assert.deepEqual(r.params(5, 1), { period: 20000, budget: 1000, extratime: 0 });
});
