import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Credit2 } from './credit2.js';
import { simulate, unit } from './sim.js';
import type { SchedUnit } from './scheduler.js';

const S = 1_000_000_000n;
const share = (r: ReturnType<typeof simulate>, u: SchedUnit, total: bigint) => Number(r.stats.get(u)!.runtime) / Number(total);

test('credit2: CPU-bound vCPUs on one pCPU get shares within 5% of their weights', () => {
  for (const weights of [[256, 256], [256, 512], [128, 256, 1024], [100, 200, 300, 400]]) {
    const c = new Credit2();
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

test('credit2: a cap holds a CPU hog to cap% of the pCPU even with the pCPU otherwise idle', () => {
  for (const cap of [10, 25, 50, 90]) {
    const c = new Credit2();
    const hog = unit(1);
    c.adjust(1, { cap });
    const r = simulate(c, [{ unit: hog }], 5n * S);
    const got = share(r, hog, 5n * S) * 100;
    assert.ok(Math.abs(got - cap) <= 0.05 * cap, `cap ${cap}: ran ${got.toFixed(2)}%`);
  }
});

test('credit2: a capped hog beside an uncapped one gets its cap (within 5%), and the other takes the rest', () => {
  const c = new Credit2();
  const [a, b] = [unit(1), unit(2)];
  c.adjust(1, { cap: 20, weight: 1024 });
  const r = simulate(c, [{ unit: a }, { unit: b }], 5n * S);
  assert.ok(Math.abs(share(r, a, 5n * S) - 0.20) <= 0.20 * 0.05, `capped: ${share(r, a, 5n * S)}`);
  assert.ok(share(r, b, 5n * S) >= 0.80 * 0.95, `uncapped: ${share(r, b, 5n * S)}`);
});

test('credit2: a vCPU that wakes with more credit preempts the runner after the ratelimit, not before', () => {
  for (const ratelimitUs of [1000, 5000]) {
    const c = new Credit2({ ratelimitUs });
    const hog = unit(1);
    const io = unit(2);
    // The I/O vCPU wakes every 20 ms for 100 us of work: it always has more credit than the hog.
    const r = simulate(c, [{ unit: hog }, { unit: io, period: 20_000_000n, work: 100_000n, offset: 3_000_000n }], 2n * S);
    const lat = r.stats.get(io)!.wakeLatency;
    assert.ok(lat.length >= 90, `${lat.length} wake-ups`);
    const max = lat.reduce((m, x) => (x > m ? x : m), 0n);
    assert.ok(max <= BigInt(ratelimitUs) * 1000n, `worst wake-up latency ${max} ns with ratelimit ${ratelimitUs} us`);
  }
});

test('credit2: a vCPU alone is not preempted, and its credit stays as Xen\'s resets would leave it', () => {
  const c = new Credit2<SchedUnit>();
  const [a, b] = [unit(1), unit(2)];
  c.insert(a, 0n);
  assert.equal(c.pick(0n), a);
  assert.equal(c.slice(a, 0n), 0n, 'nothing to be fair to');
  c.insert(b, 1_000_000_000n); // b wakes after a ran alone for 1 s
  assert.ok(c.credit(a)! > 0 && c.credit(a)! <= 10_500_000, `a's credit after running alone: ${c.credit(a)}`);
  assert.ok(c.slice(a, 0n) > 0n, 'now a slice');
  c.descheduled(a, 1_001_000_000n, true);
  c.insert(a, 1_001_000_000n);
  // From here both get the pCPU in turn, not b for a second to pay for a's lone run.
  const r = simulate(c, [{ unit: a }, { unit: b }], 100_000_000n);
  assert.ok(r.stats.get(a)!.runtime > 40_000_000n && r.stats.get(b)!.runtime > 40_000_000n, `${r.stats.get(a)!.runtime} / ${r.stats.get(b)!.runtime}`);
});

test('credit2: parameters are checked and defaults are Xen\'s', () => {
  const c = new Credit2();
  assert.deepEqual(c.params(7), { weight: 256, cap: 0 });
  assert.equal(c.ratelimitUs, 1000);
  assert.throws(() => c.adjust(7, { weight: 0 }), /weight must be an integer in 1\.\.65535/);
  assert.throws(() => c.adjust(7, { weight: 300, cap: -1 }), /cap/);
  assert.deepEqual(c.params(7), { weight: 256, cap: 0 }, 'a rejected call changes nothing');
  assert.throws(() => c.adjust(7, { wieght: 300 }), /unknown parameter 'wieght'/);
  assert.throws(() => c.setRatelimit(50), /ratelimit_us/);
  c.adjust(7, { weight: 512 });
  assert.deepEqual(c.params(7), { weight: 512, cap: 0 });
});

test('credit2: removing a domain forgets its vCPUs and parameters', () => {
  const c = new Credit2<SchedUnit>();
  const [a, b] = [unit(1), unit(2)];
  c.adjust(1, { weight: 1000 });
  c.insert(a, 0n);
  c.insert(b, 0n);
  c.removeDomain(1);
  assert.equal(c.has(a), false);
  assert.equal(c.pick(0n), b);
  assert.equal(c.pick(0n), null);
  assert.deepEqual(c.params(1), { weight: 256, cap: 0 });
});
