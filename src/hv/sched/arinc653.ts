// ARINC 653 (Xen's common/sched/arinc653.c): a fixed cyclic schedule. A major
// frame is cut into minor frames (up to ARINC653_MAX_DOMAINS_PER_SCHEDULE = 64
// entries), each giving one vCPU the pCPU for its runtime, in order; what the
// entries leave of the major frame is idle, and so is a minor frame whose vCPU
// cannot run. Nothing preempts a window and nothing runs outside its windows.
// Frames are counted from an epoch in system time, so pCPUs given the same
// schedule and epoch cross every frame boundary together (the CAST-32A
// multicore arrangement). With no schedule set nothing runs (Xen's default
// schedule holds only dom0's vCPUs, and dom0 here is the toolstack).

import type { VCpu } from '../domain.js';
import { checkKeys, type SchedParams, type SchedulerPolicy, type SchedUnit } from './scheduler.js';
import type { TraceSink } from './trace.js';

/** ARINC653_MAX_DOMAINS_PER_SCHEDULE (public/sysctl.h). */
export const ARINC653_MAX_DOMAINS_PER_SCHEDULE = 64;
const MAX_MAJOR_FRAME = 3600n * 1_000_000_000n;

/** xen_sysctl_arinc653_schedule, with domains by domid (Xen names them by handle) and times in ns. */
export interface Arinc653Schedule {
  majorFrame: bigint;
  entries: { domid: number; vcpu: number; runtime: bigint }[];
}

/** arinc653_sched_set's checks: at least one entry, at most 64, positive runtimes that fit in the major frame. */
export function checkSchedule(s: Arinc653Schedule): void {
  if (typeof s.majorFrame !== 'bigint' || s.majorFrame <= 0n) throw new RangeError('major frame must be positive');
  // Xen takes any uint64; a frame beyond an hour is a mistake, not a schedule.
  if (s.majorFrame > MAX_MAJOR_FRAME) throw new RangeError(`major frame must be at most ${MAX_MAJOR_FRAME / 1_000_000_000n} s`);
  if (!Array.isArray(s.entries) || s.entries.length < 1 || s.entries.length > ARINC653_MAX_DOMAINS_PER_SCHEDULE) {
    throw new RangeError(`a schedule has 1..${ARINC653_MAX_DOMAINS_PER_SCHEDULE} entries, got ${Array.isArray(s.entries) ? s.entries.length : 'none'}`);
  }
  let total = 0n;
  s.entries.forEach((e, i) => {
    if (!Number.isInteger(e.domid) || e.domid < 0 || e.domid > 0x7fef) throw new RangeError(`entry ${i}: bad domid ${e.domid}`);
    if (!Number.isInteger(e.vcpu) || e.vcpu < 0 || e.vcpu > 127) throw new RangeError(`entry ${i}: bad vcpu ${e.vcpu}`);
    if (typeof e.runtime !== 'bigint' || e.runtime <= 0n) throw new RangeError(`entry ${i}: runtime must be positive`);
    total += e.runtime;
  });
  if (total > s.majorFrame) throw new RangeError(`minor frames total ${total} ns, more than the major frame (${s.majorFrame} ns)`);
}

export class Arinc653<U extends SchedUnit = VCpu> implements SchedulerPolicy<U> {
  readonly name = 'arinc653';
  trace: TraceSink | null = null;
  private schedule: Arinc653Schedule | null = null;
  private epoch = 0n;
  /** Window start offsets within the major frame (ends are starts + runtimes). */
  private starts: bigint[] = [];
  private readonly queued = new Set<U>();
  /** Runnable vCPUs by domid/vcpu, for finding a window's owner. */
  private readonly byId = new Map<string, U>();

  /** XEN_SYSCTL_SCHEDOP_putinfo for ARINC 653: the new schedule's first major frame starts at `epoch`. */
  setSchedule(s: Arinc653Schedule, epoch: bigint): void {
    checkSchedule(s);
    this.schedule = { majorFrame: s.majorFrame, entries: s.entries.map((e) => ({ ...e })) };
    this.epoch = epoch;
    let at = 0n;
    this.starts = s.entries.map((e) => {
      const start = at;
      at += e.runtime;
      return start;
    });
  }

  getSchedule(): { schedule: Arinc653Schedule; epoch: bigint } | null {
    return this.schedule && { schedule: { majorFrame: this.schedule.majorFrame, entries: this.schedule.entries.map((e) => ({ ...e })) }, epoch: this.epoch };
  }

  /** The window `now` falls in: its entry index (-1: idle rest of the frame, or before the epoch) and when it ends. */
  window(now: bigint): { index: number; start: bigint; end: bigint } {
    const s = this.schedule;
    if (!s) return { index: -1, start: now, end: 0n };
    if (now < this.epoch) return { index: -1, start: now, end: this.epoch };
    const frameStart = now - ((now - this.epoch) % s.majorFrame);
    const off = now - frameStart;
    for (let i = 0; i < this.starts.length; i++) {
      const st = this.starts[i]!;
      const end = st + s.entries[i]!.runtime;
      if (off >= st && off < end) return { index: i, start: frameStart + st, end: frameStart + end };
    }
    const last = this.starts.length - 1;
    return { index: -1, start: frameStart + this.starts[last]! + s.entries[last]!.runtime, end: frameStart + s.majorFrame };
  }

  insert(v: U, _now: bigint): void {
    this.queued.add(v);
    this.byId.set(`${v.dom.domid}.${v.id}`, v);
  }

  remove(v: U): void {
    this.queued.delete(v);
  }

  removeDomain(domid: number): void {
    for (const v of this.queued) if (v.dom.domid === domid) this.queued.delete(v);
    for (const [k, v] of this.byId) if (v.dom.domid === domid) this.byId.delete(k);
  }

  pick(now: bigint): U | null {
    const w = this.window(now);
    if (w.index < 0) return null;
    const e = this.schedule!.entries[w.index]!;
    const v = this.byId.get(`${e.domid}.${e.vcpu}`);
    if (!v || !this.queued.has(v)) return null;
    this.queued.delete(v);
    return v;
  }

  /** To the end of the window it was picked in: wake-ups never shorten it. */
  slice(_v: U, start: bigint): bigint {
    const w = this.window(start);
    return w.end > start ? w.end - start : 1n;
  }

  descheduled(_v: U, _now: bigint, _runnable: boolean): void {}

  /** The next window boundary: the pCPU looks again then even if idle. */
  nextDecision(now: bigint): bigint {
    return this.schedule ? this.window(now).end : 0n;
  }

  hasWaiting(): boolean {
    return this.queued.size > 0;
  }

  has(v: U): boolean {
    return this.queued.has(v);
  }

  /** ARINC 653 has no per-domain parameters: the schedule is set for the whole pool. */
  adjust(_domid: number, params: SchedParams): void {
    checkKeys(this.name, params, []);
  }

  params(_domid: number): SchedParams {
    return {};
  }
}
