import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Credit } from './credit.js';
import { simulate, unit } from './sim.js';
import type { SchedUnit } from './scheduler.js';

const S = 1_000_000_000n;
const share = (r: ReturnType<typeof simulate>, u: SchedUnit, total: bigint) => Number(r.stats.get(u)!.runtime) / Number(total);

test('credit: CPU-bound vCPUs on one pCPU get shares within 5% of their weights', () => {
  // Ratios up to 1:3. Beyond that credit1's 30 ms granularity and its credit
  // clipping (both Xen's) favour the lightest vCPU: 1:2:8 gives it 10.5% for 9.1%.
  for (const weights of [[256, 256], [256, 512], [256, 256, 512], [256, 768], [512, 768, 1024]]) {
    const c = new Credit();
    const us = weights.map((w, i) => {
      c.adjust(i + 1, { weight: w });
      return unit(i + 1);
    });
    const r = simulate(c, us.map((u) => ({ unit: u })), 10n * S);
    const total = weights.reduce((a, b) => a + b, 0);
    us.forEach((u, i) => {
      const want = weights[i]! / total;
      const got = share(r, u, 10n * S);
      assert.ok(Math.abs(got - want) <= 0.05 * want, `weights ${weights}: d${i + 1} got ${(got * 100).toFixed(2)}%, want ${(want * 100).toFixed(2)}%`);
    });
  }
});

test('credit: a cap parks a CPU hog once it is a cap\'s worth in debt, holding it to cap%', () => {
  for (const cap of [10, 30, 50, 80]) {
    const c = new Credit();
    const hog = unit(1);
    c.adjust(1, { cap });
    const r = simulate(c, [{ unit: hog }], 6n * S);
    const got = share(r, hog, 6n * S) * 100;
    assert.ok(Math.abs(got - cap) <= 0.05 * cap, `cap ${cap}: ran ${got.toFixed(2)}%`);
  }
});

test('credit: a capped hog beside an uncapped one gets its cap, not less: parked and unparked at accounting', () => {
  for (const cap of [10, 25, 50]) {
    const c = new Credit();
    const [a, b] = [unit(1), unit(2)];
    c.adjust(1, { cap });
    const r = simulate(c, [{ unit: a }, { unit: b }], 6n * S);
    const got = share(r, a, 6n * S) * 100;
    assert.ok(Math.abs(got - cap) <= 0.05 * cap, `cap ${cap}: ran ${got.toFixed(2)}%`);
  }
});

test('credit: a vCPU waking with credit is boosted and preempts a hog within the ratelimit', () => {
  const c = new Credit();
  const hog = unit(1);
  const io = unit(2);
  // From 17 ms: the hog's own boost (it woke at 0) has ended at its first tick.
  const r = simulate(c, [{ unit: hog }, { unit: io, period: 25_000_000n, work: 200_000n, offset: 17_000_000n }], 3n * S);
  const lat = r.stats.get(io)!.wakeLatency;
  assert.ok(lat.length >= 100, `${lat.length} wake-ups`);
  const max = lat.reduce((m, x) => (x > m ? x : m), 0n);
  assert.ok(max <= 1_000_000n, `worst wake-up latency ${max} ns (ratelimit 1 ms; a whole 30 ms timeslice without boost)`);
});

test('credit: a boost lasts to the first tick; then vCPUs take 30 ms timeslices in turn', () => {
  const c = new Credit<SchedUnit>();
  const [a, b] = [unit(1), unit(2)];
  c.insert(a, 0n);
  c.insert(b, 0n);
  assert.equal(c.pick(0n), a);
  assert.equal(c.slice(a, 0n), 10_000_000n, 'woken, so boosted until its tick');
  c.descheduled(a, 10_000_000n, true);
  c.insert(a, 10_000_000n);
  assert.equal(c.pick(10_000_000n), b, 'b, still boosted, goes before a');
  c.descheduled(b, 20_000_000n, true);
  c.insert(b, 20_000_000n);
  assert.equal(c.pick(20_000_000n), a);
  assert.equal(c.slice(a, 20_000_000n), 10_000_000n, 'to the accounting at 30 ms, which may reorder them');
  c.descheduled(a, 30_000_000n, true);
  c.insert(a, 30_000_000n);
  assert.equal(c.pick(30_000_000n), b, 'b, queued before a came back, goes next');
  assert.equal(c.slice(b, 30_000_000n), 30_000_000n, 'no boost left: a whole timeslice');
});

test('credit: pool and domain parameters are checked, defaults are Xen\'s', () => {
  const c = new Credit();
  assert.deepEqual(c.params(3), { weight: 256, cap: 0 });
  assert.deepEqual(c.poolParams, { tsliceMs: 30, ratelimitUs: 1000 });
  assert.throws(() => c.adjust(3, { weight: 70000 }), /weight/);
  assert.throws(() => c.setPoolParams({ tsliceMs: 1, ratelimitUs: 5000 }), /must not exceed tslice_ms/);
  assert.deepEqual(c.poolParams, { tsliceMs: 30, ratelimitUs: 1000 }, 'unchanged after a rejected call');
  c.setPoolParams({ tsliceMs: 10 });
  assert.deepEqual(c.poolParams, { tsliceMs: 10, ratelimitUs: 1000 });
});
