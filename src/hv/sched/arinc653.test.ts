import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Arinc653, ARINC653_MAX_DOMAINS_PER_SCHEDULE, type Arinc653Schedule } from './arinc653.js';
import { simulate, unit } from './sim.js';
import { TraceLog } from './trace.js';
import type { SchedUnit } from './scheduler.js';

const MS = 1_000_000n;

/** Runs of each vCPU from a trace: [start, end) intervals from switch records. */
function runs(trace: TraceLog, end: bigint): { domid: number; start: bigint; end: bigint }[] {
  const out: { domid: number; start: bigint; end: bigint }[] = [];
  const sw = trace.records.filter((r) => r.event === 'switch' || r.event === 'block');
  let cur: { domid: number; start: bigint } | null = null;
  for (const r of sw) {
    if (cur) out.push({ ...cur, end: r.t });
    cur = r.event === 'switch' && r.vcpu >= 0 ? { domid: r.domid, start: r.t } : null;
  }
  if (cur) out.push({ ...cur, end });
  return out.filter((x) => x.end > x.start);
}

test('arinc653: every window opens and closes exactly on the schedule, with the slack idle, for CPU hogs', () => {
  const a = new Arinc653<SchedUnit>();
  const trace = new TraceLog();
  const [d1, d2, d3] = [unit(1), unit(2), unit(3)];
  const sched: Arinc653Schedule = { majorFrame: 20n * MS, entries: [
    { domid: 1, vcpu: 0, runtime: 5n * MS },
    { domid: 2, vcpu: 0, runtime: 3n * MS },
    { domid: 1, vcpu: 0, runtime: 2n * MS },
    { domid: 3, vcpu: 0, runtime: 6n * MS },
  ] };
  const epoch = 1_234_567n;
  a.setSchedule(sched, epoch);
  const frames = 50n;
  const end = epoch + frames * sched.majorFrame;
  simulate(a, [{ unit: d1 }, { unit: d2 }, { unit: d3 }], end, trace);
  const got = runs(trace, end);
  const want: { domid: number; start: bigint; end: bigint }[] = [];
  for (let f = 0n; f < frames; f++) {
    let at = epoch + f * sched.majorFrame;
    for (const e of sched.entries) {
      want.push({ domid: e.domid, start: at, end: at + e.runtime });
      at += e.runtime;
    }
  }
  assert.deepEqual(got, want, 'runs are the windows, to the nanosecond, and the last 4 ms of each frame idle');
});

test('arinc653: a window whose vCPU is blocked stays idle; nobody else borrows it', () => {
  const a = new Arinc653<SchedUnit>();
  const [d1, d2] = [unit(1), unit(2)];
  a.setSchedule({ majorFrame: 10n * MS, entries: [{ domid: 1, vcpu: 0, runtime: 5n * MS }, { domid: 2, vcpu: 0, runtime: 5n * MS }] }, 0n);
  // d1 wants 1 ms each 10 ms: it blocks early in its window; the hog d2 must not get the rest of it.
  const res = simulate(a, [{ unit: d1, period: 10n * MS, work: MS }, { unit: d2 }], 1000n * MS);
  assert.equal(res.stats.get(d1)!.runtime, 100n * MS);
  assert.equal(res.stats.get(d2)!.runtime, 500n * MS, 'd2 only ever ran in its own windows');
  assert.equal(res.idleNs, 400n * MS);
});

test('arinc653: two pCPUs given the same schedule and epoch cross frame boundaries together', () => {
  const sched: Arinc653Schedule = { majorFrame: 8n * MS, entries: [{ domid: 1, vcpu: 0, runtime: 4n * MS }, { domid: 2, vcpu: 0, runtime: 4n * MS }] };
  const boundaries = (pcpuUnits: SchedUnit[]) => {
    const a = new Arinc653<SchedUnit>();
    a.setSchedule(sched, 5n * MS);
    const t = new TraceLog();
    simulate(a, pcpuUnits.map((u) => ({ unit: u })), 100n * MS, t);
    return t.records.filter((r) => r.event === 'switch').map((r) => r.t);
  };
  // Each pCPU runs its own vCPUs of domains 1 and 2 (vCPU 0 on one, as Xen's entries name a vCPU).
  const p0 = boundaries([unit(1, 0), unit(2, 0)]);
  const p1 = boundaries([{ id: 0, dom: { domid: 1 } }, { id: 0, dom: { domid: 2 } }]);
  assert.deepEqual(p0, p1);
  assert.equal(p0[0], 5n * MS, 'nothing runs before the epoch');
});

test('arinc653: schedules are checked as arinc653_sched_set does; a bad one changes nothing', () => {
  const a = new Arinc653<SchedUnit>();
  const ok: Arinc653Schedule = { majorFrame: 10n * MS, entries: [{ domid: 1, vcpu: 0, runtime: 10n * MS }] };
  a.setSchedule(ok, 0n);
  const entries = Array.from({ length: ARINC653_MAX_DOMAINS_PER_SCHEDULE + 1 }, () => ({ domid: 1, vcpu: 0, runtime: MS }));
  assert.throws(() => a.setSchedule({ majorFrame: 100n * MS, entries }, 0n), /1\.\.64 entries/);
  assert.throws(() => a.setSchedule({ majorFrame: 10n * MS, entries: [{ domid: 1, vcpu: 0, runtime: 11n * MS }] }, 0n), /more than the major frame/);
  assert.throws(() => a.setSchedule({ majorFrame: 0n, entries: [] }, 0n), /major frame must be positive/);
  assert.throws(() => a.setSchedule({ majorFrame: 10n * MS, entries: [{ domid: 1, vcpu: 0, runtime: 0n }] }, 0n), /runtime must be positive/);
  assert.deepEqual(a.getSchedule(), { schedule: ok, epoch: 0n });
  const full = Array.from({ length: 64 }, (_, i) => ({ domid: 1 + (i % 3), vcpu: 0, runtime: MS }));
  a.setSchedule({ majorFrame: 64n * MS, entries: full }, 0n);
  assert.equal(a.getSchedule()!.schedule.entries.length, 64);
});

test('arinc653: with no schedule set, nothing runs (Xen\'s default holds only dom0)', () => {
  const a = new Arinc653<SchedUnit>();
  const res = simulate(a, [{ unit: unit(1) }], 100n * MS);
  assert.equal(res.stats.get(res.stats.keys().next().value!)!.runtime, 0n);
});
