// Scheduling trace, as xentrace records it: each pCPU writes fixed-size
// records (time, event, domain/vCPU, argument) into its own bounded ring in a
// SharedArrayBuffer; a reader on another thread copies them out without
// stopping the writer (Xen's per-CPU trace buffers, t_info + t_buf). When full,
// the oldest records are overwritten and counted as lost.

/** Event codes: Xen's where public/trace.h has one, so a reader of xentrace output knows them. */
export const TRC = {
  /** TRC_SCHED_SWITCH (TRC_SCHED_VERBOSE + 10): `dom`/`vcpu` starts running (vcpu -1: the pCPU goes idle). */
  switch: 0x0002800a,
  /** TRC_SCHED_WAKE (TRC_SCHED_VERBOSE + 4). */
  wake: 0x00028004,
  /** TRC_SCHED_BLOCK (TRC_SCHED_VERBOSE + 6). */
  block: 0x00028006,
  /** TRC_RTDS_BUDGET_BURN's class (TRC_SCHED_CLASS_EVT(RTDS, 3)): a vCPU used up its budget (RTDS) or its cap (credit/credit2). */
  budget: 0x00022803,
  /** TRC_RTDS_BUDGET_REPLENISH (TRC_SCHED_CLASS_EVT(RTDS, 4)), `arg` the new deadline. */
  replenish: 0x00022804,
  /** Not in Xen's trace.h (Xen counts no misses): a deadline passed with budget undelivered; `arg` the budget left (ns). */
  miss: 0x00022807,
  /**
   * xenode's own (TRC_SCHED_VERBOSE + 0x40; Xen has no exclusive mode): from `t` this pCPU runs only
   * `dom`'s vCPUs; `arg` the system time the period was asked for (the trigger), so t - arg is this
   * pCPU's stop latency.
   */
  exclusive: 0x00028040,
  /** xenode's own (TRC_SCHED_VERBOSE + 0x41): `dom`'s exclusive period ended here; `arg` why (EXCLUSIVE_END: 0 released, 1 expired, 2 domain gone). */
  release: 0x00028041,
} as const;

export type TraceEvent = keyof typeof TRC;
const BY_CODE = new Map<number, TraceEvent>(Object.entries(TRC).map(([k, v]) => [v, k as TraceEvent]));

export interface TraceRecord {
  t: bigint;
  event: TraceEvent;
  domid: number;
  vcpu: number;
  arg: bigint;
}

export interface TraceSink {
  record(event: TraceEvent, t: bigint, domid: number, vcpu: number, arg?: bigint): void;
}

/** Header words: [0] records written ever (low 32 bits), [1] high 32 bits, [2] recording on; records follow at byte 16. */
const HEADER_WORDS = 4;
const HEADER_BYTES = HEADER_WORDS * 4;
const RECORD_WORDS = 3; // BigInt64: t, (code << 32 | domid << 16 | vcpu+1), arg
/** Default ring: 64 Ki records per pCPU (1.5 MiB), about 10 s of a busy pCPU at 1 ms slices. */
export const TRACE_DEFAULT_RECORDS = 65536;
export const TRACE_MAX_RECORDS = 1 << 22;

export class TraceRing implements TraceSink {
  readonly capacity: number;
  private readonly head: Int32Array;
  private readonly words: BigInt64Array;

  constructor(readonly sab: SharedArrayBuffer) {
    this.head = new Int32Array(sab, 0, HEADER_WORDS);
    this.words = new BigInt64Array(sab, HEADER_BYTES, (sab.byteLength - HEADER_BYTES) / 8);
    this.capacity = Math.floor(this.words.length / RECORD_WORDS);
  }

  static create(records = TRACE_DEFAULT_RECORDS): TraceRing {
    if (!Number.isInteger(records) || records < 1 || records > TRACE_MAX_RECORDS) throw new RangeError(`trace ring size must be 1..${TRACE_MAX_RECORDS} records, got ${records}`);
    return new TraceRing(new SharedArrayBuffer(HEADER_BYTES + records * RECORD_WORDS * 8));
  }

  /** Off by default, as xentrace is (recording costs a few stores per event); shared, so any thread may turn it on. */
  get enabled(): boolean {
    return Atomics.load(this.head, 2) !== 0;
  }

  set enabled(on: boolean) {
    Atomics.store(this.head, 2, on ? 1 : 0);
  }

  private get written(): number {
    return Atomics.load(this.head, 1) * 2 ** 32 + (Atomics.load(this.head, 0) >>> 0);
  }

  record(event: TraceEvent, t: bigint, domid: number, vcpu: number, arg = 0n): void {
    if (Atomics.load(this.head, 2) === 0) return;
    const n = this.written;
    const at = (n % this.capacity) * RECORD_WORDS;
    this.words[at] = t;
    this.words[at + 1] = (BigInt(TRC[event]) << 32n) | (BigInt(domid & 0xffff) << 16n) | BigInt((vcpu + 1) & 0xffff);
    this.words[at + 2] = arg;
    // Publish after the record is whole: a reader never sees a half-written newest record.
    const next = n + 1;
    Atomics.store(this.head, 1, Math.floor(next / 2 ** 32));
    Atomics.store(this.head, 0, next % 2 ** 32 | 0);
  }

  /**
   * The records written after `since` (a count returned earlier; 0 = all
   * kept), oldest first, with how many were overwritten before they could be
   * read. Records the writer overwrites while being copied are dropped too.
   */
  read(since = 0): { records: TraceRecord[]; next: number; lost: number } {
    const end = this.written;
    const first = Math.max(since, end - this.capacity);
    const out: TraceRecord[] = [];
    for (let i = first; i < end; i++) {
      const at = (i % this.capacity) * RECORD_WORDS;
      const t = this.words[at]!;
      const w = this.words[at + 1]!;
      const arg = this.words[at + 2]!;
      const event = BY_CODE.get(Number(w >> 32n));
      if (!event) continue;
      out.push({ t, event, domid: Number((w >> 16n) & 0xffffn), vcpu: Number(w & 0xffffn) - 1, arg });
    }
    // Anything the writer lapped during the copy is no longer what we read.
    const lapped = this.written - this.capacity;
    const drop = Math.max(0, lapped - first);
    return { records: out.slice(drop), next: end, lost: first - since + drop };
  }

  clear(): void {
    Atomics.store(this.head, 0, 0);
    Atomics.store(this.head, 1, 0);
  }
}

/** A sink that keeps records in memory, for simulations and tests. */
export class TraceLog implements TraceSink {
  readonly records: TraceRecord[] = [];
  record(event: TraceEvent, t: bigint, domid: number, vcpu: number, arg = 0n): void {
    this.records.push({ t, event, domid, vcpu, arg });
  }
}
