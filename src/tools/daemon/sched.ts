// The daemon's scheduling and cpupool operations (libxl_sched.c and
// libxl_cpupool.c's role): domain and pool scheduling parameters, cpupool
// create/destroy/rename/cpu-add/cpu-remove/migrate/list, and what an xl.cfg
// asks of them at create time (pool=, cpus=, cpus_soft=, cpu_weight=, cap=,
// period=, extratime=).

import type { Hypervisor } from '../../hv/hypervisor.js';
import { CpupoolError } from '../../hv/cpupool.js';
import { createScheduler } from '../../hv/sched/schedulers.js';
import type { DomainConfig } from '../xl/config.js';
import { ApiFailure, einval } from './validate.js';
import type { Handlers } from './server.js';

export interface CpupoolSummary {
  poolid: number;
  name: string;
  /** libxl's scheduler name */
  sched: string;
  cpus: number[];
  nDom: number;
}

/** Scheduling parameters by libxl's names: weight/cap (credit, credit2), period/budget in us and extratime (rtds). */
export type SchedParamsWire = Record<string, number>;

/** An hv error as the API's: cpupool errors keep their errno, range errors are EINVAL. */
export function apiError(e: unknown): unknown {
  if (e instanceof CpupoolError) return new ApiFailure(e.errno, e.message);
  if (e instanceof RangeError) return einval(e.message);
  return e;
}

function wrap<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw apiError(e);
  }
}

/** A pool named by name or id (libxl_cpupool_qualifier_to_cpupoolid), or ENOENT. */
export function poolId(hv: Hypervisor, q: unknown): number {
  if (typeof q !== 'string' && typeof q !== 'number') throw einval('pool must be a name or an id');
  const p = hv.cpupools.find(q);
  if (!p) throw new ApiFailure('ENOENT', `unknown cpupool '${q}'`);
  return p.id;
}

/**
 * What an xl.cfg asks of the scheduler at create: the pool (libxl refuses one
 * that does not exist, "Illegal pool specified"), each vCPU's hard and soft
 * affinity, and the parameters its pool's scheduler takes. xl.cfg's slice and
 * latency were sedf's (removed from Xen) and mean nothing to the others.
 */
export function createSettings(hv: Hypervisor, c: DomainConfig): { pool: number; hard: (number[] | null)[]; soft: (number[] | null)[]; sched: SchedParamsWire } {
  let pool = 0;
  if (c.pool !== undefined) {
    const p = hv.cpupools.find(c.pool);
    if (!p) throw einval(`Illegal pool specified: ${c.pool}`);
    pool = p.id;
  }
  const n = c.maxvcpus;
  const hard = Array.from({ length: n }, (_, v) => (c.cpusPerVcpu ? c.cpusPerVcpu[v] ?? null : c.cpus));
  const soft = Array.from({ length: n }, (_, v) => (c.cpusSoftPerVcpu ? c.cpusSoftPerVcpu[v] ?? null : c.cpusSoft));
  for (const set of [...hard, ...soft]) for (const cpu of set ?? []) if (cpu >= hv.nrPcpus) throw einval(`cpu ${cpu} does not exist (${hv.nrPcpus} pCPUs)`);
  const sched: SchedParamsWire = {};
  const s = c.sched ?? {};
  const kind = hv.cpupools.get(pool).sched;
  if (kind === 'credit' || kind === 'credit2') {
    if (s.weight !== undefined) sched.weight = s.weight;
    if (s.cap !== undefined) sched.cap = s.cap;
  } else if (kind === 'rtds') {
    if (s.period !== undefined) sched.period = s.period;
    if (s.extratime !== undefined) sched.extratime = s.extratime;
  }
  return { pool, hard, soft, sched };
}

export function cpupoolList(hv: Hypervisor): CpupoolSummary[] {
  // Domain-0 (the daemon, as `xl list` shows it) counts in Pool-0, as Xen's dom0 does.
  return hv.cpupoolList().map((p) => ({ poolid: p.id, name: p.name, sched: p.sched, cpus: p.cpus, nDom: p.domains + (p.id === 0 ? 1 : 0) }));
}

export function cpupoolCreate(hv: Hypervisor, a: { name?: unknown; sched?: unknown; cpus?: unknown }): { poolid: number } {
  if (typeof a.name !== 'string') throw einval('name must be a string');
  const sched = a.sched === undefined ? hv.cpupools.get(0).sched : a.sched;
  if (typeof sched !== 'string') throw einval('sched must be a string');
  const cpus = a.cpus === undefined ? [] : a.cpus;
  if (!Array.isArray(cpus) || !cpus.every((c) => Number.isInteger(c))) throw einval('cpus must be a list of cpu numbers');
  const free = new Set(hv.cpupools.freeCpus());
  for (const c of cpus as number[]) if (!free.has(c)) throw einval(`cpu ${c} illegal or not free`);
  const id = wrap(() => hv.cpupoolCreate(a.name as string, sched));
  for (const c of cpus as number[]) hv.cpupoolCpuAdd(id, c);
  return { poolid: id };
}

export async function cpupoolOp(hv: Hypervisor, op: 'destroy' | 'rename' | 'cpu-add' | 'cpu-remove', a: { pool?: unknown; name?: unknown; cpus?: unknown }): Promise<{ done: number[]; failed: { cpu: number; message: string }[] } | null> {
  const id = poolId(hv, a.pool);
  if (op === 'destroy') return wrap(() => { hv.cpupoolDestroy(id); return null; });
  if (op === 'rename') {
    if (typeof a.name !== 'string') throw einval('name must be a string');
    return wrap(() => { hv.cpupoolRename(id, a.name as string); return null; });
  }
  if (!Array.isArray(a.cpus) || !a.cpus.length || !a.cpus.every((c) => Number.isInteger(c))) throw einval('cpus must be a non-empty list of cpu numbers');
  // libxl_cpupool_cpuadd_cpumap / cpuremove_cpumap: each cpu on its own; the caller hears which failed.
  const done: number[] = [];
  const failed: { cpu: number; message: string }[] = [];
  for (const c of a.cpus as number[]) {
    try {
      if (op === 'cpu-add') hv.cpupoolCpuAdd(id, c);
      else await hv.cpupoolCpuRemove(id, c);
      done.push(c);
    } catch (e) {
      if (!(e instanceof CpupoolError)) throw e;
      failed.push({ cpu: c, message: e.message });
    }
  }
  return { done, failed };
}

export async function cpupoolMigrate(hv: Hypervisor, domid: number, pool: unknown): Promise<null> {
  const id = poolId(hv, pool);
  try {
    await hv.cpupoolMigrate(domid, id);
  } catch (e) {
    throw apiError(e);
  }
  return null;
}

/** libxl_domain_sched_params_get: the domain's scheduler and parameters (and with `vcpus`, each vCPU's, for rtds). */
export function schedGet(hv: Hypervisor, domid: number, vcpus?: unknown): { sched: string; poolid: number; params: SchedParamsWire; vcpus?: (SchedParamsWire & { vcpuid: number })[] } {
  return wrap(() => {
    const poolid = hv.domainPool(domid);
    const sched = hv.cpupools.get(poolid).sched;
    const out: ReturnType<typeof schedGet> = { sched, poolid, params: hv.schedParams(domid) };
    if (vcpus !== undefined) {
      const n = hv.vcpus(domid).length;
      const ids = vcpus === 'all' ? Array.from({ length: n }, (_, i) => i) : vcpus;
      if (!Array.isArray(ids) || !ids.every((v) => Number.isInteger(v) && v >= 0 && v < n)) throw einval(`vcpus must be 'all' or vCPU numbers below ${n}`);
      out.vcpus = (ids as number[]).map((v) => ({ vcpuid: v, ...hv.schedParams(domid, v) }));
    }
    return out;
  });
}

/** libxl_domain_sched_params_set (and per vCPU): `sched` must be the domain's pool's scheduler, as libxl checks. */
export function schedSet(hv: Hypervisor, domid: number, a: { sched?: unknown; params?: unknown; vcpus?: unknown }): null {
  return wrap(() => {
    const poolid = hv.domainPool(domid);
    const sched = hv.cpupools.get(poolid).sched;
    if (a.sched !== sched) throw einval(`domain ${domid} is in a ${sched} cpupool, not ${String(a.sched)}`);
    const numeric = (p: unknown): SchedParamsWire => {
      if (typeof p !== 'object' || p === null || Array.isArray(p) || !Object.values(p).every((x) => typeof x === 'number')) throw einval('params must map names to numbers');
      return p as SchedParamsWire;
    };
    if (a.vcpus === undefined) {
      hv.schedAdjust(domid, numeric(a.params));
      return null;
    }
    if (!Array.isArray(a.vcpus)) throw einval('vcpus must be a list of {vcpuid, params}');
    const n = hv.vcpus(domid).length;
    const list = a.vcpus.map((x: unknown) => {
      const o = x as { vcpuid?: unknown; params?: unknown };
      if (typeof o !== 'object' || o === null || !Number.isInteger(o.vcpuid) || (o.vcpuid as number) < 0 || (o.vcpuid as number) >= n) throw einval(`each vcpus entry needs a vcpuid below ${n}`);
      return { vcpuid: o.vcpuid as number, params: numeric(o.params) };
    });
    // Every entry is checked on a scratch policy first, so a bad one changes nothing.
    const shadow = hv.cpupools.get(poolid).shadow;
    const probe = createScheduler(sched);
    for (const x of list) probe.adjust(domid, { ...shadow.params(domid, x.vcpuid), ...x.params }, x.vcpuid);
    for (const x of list) hv.schedAdjust(domid, x.params, x.vcpuid);
    return null;
  });
}

/** libxl_sched_credit{,2}_params_get/set. */
export function schedPool(hv: Hypervisor, pool: unknown, set?: unknown): { poolid: number; sched: string; ratelimitUs?: number; tsliceMs?: number } {
  const id = poolId(hv, pool);
  if (set !== undefined && (typeof set !== 'object' || set === null || Array.isArray(set))) throw einval('set must be an object');
  return wrap(() => {
    if (set) {
      const o = set as { ratelimitUs?: unknown; tsliceMs?: unknown };
      const num = (x: unknown, n: string) => {
        if (x !== undefined && (typeof x !== 'number' || !Number.isInteger(x))) throw einval(`${n} must be an integer`);
        return x as number | undefined;
      };
      hv.schedPoolSet(id, { ratelimitUs: num(o.ratelimitUs, 'ratelimitUs'), tsliceMs: num(o.tsliceMs, 'tsliceMs') });
    }
    return { poolid: id, sched: hv.cpupools.get(id).sched, ...hv.schedPoolGet(id) };
  });
}

/** An ARINC 653 schedule over the API: µs, domains by id with their names; no schedule is `majorFrameUs` 0. */
export interface Arinc653Wire {
  poolid: number;
  majorFrameUs: number;
  entries: { domid: number; name: string; vcpu: number; runtimeUs: number }[];
  /** system time (µs since the hypervisor's boot) the first major frame began */
  epochUs: number;
}

/**
 * xc_sched_arinc653_schedule_set / _get (XEN_SYSCTL_SCHEDOP_putinfo/getinfo
 * with xen_sysctl_arinc653_schedule): Xen names domains by handle, the API by
 * name or id, as xl does.
 */
export function schedArinc653(hv: Hypervisor, pool: unknown, set: unknown, domid: (dom: unknown) => number, name: (domid: number) => string): Arinc653Wire {
  const id = pool === undefined ? 0 : poolId(hv, pool);
  if (set !== undefined) {
    const o = set as { majorFrameUs?: unknown; entries?: unknown };
    if (typeof o !== 'object' || o === null || !Number.isInteger(o.majorFrameUs) || !Array.isArray(o.entries)) throw einval('set needs an integer majorFrameUs and entries');
    const entries = o.entries.map((e: unknown, i: number) => {
      const x = e as { dom?: unknown; vcpu?: unknown; runtimeUs?: unknown };
      if (typeof x !== 'object' || x === null || !Number.isInteger(x.vcpu) || !Number.isInteger(x.runtimeUs)) throw einval(`entry ${i}: needs dom, an integer vcpu and runtimeUs`);
      return { domid: domid(x.dom), vcpu: x.vcpu as number, runtime: BigInt(x.runtimeUs as number) * 1000n };
    });
    wrap(() => hv.setArinc653Schedule({ majorFrame: BigInt(o.majorFrameUs as number) * 1000n, entries }, id));
  }
  const s = wrap(() => hv.getArinc653Schedule(id));
  if (!s) return { poolid: id, majorFrameUs: 0, entries: [], epochUs: 0 };
  return {
    poolid: id,
    majorFrameUs: Number(s.schedule.majorFrame / 1000n),
    entries: s.schedule.entries.map((e) => ({ domid: e.domid, name: name(e.domid), vcpu: e.vcpu, runtimeUs: Number(e.runtime / 1000n) })),
    epochUs: Number(s.epoch / 1000n),
  };
}

/** The API's handlers for these operations (registered by daemon.ts). */
export function schedHandlers(hv: () => Hypervisor, domid: (a: Record<string, unknown>) => number, name: (domid: number) => string): Pick<Handlers, 'cpupool.list' | 'cpupool.create' | 'cpupool.destroy' | 'cpupool.rename' | 'cpupool.cpu-add' | 'cpupool.cpu-remove' | 'cpupool.migrate' | 'sched.get' | 'sched.set' | 'sched.pool' | 'sched.arinc653'> {
  return {
    'cpupool.list': () => cpupoolList(hv()),
    'cpupool.create': (a) => cpupoolCreate(hv(), a),
    'cpupool.destroy': async (a) => { await cpupoolOp(hv(), 'destroy', a); return null; },
    'cpupool.rename': async (a) => { await cpupoolOp(hv(), 'rename', a); return null; },
    'cpupool.cpu-add': async (a) => (await cpupoolOp(hv(), 'cpu-add', a))!,
    'cpupool.cpu-remove': async (a) => (await cpupoolOp(hv(), 'cpu-remove', a))!,
    'cpupool.migrate': (a) => cpupoolMigrate(hv(), domid(a), a.pool),
    'sched.get': (a) => schedGet(hv(), domid(a), a.vcpus),
    'sched.set': (a) => schedSet(hv(), domid(a), a),
    'sched.pool': (a) => schedPool(hv(), a.pool, a.set),
    'sched.arinc653': (a) => schedArinc653(hv(), a.pool, a.set, (dom) => domid({ dom }), name),
  };
}
