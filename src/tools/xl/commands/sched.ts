// xl sched-credit, sched-credit2, sched-rtds (tools/xl/xl_sched.c): list a
// scheduler's domains pool by pool, show or set one domain's (or vCPU's)
// parameters, show or set a pool's. Output formats, checks and messages are
// xl's; the values come from the daemon's sched.* operations.

import type { DomainSummary } from '../../daemon/protocol.js';
import { ApiCallError } from '../../daemon/client.js';
import type { XlCommand, XlContext, Values } from '../command.js';
import { findDomain } from './common.js';

/** C's strtol(s, NULL, 10) as xl uses it: leading blanks, a sign, digits; 0 when none. */
export function strtol(s: string): number {
  const m = /^\s*([+-]?\d+)/.exec(s);
  if (!m) return 0;
  const n = Number(m[1]);
  return Math.max(-(2 ** 63), Math.min(2 ** 63 - 1, n));
}

/** printf("%-Ns") / ("%Nd") */
const left = (s: string | number, n: number) => String(s).padEnd(n);
const right = (s: string | number, n: number) => String(s).padStart(n);

interface Pool { poolid: number; name: string; sched: string }

async function pools(ctx: XlContext): Promise<Pool[]> {
  return (await ctx.client()).call('cpupool.list', {});
}

/** libxl_cpupool_qualifier_to_cpupoolid + libxl_cpupoolid_is_valid, or xl's message. */
async function findPool(ctx: XlContext, q: string): Promise<Pool | null> {
  const all = await pools(ctx);
  const p = /^\d+$/.test(q) ? all.find((x) => x.poolid === Number(q)) : all.find((x) => x.name === q);
  if (!p) ctx.err(`unknown cpupool '${q}'\n`);
  return p ?? null;
}

type Got = { sched: string; poolid: number; params: Record<string, number>; vcpus?: (Record<string, number> & { vcpuid: number })[] };

/** sched_domain_get: the parameters, or xl's message when the domain is under another scheduler (null). */
async function domainGet(ctx: XlContext, domid: number, sched: string, vcpus?: number[] | 'all', what = 'libxl_domain_sched_params_get'): Promise<Got | null> {
  let g: Got;
  try {
    g = await (await ctx.client()).call('sched.get', { dom: domid, ...(vcpus ? { vcpus } : {}) });
  } catch (e) {
    if (!(e instanceof ApiCallError)) throw e;
    ctx.err(`${what} failed.\n`);
    return null;
  }
  if (g.sched !== sched) {
    ctx.err(`${what} returned ${g.sched} not ${sched}.\n`);
    return null;
  }
  return g;
}

async function domainSet(ctx: XlContext, domid: number, sched: string, args: { params?: Record<string, number>; vcpus?: { vcpuid: number; params: Record<string, number> }[] }, what = 'libxl_domain_sched_params_set'): Promise<boolean> {
  try {
    await (await ctx.client()).call('sched.set', { dom: domid, sched, ...args });
    return true;
  } catch (e) {
    if (!(e instanceof ApiCallError)) throw e;
    ctx.err(`${what} failed.\n`);
    return false;
  }
}

async function domainsOf(ctx: XlContext): Promise<DomainSummary[]> {
  return (await (await ctx.client()).call('domain.list', {})).sort((a, b) => a.domid - b.domid);
}

/**
 * sched_domain_output: for each pool running `sched` (or just `cpupool`),
 * the pool line, the header, then each of its domains. The control domain
 * (the daemon) is scheduled by the host, not by a pool: it is not listed.
 */
async function listAll(ctx: XlContext, sched: string, cpupool: string | undefined, poolLine: (p: Pool) => Promise<void>, header: () => void, row: (d: DomainSummary) => Promise<boolean>): Promise<number> {
  let only: Pool | null = null;
  if (cpupool !== undefined) {
    only = await findPool(ctx, cpupool);
    if (!only) return 1;
  }
  const doms = await domainsOf(ctx);
  const poolOf = new Map<number, number>();
  for (const d of doms) {
    if (d.domid === 0) continue;
    try {
      poolOf.set(d.domid, (await (await ctx.client()).call('sched.get', { dom: d.domid })).poolid);
    } catch (e) {
      if (!(e instanceof ApiCallError)) throw e; // gone meanwhile
    }
  }
  for (const p of await pools(ctx)) {
    if (p.sched !== sched || (only && only.poolid !== p.poolid)) continue;
    await poolLine(p);
    header();
    for (const d of doms) {
      if (poolOf.get(d.domid) !== p.poolid) continue;
      if (!(await row(d))) break;
    }
  }
  return 0;
}

const str = (v: Values, k: string) => (typeof v[k] === 'string' ? (v[k] as string) : undefined);

// --- credit and credit2 ------------------------------------------------------

function creditHeader(ctx: XlContext): void {
  ctx.out(`${left('Name', 33)} ${right('ID', 4)} ${right('Weight', 6)} ${right('Cap', 4)}\n`);
}

async function creditRow(ctx: XlContext, sched: string, domid: number, name: string): Promise<boolean> {
  const g = await domainGet(ctx, domid, sched);
  if (!g) return false;
  ctx.out(`${left(name, 33)} ${right(domid, 4)} ${right(g.params.weight ?? 0, 6)} ${right(g.params.cap ?? 0, 4)}\n`);
  return true;
}

async function poolParamsLine(ctx: XlContext, p: Pool, sched: 'credit' | 'credit2'): Promise<void> {
  try {
    const r = await (await ctx.client()).call('sched.pool', { pool: p.poolid });
    if (r.sched !== sched) throw new Error('not this scheduler');
    ctx.out(sched === 'credit2' ? `Cpupool ${p.name}: ratelimit=${r.ratelimitUs}us\n` : `Cpupool ${p.name}: tslice=${r.tsliceMs}ms ratelimit=${r.ratelimitUs}us migration-delay=0us\n`);
  } catch {
    ctx.out(`Cpupool ${p.name}: [sched params unavailable]\n`);
  }
}

async function nameOf(ctx: XlContext, domid: number): Promise<string> {
  const d = (await domainsOf(ctx)).find((x) => x.domid === domid);
  return d?.name ?? '';
}

function creditCommand(sched: 'credit' | 'credit2'): XlCommand {
  const credit1 = sched === 'credit';
  return {
    name: `sched-${sched}`,
    modifies: true,
    desc: `Get/set ${sched} scheduler parameters`,
    usage: credit1 ? '[-d <Domain> [-w[=WEIGHT]|-c[=CAP]]] [-s [-t TSLICE] [-r RATELIMIT]] [-p CPUPOOL]' : '[-d <Domain> [-w[=WEIGHT]]] [-p CPUPOOL]',
    help: credit1
      ? [
        '-d DOMAIN, --domain=DOMAIN        Domain to modify',
        '-w WEIGHT, --weight=WEIGHT        Weight (int)',
        '-c CAP, --cap=CAP                 Cap (int)',
        '-s         --schedparam           Query / modify scheduler parameters',
        '-t TSLICE, --tslice_ms=TSLICE     Set the timeslice, in milliseconds',
        '-r RLIMIT, --ratelimit_us=RLIMIT  Set the scheduling rate limit, in microseconds',
        '-p CPUPOOL, --cpupool=CPUPOOL     Restrict output to CPUPOOL',
      ].join('\n')
      : [
        '-d DOMAIN, --domain=DOMAIN     Domain to modify',
        '-w WEIGHT, --weight=WEIGHT     Weight (int)',
        '-c CAP,    --cap=CAP           Cap (int)',
        '-s         --schedparam        Query / modify scheduler parameters',
        '-r RLIMIT, --ratelimit_us=RLIMIT Set the scheduling rate limit, in microseconds',
        '-p CPUPOOL, --cpupool=CPUPOOL  Restrict output to CPUPOOL',
      ].join('\n'),
    options: {
      domain: { type: 'string', short: 'd' },
      weight: { type: 'string', short: 'w' },
      cap: { type: 'string', short: 'c' },
      schedparam: { type: 'boolean', short: 's' },
      ratelimit_us: { type: 'string', short: 'r' },
      cpupool: { type: 'string', short: 'p' },
      ...(credit1 ? { tslice_ms: { type: 'string', short: 't' }, migration_delay_us: { type: 'string', short: 'm' } } as const : {}),
    },
    async run(ctx, v) {
      const dom = str(v, 'domain');
      const cpupool = str(v, 'cpupool');
      const w = str(v, 'weight');
      const c = str(v, 'cap');
      const s = v['schedparam'] === true;
      const r = str(v, 'ratelimit_us');
      const t = str(v, 'tslice_ms');
      const m = str(v, 'migration_delay_us');
      if (credit1) {
        if ((cpupool !== undefined || s) && (dom !== undefined || w !== undefined || c !== undefined)) {
          ctx.err('Specifying a cpupool or schedparam is not allowed with domain options.\n');
          return 1;
        }
      } else if (cpupool !== undefined && (dom !== undefined || w !== undefined || c !== undefined)) {
        ctx.err('Specifying a cpupool is not allowed with other options.\n');
        return 1;
      }
      if (dom === undefined && (w !== undefined || c !== undefined)) {
        ctx.err('Must specify a domain.\n');
        return 1;
      }
      if (credit1 && !s && (t !== undefined || r !== undefined || m !== undefined)) {
        ctx.err('Must specify schedparam to set schedule parameter values.\n');
        return 1;
      }
      if (s) {
        let pool: Pool | null = { poolid: 0, name: '', sched };
        if (cpupool !== undefined) {
          pool = await findPool(ctx, cpupool);
          if (!pool) return 1;
        } else pool = (await pools(ctx)).find((p) => p.poolid === 0) ?? pool;
        if (r === undefined && t === undefined && m === undefined) {
          await poolParamsLine(ctx, pool, sched);
          return 0;
        }
        const c2 = await ctx.client();
        // credit reads the pool's parameters first (libxl_sched_credit_params_get), credit2 sets at once.
        const cur = await c2.call('sched.pool', { pool: pool.poolid }).catch((e: unknown) => { if (e instanceof ApiCallError) return null; throw e; });
        if (credit1 && cur?.sched !== sched) {
          ctx.err('libxl_sched_credit_params_get failed.\n');
          return 1;
        }
        try {
          // migration_delay_us: xenode does not move vCPUs between pCPUs, so there is no delay but 0 to set.
          if (cur?.sched !== sched || (m !== undefined && strtol(m) !== 0)) throw new ApiCallError('EINVAL', 'not settable');
          await c2.call('sched.pool', { pool: pool.poolid, set: { ...(r !== undefined ? { ratelimitUs: strtol(r) } : {}), ...(t !== undefined ? { tsliceMs: strtol(t) } : {}) } });
        } catch (e) {
          if (!(e instanceof ApiCallError)) throw e;
          ctx.err(`libxl_sched_${sched}_params_set failed.\n`);
          return 1;
        }
        return 0;
      }
      if (dom === undefined) {
        return listAll(ctx, sched, cpupool, (p) => poolParamsLine(ctx, p, sched), () => creditHeader(ctx), (d) => creditRow(ctx, sched, d.domid, d.name));
      }
      const domid = await findDomain(ctx, dom);
      if (w === undefined && c === undefined) {
        creditHeader(ctx);
        return (await creditRow(ctx, sched, domid, await nameOf(ctx, domid))) ? 0 : 1;
      }
      const params: Record<string, number> = {};
      if (w !== undefined) params.weight = strtol(w);
      if (c !== undefined) params.cap = strtol(c);
      return (await domainSet(ctx, domid, sched, { params })) ? 0 : 1;
    },
  };
}

export const schedCredit = creditCommand('credit');
export const schedCredit2 = creditCommand('credit2');

// --- rtds ----------------------------------------------------------------

function rtdsHeader(ctx: XlContext, vcpu: boolean): void {
  ctx.out(`${left('Name', 33)} ${right('ID', 4)}${vcpu ? ` ${right('VCPU', 4)}` : ''} ${right('Period', 9)} ${right('Budget', 9)} ${right('Extratime', 10)}\n`);
}

async function rtdsRow(ctx: XlContext, domid: number, name: string, vcpus?: number[] | 'all'): Promise<boolean> {
  const g = await domainGet(ctx, domid, 'rtds', vcpus, vcpus ? (vcpus === 'all' ? 'libxl_vcpu_sched_params_get_all' : 'libxl_vcpu_sched_params_get') : undefined);
  if (!g) return false;
  const line = (p: Record<string, number>, vcpu?: number) => `${left(name, 33)} ${right(domid, 4)}${vcpu !== undefined ? ` ${right(vcpu, 4)}` : ''} ${right(p.period ?? 0, 9)} ${right(p.budget ?? 0, 9)} ${right(p.extratime ? 'yes' : 'no', 10)}\n`;
  if (!g.vcpus) ctx.out(line(g.params));
  else for (const x of g.vcpus) ctx.out(line(x, x.vcpuid));
  return true;
}

export const schedRtds: XlCommand = {
  name: 'sched-rtds',
  modifies: true,
  desc: 'Get/set rtds scheduler parameters',
  usage: '[-d <Domain> [-v[=VCPUID/all]] [-p[=PERIOD]] [-b[=BUDGET]]]',
  help: [
    '-d DOMAIN, --domain=DOMAIN     Domain to modify',
    '-v VCPUID/all, --vcpuid=VCPUID/all    VCPU to modify or output;',
    "               Using '-v all' to modify/output all vcpus",
    '-p PERIOD, --period=PERIOD     Period (us)',
    '-b BUDGET, --budget=BUDGET     Budget (us)',
    '',
  ].join('\n'),
  options: {
    domain: { type: 'string', short: 'd' },
    period: { type: 'string', short: 'p', multiple: true },
    budget: { type: 'string', short: 'b', multiple: true },
    extratime: { type: 'string', short: 'e', multiple: true },
    vcpuid: { type: 'string', short: 'v', multiple: true },
    // xl's getopt string has "c" without an argument (the long --cpupool takes one)
    cpupool: { type: 'string' },
    'cpupool-short': { type: 'boolean', short: 'c' },
  },
  async run(ctx, v) {
    const dom = str(v, 'domain');
    const cpupool = str(v, 'cpupool');
    const list = (k: string) => (Array.isArray(v[k]) ? (v[k] as string[]) : []);
    const periods = list('period').map(strtol);
    const budgets = list('budget').map(strtol);
    const extra = list('extratime');
    for (const e of extra) {
      if (e !== '0' && e !== '1') {
        ctx.err('Invalid extratime.\n');
        return 1;
      }
    }
    const vs = list('vcpuid');
    const all = vs.includes('all');
    const vcpus = vs.filter((x) => x !== 'all').map(strtol);
    const optP = periods.length > 0, optB = budgets.length > 0, optE = extra.length > 0, optV = vcpus.length > 0;
    if (cpupool !== undefined && (dom !== undefined || optP || optB || optE || optV || all)) {
      ctx.err('Specifying a cpupool is not allowed with other options.\n');
      return 1;
    }
    if (dom === undefined && (optP || optB || optE || optV)) {
      ctx.err('Missing parameters.\n');
      return 1;
    }
    if (dom !== undefined && !optV && !all && (optP || optB || optE)) {
      ctx.err('Must specify VCPU.\n');
      return 1;
    }
    if (optV && all) {
      ctx.err('Incorrect VCPU IDs.\n');
      return 1;
    }
    if ((vcpus.length > budgets.length && optB) || (vcpus.length > periods.length && optP) || (vcpus.length > extra.length && optE) || periods.length !== budgets.length || periods.length !== extra.length) {
      ctx.err('Incorrect number of period, budget and extratime\n');
      return 1;
    }
    const poolLine = async (p: Pool) => { ctx.out(`Cpupool ${p.name}: sched=RTDS\n`); };
    if (dom === undefined) {
      return listAll(ctx, 'rtds', cpupool, poolLine, () => rtdsHeader(ctx, all), (d) => rtdsRow(ctx, d.domid, d.name, all ? 'all' : undefined));
    }
    const domid = await findDomain(ctx, dom);
    const name = await nameOf(ctx, domid);
    if (!optV && !all) {
      rtdsHeader(ctx, false);
      return (await rtdsRow(ctx, domid, name)) ? 0 : 1;
    }
    if (!optP && !optB && !optE) {
      rtdsHeader(ctx, true);
      return (await rtdsRow(ctx, domid, name, optV ? vcpus : 'all')) ? 0 : 1;
    }
    const p = (i: number) => ({ period: periods[i]!, budget: budgets[i]!, extratime: Number(extra[i]) });
    if (optV) {
      return (await domainSet(ctx, domid, 'rtds', { vcpus: vcpus.map((id, i) => ({ vcpuid: id, params: p(i) })) }, 'libxl_vcpu_sched_params_set')) ? 0 : 1;
    }
    const got = await domainGet(ctx, domid, 'rtds', 'all', 'libxl_vcpu_sched_params_get_all');
    if (!got) return 1;
    return (await domainSet(ctx, domid, 'rtds', { vcpus: got.vcpus!.map((x) => ({ vcpuid: x.vcpuid, params: p(0) })) }, 'libxl_vcpu_sched_params_set_all')) ? 0 : 1;
  },
};
