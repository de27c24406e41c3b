import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { needsKvm } from '../../kvm/testing.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const spin = () => readFileSync(path.join(root, 'guests/build/spin.elf'));

/** Two CPU-bound spin guests on one pCPU under `sched`, with `params` set while paused; their CPU time over `ms` after a warm-up (the start, when every credit is fresh, is not the steady state). */
async function run(sched: string, params: [Record<string, number>, Record<string, number>], ms: number) {
  const { Toolstack } = await import('../../tools/toolstack.js');
  const ts = await Toolstack.start({ pcpus: 1, sched, log: () => {} });
  try {
    const kernel = spin();
    const doms = [];
    for (const name of ['a', 'b']) doms.push(await ts.create({ name, kernel, memoryMiB: 8, vcpus: 1 }, () => {}, { paused: true }));
    doms.forEach((d, i) => ts.hv.schedAdjust(d.domid, params[i]!));
    ts.hv.setSchedTrace(true);
    for (const d of doms) ts.hv.unpause(d.domid);
    await sleep(500);
    const before = doms.map((d) => ts.hv.vcpus(d.domid)[0]!.cpuTimeUs);
    await sleep(ms);
    const cpu = doms.map((d, i) => ts.hv.vcpus(d.domid)[0]!.cpuTimeUs - before[i]!);
    const trace = ts.hv.readSchedTrace(0);
    return { cpu, doms: doms.map((d) => d.domid), trace, params: doms.map((d) => ts.hv.schedParams(d.domid)) };
  } finally {
    await ts.shutdown();
  }
}

// Shares are guest CPU time over wall-clock windows, which a loaded host skews
// (a vCPU descheduled by Linux inside KVM_RUN is still charged): the bounds
// here prove the policy (equal shares or an uncapped guest would be 50%)
// with room for that; the share error itself is bench/sched.ts's figure.
test('credit2 on a one-pCPU pool: two spin guests of weights 256 and 512 share it about 1:2', needsKvm(), async () => {
  const r = await run('credit2', [{ weight: 256 }, { weight: 512 }], 3000);
  assert.deepEqual(r.params, [{ weight: 256, cap: 0 }, { weight: 512, cap: 0 }]);
  const [a, b] = r.cpu as [number, number];
  const share = b / (a + b);
  assert.ok(a + b > 1_000_000, `both ran: ${a} + ${b} us`);
  assert.ok(Math.abs(share - 2 / 3) <= 0.15 * (2 / 3), `the heavier guest got ${(share * 100).toFixed(1)}% (${a} vs ${b} us)`);
  // The trace saw both guests switched in, many times.
  const switches = r.trace.records.filter((x) => x.event === 'switch');
  for (const d of r.doms) assert.ok(switches.filter((x) => x.domid === d).length > 10, `d${d} switched in ${switches.filter((x) => x.domid === d).length} times`);
});

test('credit on a one-pCPU pool: a cap of 25 holds a spin guest to a quarter of the pCPU beside another', needsKvm(), async () => {
  const r = await run('credit', [{ cap: 25 }, {}], 3000);
  const [a, b] = r.cpu as [number, number];
  const share = a / (a + b);
  assert.ok(share <= 0.25 * 1.4, `the capped guest got ${(share * 100).toFixed(1)}% (${a} vs ${b} us)`);
  assert.ok(share >= 0.25 * 0.6, `and still ran: ${(share * 100).toFixed(1)}%`);
});

test('a bad scheduler name or parameter is refused and changes nothing', needsKvm(), async () => {
  const { Hypervisor } = await import('../hypervisor.js');
  await assert.rejects(Hypervisor.start({ pcpus: 1, sched: 'bvt' }), /sched=bvt: unknown scheduler/);
  const { Toolstack } = await import('../../tools/toolstack.js');
  const ts = await Toolstack.start({ pcpus: 1, sched: 'rtds', log: () => {} });
  try {
    const d = await ts.create({ name: 'a', kernel: spin(), memoryMiB: 8, vcpus: 1 }, () => {}, { paused: true });
    assert.throws(() => ts.hv.schedAdjust(d.domid, { budget: 20000 }), /must not exceed period/);
    assert.throws(() => ts.hv.schedAdjust(d.domid, { weight: 1 }), /unknown parameter 'weight'/);
    assert.throws(() => ts.hv.schedAdjust(999, { budget: 100 }), /no domain 999/);
    assert.deepEqual(ts.hv.schedParams(d.domid), { period: 10000, budget: 4000, extratime: 1 });
    assert.throws(() => ts.hv.setArinc653Schedule({ majorFrame: 1n, entries: [] }), /not arinc653/);
  } finally {
    await ts.shutdown();
  }
});
