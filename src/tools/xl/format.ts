// xl's output formats, as pure functions of the daemon's answers: `xl list`,
// `xl vcpu-list`, `xl info`, `xl uptime` and the `xl top` table. Column
// widths and letters follow Xen's tools/xl (xl_info.c, xl_vcpu.c) and
// tools/xentop, so scripts that parse xl's output parse ours.

import type { DomainSummary, VcpuSummary } from '../daemon/protocol.js';

/** printf("%.<d>f", x): like toFixed, but exact ties round to even as glibc does (0.25 -> "0.2"). */
export function fixed(x: number, digits: number): string {
  if (!Number.isFinite(x)) return String(x);
  const s = x.toFixed(digits);
  const scaled = x * 10 ** digits;
  // toFixed rounds exact ties away from zero; glibc rounds them to even.
  if (Math.abs(scaled - Math.trunc(scaled)) === 0.5 && Number.isInteger(scaled * 2)) {
    const down = Math.trunc(scaled);
    const even = down % 2 === 0 ? down : down + Math.sign(scaled);
    return (even / 10 ** digits).toFixed(digits);
  }
  return s;
}

const padL = (s: string | number, w: number): string => String(s).padStart(w);
const padR = (s: string | number, w: number): string => String(s).padEnd(w);

/** `xl vm-list`: "UUID" + 34 spaces, then LIBXL_UUID_FMT "  %d    %-30s" per domain (xl_list.c list_vm). */
export function vmListHeader(): string {
  return 'UUID                                  ID    name';
}

export function vmListRow(d: Pick<DomainSummary, 'uuid' | 'domid' | 'name'>): string {
  return `${d.uuid}  ${d.domid}    ${padR(d.name, 30)}`;
}

/** `xl sharing` (xl_mem.c): "%-40s %5d %5lu  %5lu", memory with claims as xl list shows it, then shared pages. */
export function sharingHeader(): string {
  return 'Name                                        ID   Mem Shared';
}

export function sharingRow(d: Pick<DomainSummary, 'name' | 'domid' | 'memory'>): string {
  // shared_memkb: xenode's hypervisor does no page sharing (XENMEM_sharing_op), so it is 0
  return `${padR(d.name, 40)} ${padL(d.domid, 5)} ${padL(Math.floor(d.memory / 1024), 5)}  ${padL(0, 5)}`;
}

/** "-rscwS"[SHUTDOWN_*]: xl's shutdown-reason letter ('?' beyond the table). */
const SHUTDOWN_REASON_LETTERS = '-rscwS';

/** `xl list` header ("Name" + 40 spaces puts "ID" at column 44). */
export interface ListOptions {
  verbose?: boolean;
  context?: boolean;
  /** -c: the cpupool column */
  cpupool?: boolean;
  /** xl claims: the outstanding-claim column */
  claim?: boolean;
  /** -n: the NUMA node affinity column, over this many nodes */
  numaNodes?: number;
}

export function listHeader(opts: ListOptions = {}): string {
  let h = 'Name                                        ID   Mem VCPUs\tState\tTime(s)';
  if (opts.verbose) h += '   UUID                            Reason-Code\tSecurity Label';
  if (opts.context && !opts.verbose) h += '   Security Label';
  if (opts.claim) h += '  Claimed';
  if (opts.cpupool) h += '         Cpupool';
  if (opts.numaNodes !== undefined) h += ' NODE Affinity';
  return h;
}



/** xl's six state letters r b p s <reason> d, '-' where false. */
export function stateFlags(d: Pick<DomainSummary, 'running' | 'blocked' | 'paused' | 'shutdown' | 'shutdownReason' | 'dying'>): string {
  const reason = d.shutdown ? d.shutdownReason : 0;
  const letter = reason >= 0 && reason < SHUTDOWN_REASON_LETTERS.length ? SHUTDOWN_REASON_LETTERS[reason]! : '?';
  return (d.running ? 'r' : '-') + (d.blocked ? 'b' : '-') + (d.paused ? 'p' : '-') + (d.shutdown ? 's' : '-') + letter + (d.dying ? 'd' : '-');
}

/**
 * xl prints cpu time as (float)ns / 1e9: the single-precision cast is what
 * makes its figures, so the same rounding is reproduced here.
 */
export function xlSeconds(seconds: number): number {
  return Math.fround(seconds * 1e9) / 1e9;
}

/** One `xl list` row: "%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f" (+ -v / -Z columns). */
export function listRow(d: DomainSummary, opts: ListOptions = {}): string {
  let r = `${padR(d.name, 40)} ${padL(d.domid, 5)} ${padL(Math.floor(d.memory / 1024), 5)} ${padL(d.onlineVcpus, 5)}     ${stateFlags(d)}  ${padL(fixed(xlSeconds(d.cpuTime), 1), 8)}`;
  if (opts.verbose) {
    r += ` ${d.uuid}`;
    r += d.shutdown ? ` ${padL((d.shutdownReason >>> 0).toString(16), 8)}` : ` ${padL('-', 8)}`;
  }
  // outstanding_memkb / 1024: xenode's hypervisor has no XENMEM_claim_pages, so no domain holds a claim
  if (opts.claim) r += ` ${padL(0, 5)}`;
  if (opts.verbose || opts.context) r += ` ${padL(d.seclabel || '-', 16)}`;
  if (opts.cpupool) r += padL(d.cpupool, 16);
  if (opts.numaNodes !== undefined) r += ` ${cpuSet(null, opts.numaNodes)}`;
  return r;
}

/**
 * A pCPU set the way xl's print_bitmap shows it over `nrCpus` bits: "all"
 * for one run from 0 to the last CPU, "none" for nothing, else ranges
 * "0-3,6". `null` means every CPU.
 */
export function cpuSet(cpus: readonly number[] | null, nrCpus: number): string {
  if (cpus === null) return nrCpus > 0 ? 'all' : 'none';
  const set = new Set(cpus.filter((c) => Number.isInteger(c) && c >= 0 && c < nrCpus));
  const runs: [number, number][] = [];
  for (let i = 0; i < nrCpus; i++) {
    if (!set.has(i)) continue;
    const last = runs[runs.length - 1];
    if (last && last[1] === i - 1) last[1] = i;
    else runs.push([i, i]);
  }
  if (runs.length === 0) return 'none';
  if (runs.length === 1 && runs[0]![0] === 0 && runs[0]![1] === nrCpus - 1) return 'all';
  return runs.map(([a, b]) => (a === b ? String(a) : `${a}-${b}`)).join(',');
}

export function vcpuListHeader(): string {
  return `${padR('Name', 32)} ${padL('ID', 5)} ${padL('VCPU', 5)} ${padL('CPU', 5)} ${padL('State', 5)} ${padL('Time(s)', 9)} Affinity (Hard / Soft)`;
}

/**
 * One `xl vcpu-list` row. An online vCPU shows its pCPU and "r"/"b" flags
 * ("%5u %3c%c- "), an offline one "-" and "--p". A vCPU that is not placed
 * on any pCPU yet (pcpu -1) shows "-" where xl would show a number.
 */
export function vcpuListRow(v: VcpuSummary, nrCpus: number): string {
  let r = `${padR(v.name, 32)} ${padL(v.domid, 5)} ${padL(v.vcpu, 5)}`;
  if (v.state === 'offline') {
    r += `${padL('-', 5)} ${padL('-', 3)}-p `;
  } else {
    r += `${padL(v.pcpu >= 0 ? v.pcpu : '-', 5)} ${padL(v.state === 'running' ? 'r' : '-', 3)}${v.state === 'blocked' ? 'b' : '-'}- `;
  }
  r += `${padL(fixed(xlSeconds(v.cpuTime), 1), 9)}  `;
  return r + `${cpuSet(v.hard, nrCpus)} / ${cpuSet(v.soft, nrCpus)}`;
}

/** `xl info`'s keys in xl's order; xend_config_format (a constant of xl's output format) closes the list. */
export const INFO_KEYS = [
  'host', 'release', 'version', 'machine',
  'nr_cpus', 'max_cpu_id', 'nr_nodes', 'cores_per_socket', 'threads_per_core', 'cpu_mhz', 'hw_caps', 'virt_caps',
  'total_memory', 'free_memory', 'sharing_freed_memory', 'sharing_used_memory', 'outstanding_claims', 'free_cpus',
  'xen_major', 'xen_minor', 'xen_extra', 'xen_version', 'xen_caps', 'xen_scheduler', 'xen_pagesize',
  'platform_params', 'xen_changeset', 'xen_commandline',
  'cc_compiler', 'cc_compile_by', 'cc_compile_domain', 'cc_compile_date', 'build_id',
] as const;

/**
 * `xl info -n`'s topology and NUMA sections (output_topologyinfo,
 * output_numainfo): every pCPU is a core of socket 0 on node 0, there are
 * no PCI devices, and node 0 holds the host's memory at distance 10 from itself.
 */
export function topologyLines(info: Record<string, string | number>): string[] {
  const nrCpus = Number(info['nr_cpus'] ?? 0);
  const lines = ['cpu_topology           :', 'cpu:    core    socket     node'];
  for (let i = 0; i < nrCpus; i++) lines.push(`${padL(i, 3)}:    ${padL(i, 4)}     ${padL(0, 4)}     ${padL(0, 4)}`);
  lines.push('device topology        :', 'device           node', 'No device topology data available');
  lines.push('numa_info              :', 'node:    memsize    memfree    distances');
  lines.push(`${padL(0, 4)}:    ${padL(Number(info['total_memory'] ?? 0), 6)}     ${padL(Number(info['free_memory'] ?? 0), 6)}      10`);
  return lines;
}

/**
 * `xl info` lines ("%-23s: value"): the daemon's host.info values in xl's
 * order, then any further keys it reports in its order, then
 * xend_config_format. Keys the daemon does not know are left out, never
 * invented. With `only`, prints just the value of lines whose key starts
 * with it, as `xl info <name>` does; with `numa`, the topology and NUMA
 * sections follow the physical ones (free_cpus), as in xl.
 */
export function infoLines(info: Record<string, string | number>, only?: string, numa = false): string[] {
  const known = new Set<string>(INFO_KEYS);
  const keys: string[] = INFO_KEYS.filter((k) => k in info);
  for (const k of Object.keys(info)) if (!known.has(k) && k !== 'xend_config_format') keys.push(k);
  const pairs: [string, string][] = keys.map((k) => [k, String(info[k])]);
  pairs.push(['xend_config_format', '4']);
  if (only !== undefined) return pairs.filter(([k]) => k.startsWith(only)).map(([, v]) => v);
  const lines = pairs.map(([k, v]) => `${padR(k, 23)}: ${v}`);
  if (numa) {
    const at = keys.indexOf('xen_major');
    lines.splice(at < 0 ? lines.length - 1 : at, 0, ...topologyLines(info));
  }
  return lines;
}

/** xl's uptime_to_string: "[D day(s), ]HH:MM[:SS]" with the hour space-padded. */
export function uptimeString(seconds: number, short: boolean): string {
  let up = Math.max(0, Math.floor(seconds));
  const day = Math.floor(up / 86400); up -= day * 86400;
  const hour = Math.floor(up / 3600); up -= hour * 3600;
  const min = Math.floor(up / 60); up -= min * 60;
  const hm = `${padL(hour, 2)}:${String(min).padStart(2, '0')}`;
  const t = short ? hm : `${hm}:${String(up).padStart(2, '0')}`;
  if (day > 1) return `${day} days, ${t}`;
  if (day === 1) return `${day} day, ${t}`;
  return t;
}

/** HH:MM:SS in local time, as strftime("%H:%M:%S"). */
export function clock(d: Date): string {
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
}

export function uptimeHeader(): string {
  return `${padR('Name', 33)} ${padL('ID', 4)} Uptime`;
}

export function uptimeRow(name: string, domid: number, seconds: number, short: boolean, now: Date): string {
  if (short) return ` ${clock(now)} up ${uptimeString(seconds, true)}, ${name} (${domid})`;
  return `${padR(name, 33)} ${padL(domid, 4)} ${uptimeString(seconds, false)}`;
}

/** xentop's columns that xenode can fill (name, state, CPU, memory, vCPUs). */
const TOP_FIELDS: [string, number][] = [
  ['NAME', 10], ['STATE', 6], ['CPU(sec)', 10], ['CPU(%)', 6], ['MEM(k)', 10], ['MEM(%)', 6], ['MAXMEM(k)', 10], ['MAXMEM(%)', 9], ['VCPUS', 5],
];

/** xentop's state letters, in its order: d s b c p r. */
export function topState(d: DomainSummary): string {
  return (d.dying ? 'd' : '-') + (d.shutdown ? 's' : '-') + (d.blocked ? 'b' : '-') + (d.crashed ? 'c' : '-') + (d.paused ? 'p' : '-') + (d.running ? 'r' : '-');
}

export interface TopSample {
  at: number; // ms
  domains: DomainSummary[];
}

/**
 * One screen of `xl top` (xentop's layout): summary lines, the header, one
 * row per domain. CPU(%) is the CPU time used between the previous sample
 * and this one; the first screen shows 0.0 as xentop does.
 */
export function topScreen(cur: TopSample, prev: TopSample | null, host: { totalMemKiB?: number; freeMemKiB?: number; nrCpus?: number; cpuMhz?: string; version?: string }, now: Date): string[] {
  const lines: string[] = [];
  lines.push(`xentop - ${clock(now)}${host.version ? `   Xen ${host.version}` : ''}`);
  let run = 0, block = 0, pause = 0, crash = 0, dying = 0, shut = 0;
  for (const d of cur.domains) {
    if (d.running) run++;
    else if (d.blocked) block++;
    else if (d.paused) pause++;
    else if (d.shutdown) shut++;
    else if (d.crashed) crash++;
    else if (d.dying) dying++;
  }
  lines.push(`${cur.domains.length} domains: ${run} running, ${block} blocked, ${pause} paused, ${crash} crashed, ${dying} dying, ${shut} shutdown `);
  const mem: string[] = [];
  if (host.totalMemKiB !== undefined && host.freeMemKiB !== undefined) {
    mem.push(`Mem: ${host.totalMemKiB}k total, ${host.totalMemKiB - host.freeMemKiB}k used, ${host.freeMemKiB}k free    `);
  }
  if (host.nrCpus !== undefined) mem.push(`CPUs: ${host.nrCpus}${host.cpuMhz !== undefined ? ` @ ${Math.floor(Number(host.cpuMhz))}MHz` : ''}`);
  if (mem.length) lines.push(mem.join(''));
  lines.push(TOP_FIELDS.map(([h, w]) => padL(h, w)).join(' '));
  const prevById = new Map((prev?.domains ?? []).map((d) => [d.domid, d]));
  const elapsed = prev ? (cur.at - prev.at) / 1000 : 0;
  for (const d of cur.domains) {
    const p = prevById.get(d.domid);
    const pct = p && elapsed > 0 ? ((d.cpuTime - p.cpuTime) / elapsed) * 100 : 0;
    const memPct = host.totalMemKiB ? (d.memory / host.totalMemKiB) * 100 : NaN;
    const maxPct = host.totalMemKiB ? (d.maxmem / host.totalMemKiB) * 100 : NaN;
    lines.push([
      padL(d.name.slice(0, 10), 10), padL(topState(d), 6), padL(Math.floor(d.cpuTime), 10), padL(fixed(pct, 1), 6),
      padL(d.memory, 10), padL(Number.isNaN(memPct) ? 'n/a' : fixed(memPct, 1), 6),
      padL(d.maxmem, 10), padL(Number.isNaN(maxPct) ? 'n/a' : fixed(maxPct, 1), 9), padL(d.vcpus, 5),
    ].join(' '));
  }
  return lines;
}
