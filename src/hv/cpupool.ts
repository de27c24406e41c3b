// cpupools (Xen's common/sched/cpupool.c): disjoint sets of pCPUs, each
// with its own scheduler; a domain belongs to one pool and its vCPUs run only
// on that pool's pCPUs. Pool-0 holds every pCPU at start with the boot
// scheduler (sched=). A pCPU leaves a pool free and joins another from free;
// a pool is destroyed only when it has no domains and no pCPUs left. This
// module is the bookkeeping; the hypervisor switches a pCPU worker's policy
// when the pCPU changes pool and keeps vCPUs on their pool's pCPUs.

import { createScheduler, isSchedulerName, SCHEDULERS, type SchedulerName } from './sched/schedulers.js';
import type { SchedulerPolicy } from './sched/scheduler.js';
import type { Arinc653Schedule } from './sched/arinc653.js';

/** Xen's errors for cpupool ops, as errno names (the daemon maps them). */
export class CpupoolError extends Error {
  constructor(readonly errno: 'EINVAL' | 'ENOENT' | 'EBUSY' | 'EEXIST' | 'ENOSPC', message: string) {
    super(message);
  }
}

export interface Cpupool {
  readonly id: number;
  name: string;
  readonly sched: SchedulerName;
  readonly cpus: Set<number>;
  /** The scheduler's parameters as the toolstack set them, checked before any worker sees them. */
  readonly shadow: SchedulerPolicy;
  arinc653: { schedule: Arinc653Schedule; epoch: bigint } | null;
  /** xenode's host side of real time: its pCPUs' worker threads pinned to host CPUs, at a SCHED_FIFO priority (0 = none). */
  host: { pin: boolean; rtPriority: number };
}

export interface CpupoolInfo {
  id: number;
  name: string;
  sched: SchedulerName;
  cpus: number[];
}

/** Pool names as libxl takes them: printable, no spaces, at most 64 bytes. */
const NAME = /^[\x21-\x7e]{1,64}$/;
/** Xen's pool ids are 32-bit; a bound keeps a create loop from making millions. */
const MAX_POOLS = 256;

export class Cpupools {
  private readonly pools = new Map<number, Cpupool>();

  constructor(readonly nrPcpus: number, sched: SchedulerName) {
    this.pools.set(0, this.make(0, 'Pool-0', sched, Array.from({ length: nrPcpus }, (_, i) => i)));
  }

  private make(id: number, name: string, sched: SchedulerName, cpus: number[]): Cpupool {
    return { id, name, sched, cpus: new Set(cpus), shadow: createScheduler(sched), arinc653: null, host: { pin: false, rtPriority: 0 } };
  }

  get(id: number): Cpupool {
    const p = this.pools.get(id);
    if (!p) throw new CpupoolError('ENOENT', `no cpupool ${id}`);
    return p;
  }

  /** A pool by name or id (libxl_cpupool_qualifier_to_cpupoolid: a number is an id). */
  find(q: string | number): Cpupool | undefined {
    if (typeof q === 'number' || /^\d+$/.test(q)) return this.pools.get(Number(q));
    for (const p of this.pools.values()) if (p.name === q) return p;
    return undefined;
  }

  list(): CpupoolInfo[] {
    return [...this.pools.values()].sort((a, b) => a.id - b.id).map((p) => ({ id: p.id, name: p.name, sched: p.sched, cpus: [...p.cpus].sort((a, b) => a - b) }));
  }

  poolOf(cpu: number): Cpupool | undefined {
    for (const p of this.pools.values()) if (p.cpus.has(cpu)) return p;
    return undefined;
  }

  freeCpus(): number[] {
    const out: number[] = [];
    for (let c = 0; c < this.nrPcpus; c++) if (!this.poolOf(c)) out.push(c);
    return out;
  }

  /** XEN_SYSCTL_CPUPOOL_OP_CREATE: an empty pool (pCPUs are added after). */
  create(name: string, sched: string): Cpupool {
    if (!NAME.test(name)) throw new CpupoolError('EINVAL', `bad cpupool name '${name}'`);
    if (this.find(name) || /^\d+$/.test(name)) throw new CpupoolError('EEXIST', `cpupool '${name}' already exists`);
    if (!isSchedulerName(sched)) throw new CpupoolError('EINVAL', `unknown scheduler '${sched}' (known: ${SCHEDULERS.join(', ')})`);
    if (this.pools.size >= MAX_POOLS) throw new CpupoolError('ENOSPC', `at most ${MAX_POOLS} cpupools`);
    let id = 1;
    while (this.pools.has(id)) id++;
    const p = this.make(id, name, sched, []);
    this.pools.set(id, p);
    return p;
  }

  /** XEN_SYSCTL_CPUPOOL_OP_DESTROY: only an empty pool, never Pool-0. */
  destroy(id: number, domains: number): void {
    const p = this.get(id);
    if (id === 0) throw new CpupoolError('EINVAL', 'Pool-0 cannot be destroyed');
    if (domains) throw new CpupoolError('EBUSY', `cpupool '${p.name}' has ${domains} domain(s)`);
    if (p.cpus.size) throw new CpupoolError('EBUSY', `cpupool '${p.name}' still has cpus ${[...p.cpus].join(',')}`);
    this.pools.delete(id);
  }

  rename(id: number, name: string): void {
    const p = this.get(id);
    if (!NAME.test(name)) throw new CpupoolError('EINVAL', `bad cpupool name '${name}'`);
    const other = this.find(name);
    if ((other && other !== p) || /^\d+$/.test(name)) throw new CpupoolError('EEXIST', `cpupool '${name}' already exists`);
    p.name = name;
  }

  /** XEN_SYSCTL_CPUPOOL_OP_ADDCPU: a free pCPU joins the pool. */
  addCpu(id: number, cpu: number): Cpupool {
    const p = this.get(id);
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= this.nrPcpus) throw new CpupoolError('EINVAL', `no cpu ${cpu}`);
    const cur = this.poolOf(cpu);
    if (cur === p) return p;
    if (cur) throw new CpupoolError('EBUSY', `cpu ${cpu} is in cpupool '${cur.name}', not free`);
    p.cpus.add(cpu);
    return p;
  }

  /** XEN_SYSCTL_CPUPOOL_OP_RMCPU: the pCPU becomes free; `busy` says what still runs there (refused then). */
  removeCpu(id: number, cpu: number, busy: string | null, domains: number): void {
    const p = this.get(id);
    if (!p.cpus.has(cpu)) throw new CpupoolError('EINVAL', `cpu ${cpu} is not in cpupool '${p.name}'`);
    if (p.cpus.size === 1 && (domains || id === 0)) throw new CpupoolError('EBUSY', `cpu ${cpu} is the last of cpupool '${p.name}', which has domains`);
    if (busy) throw new CpupoolError('EBUSY', `cpu ${cpu} runs ${busy}`);
    p.cpus.delete(cpu);
  }
}
