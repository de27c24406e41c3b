// xl cpupool-create, -list, -destroy, -rename, -cpu-add, -cpu-remove,
// -migrate (tools/xl/xl_cpupool.c), with xl's output and messages; the pools
// themselves are the daemon's (cpupool.* operations).

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ApiCallError } from '../../daemon/client.js';
import type { XlCommand, XlContext } from '../command.js';
import { parseCpuSet, parseXlCfg, XlCfgError, COMMAND_LINE, type XlCfgValue } from '../cfg.js';
import { reportDaemonError } from './common.js';

interface Pool { poolid: number; name: string; sched: string; cpus: number[]; nDom: number }

async function pools(ctx: XlContext): Promise<Pool[]> {
  return (await ctx.client()).call('cpupool.list', {});
}

/** libxl_cpupool_qualifier_to_cpupoolid: digits are an id, anything else a name. */
async function findPool(ctx: XlContext, q: string): Promise<Pool | undefined> {
  const all = await pools(ctx);
  return /^\d+$/.test(q) ? all.find((p) => p.poolid === Number(q)) : all.find((p) => p.name === q);
}

async function nrCpus(ctx: XlContext): Promise<number> {
  return Number((await (await ctx.client()).call('host.info', {}))['nr_cpus']) || 0;
}

/** parse_cpurange: a cpu list as vcpu-pin takes it ("all", "2", "0-3,^1", "node:0"). */
async function cpuRange(ctx: XlContext, spec: string): Promise<number[] | null> {
  const n = await nrCpus(ctx);
  try {
    return parseCpuSet(spec, n) ?? Array.from({ length: n }, (_, i) => i);
  } catch (e) {
    ctx.err(`${(e as Error).message}\n`);
    return null;
  }
}

export const cpupoolCreate: XlCommand = {
  name: 'cpupool-create',
  canDryrun: true,
  modifies: true,
  desc: 'Create a new CPU pool',
  usage: '[options] [<ConfigFile>] [Variable=value ...]',
  help: [
    '-h, --help                   Print this help.',
    '-f FILE, --defconfig=FILE    Use the given configuration file.',
    '-n, --dryrun                 Dry run - prints the resulting configuration.',
    '                              (deprecated in favour of global -N option).',
    '',
    'See the xlcpupool.cfg(5) manpage for more information.',
  ].join('\n'),
  options: {
    defconfig: { type: 'string', short: 'f' },
    dryrun: { type: 'boolean', short: 'n' },
  },
  async run(ctx, v, args) {
    let filename = typeof v['defconfig'] === 'string' ? v['defconfig'] : undefined;
    const extra: string[] = [];
    for (const a of args) {
      if (a.includes('=')) extra.push(a);
      else if (!filename) filename = a;
      else {
        ctx.out(`Usage: xl [-vtfN] cpupool-create ${this.usage}\n\n${this.desc}.\n\nOptions:\n\n${this.help}\n`);
        return 1;
      }
    }
    let text = '';
    if (filename) {
      try {
        text = readFileSync(filename, 'utf8');
      } catch (e) {
        ctx.err(`Failed to read config file: ${filename}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'No such file or directory' : (e as Error).message}\n`);
        return 1;
      }
    }
    const src = filename ?? 'command line';
    let cfg;
    try {
      cfg = parseXlCfg(text, src, extra);
    } catch (e) {
      if (!(e instanceof XlCfgError)) throw e;
      ctx.err(`${e.message}\nFailed to parse config file: Invalid argument\n`);
      return 1;
    }
    const string = (k: string): string | undefined => {
      const s = cfg.get(k)?.value;
      return s?.kind === 'string' ? s.value : undefined;
    };
    const name = string('name') ?? (filename ? path.basename(filename) : undefined);
    if (!name) {
      ctx.err('Missing cpupool name!\n');
      return 1;
    }
    const all = await pools(ctx);
    if (all.some((p) => p.name === name)) {
      ctx.err(`Pool name "${name}" already exists\n`);
      return 1;
    }
    const schedName = string('sched') ?? all.find((p) => p.poolid === 0)?.sched ?? 'credit2';
    if (!['credit', 'credit2', 'rtds', 'arinc653', 'null'].includes(schedName)) {
      ctx.err('Unknown scheduler\n');
      return 1;
    }
    const used = new Set(all.flatMap((p) => p.cpus));
    const n = await nrCpus(ctx);
    const free = (c: number) => c >= 0 && c < n && !used.has(c);
    let cpus: number[] = [];
    const nodes = cfg.get('nodes')?.value;
    const cpusV: XlCfgValue | undefined = cfg.get('cpus')?.value;
    if (nodes?.kind === 'list') {
      // one NUMA node, 0: its free cpus
      if (nodes.items.some((x) => (x.kind === 'string' ? x.value : x.kind === 'number' ? x.text : '') === '0')) cpus = Array.from({ length: n }, (_, i) => i).filter(free);
      if (!cpus.length) {
        ctx.err('no free cpu found\n');
        return 1;
      }
    } else if (cpusV?.kind === 'list') {
      for (const it of cpusV.items) {
        const c = Number.parseInt(it.kind === 'string' ? it.value : it.kind === 'number' ? it.text : '', 10) || 0;
        if (!free(c)) {
          ctx.err(`cpu ${c} illegal or not free\n`);
          return 1;
        }
        cpus.push(c);
      }
    } else if (cpusV?.kind === 'string') {
      const r = await cpuRange(ctx, cpusV.value);
      if (!r) return 1;
      for (const c of r) {
        if (!free(c)) {
          ctx.err(`cpu ${c} illegal or not free\n`);
          return 1;
        }
      }
      cpus = r;
    }
    ctx.out(`Using config file "${src === COMMAND_LINE ? 'command line' : src}"\n`);
    ctx.out(`cpupool name:   ${name}\n`);
    ctx.out(`scheduler:      ${schedName}\n`);
    ctx.out(`number of cpus: ${cpus.length}\n`);
    if (ctx.global.dryRun || v['dryrun'] === true) return 0;
    try {
      await (await ctx.client()).call('cpupool.create', { name, sched: schedName, cpus });
    } catch (e) {
      if (!(e instanceof ApiCallError)) throw e;
      ctx.err('error on creating cpupool\n');
      return 1;
    }
    return 0;
  },
};

export const cpupoolList: XlCommand = {
  name: 'cpupool-list',
  desc: 'List CPU pools on host',
  usage: '[-c|--cpus] [<CPU Pool>]',
  help: '-c, --cpus                     Output list of CPUs used by a pool',
  options: { cpus: { type: 'boolean', short: 'c' } },
  async run(ctx, v, args) {
    const all = await pools(ctx);
    let only: Pool | undefined;
    if (args[0] !== undefined) {
      // libxl_name_to_cpupoolid: by name only
      only = all.find((p) => p.name === args[0]);
      if (!only) {
        ctx.err(`Pool '${args[0]}' does not exist\n`);
        return 1;
      }
    }
    const cpus = v['cpus'] === true;
    let out = 'Name'.padEnd(19) + (cpus ? 'CPU list\n' : 'CPUs   Sched     Active   Domain count\n');
    for (const p of all) {
      if (only && only.poolid !== p.poolid) continue;
      out += p.name.padEnd(19);
      out += cpus ? p.cpus.join(',') : `${String(p.cpus.length).padStart(3)} ${p.sched.padStart(9)}       y       ${String(p.nDom).padStart(4)}`;
      out += '\n';
    }
    ctx.out(out);
    return 0;
  },
};

/** The commands taking a pool first: xl's "unknown cpupool" when it is not one. */
async function withPool(ctx: XlContext, q: string): Promise<Pool | undefined> {
  const p = await findPool(ctx, q);
  if (!p) ctx.err(`unknown cpupool '${q}'\n`);
  return p;
}

export const cpupoolDestroy: XlCommand = {
  name: 'cpupool-destroy',
  modifies: true,
  desc: 'Deactivates a CPU pool',
  usage: '<CPU Pool>',
  minArgs: 1,
  async run(ctx, _v, args) {
    const p = await withPool(ctx, args[0]!);
    if (!p) return 1;
    try {
      await (await ctx.client()).call('cpupool.destroy', { pool: p.poolid });
    } catch (e) {
      if (!(e instanceof ApiCallError)) throw e;
      ctx.err(`Can't destroy cpupool '${args[0]}'\n`);
      return 1;
    }
    return 0;
  },
};

export const cpupoolRename: XlCommand = {
  name: 'cpupool-rename',
  modifies: true,
  desc: 'Renames a CPU pool',
  usage: '<CPU Pool> <new name>',
  minArgs: 2,
  async run(ctx, _v, args) {
    const p = await withPool(ctx, args[0]!);
    if (!p) return 1;
    try {
      await (await ctx.client()).call('cpupool.rename', { pool: p.poolid, name: args[1]! });
    } catch (e) {
      if (!(e instanceof ApiCallError)) throw e;
      ctx.err(`Can't rename cpupool '${args[0]}'\n`);
      return 1;
    }
    return 0;
  },
};

function cpuCommand(op: 'add' | 'remove'): XlCommand {
  return {
    name: `cpupool-cpu-${op}`,
    modifies: true,
    desc: op === 'add' ? 'Adds a CPU to a CPU pool' : 'Removes a CPU from a CPU pool',
    usage: '<CPU Pool> <CPU nr>|node:<node nr>',
    minArgs: 2,
    async run(ctx, _v, args) {
      const cpus = await cpuRange(ctx, args[1]!);
      if (!cpus) return 1;
      const p = await withPool(ctx, args[0]!);
      if (!p) return 1;
      const r = await (await ctx.client()).call(`cpupool.cpu-${op}`, { pool: p.poolid, cpus });
      if (r.failed.length) {
        if (ctx.global.verbose) for (const f of r.failed) ctx.err(`xl: ${f.message}\n`);
        if (op === 'add') ctx.err(`some cpus may not have been added to ${args[0]}\n`);
        else {
          ctx.err(`Some cpus may have not or only partially been removed from '${args[0]}'.\n`);
          ctx.err(`If a cpu can't be added to another cpupool, add it to '${args[0]}' again and retry.\n`);
        }
      }
      return 0;
    },
  };
}

export const cpupoolCpuAdd = cpuCommand('add');
export const cpupoolCpuRemove = cpuCommand('remove');

export const cpupoolMigrate: XlCommand = {
  name: 'cpupool-migrate',
  modifies: true,
  desc: 'Moves a domain into a CPU pool',
  usage: '<Domain> <CPU Pool>',
  minArgs: 2,
  async run(ctx, _v, args) {
    let domid: number;
    try {
      // libxl_domain_qualifier_to_domid, then libxl_domid_to_name: either failing is an unknown domain
      domid = (await (await ctx.client()).call('domain.resolve', { dom: /^\d+$/.test(args[0]!) ? Number(args[0]) : args[0]! })).domid;
    } catch (e) {
      if (!(e instanceof ApiCallError)) throw e;
      ctx.err(`unknown domain '${args[0]}'\n`);
      return 1;
    }
    const p = await withPool(ctx, args[1]!);
    if (!p) return 1;
    try {
      await (await ctx.client()).call('cpupool.migrate', { dom: domid, pool: p.poolid });
    } catch (e) {
      if (e instanceof ApiCallError && e.code === 'ENOENT') {
        ctx.err(`unknown domain '${args[0]}'\n`);
        return 1;
      }
      reportDaemonError(ctx, e);
      return 1;
    }
    return 0;
  },
};
