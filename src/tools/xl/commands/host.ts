// Listing and host commands: list, vm-list, claims, sharing, vcpu-list, vcpu-pin, info, uptime, dmesg, top.

import type { DomainSummary, VcpuSummary } from '../../daemon/protocol.js';
import { ApiCallError } from '../../daemon/client.js';
import { XlExit, commandHelp, type XlCommand, type XlContext } from '../command.js';
import {
  cpuSet, infoLines, listHeader, type ListOptions, listRow, sharingHeader, sharingRow, topScreen, uptimeHeader, uptimeRow, vcpuListHeader,
  vcpuListRow, vmListHeader, vmListRow, type TopSample,
} from '../format.js';
import { parseCpuSet } from '../cfg.js';
import { ERROR_DOMAIN_NOTFOUND, findDomain, rcOf, reportDaemonError } from './common.js';

async function hostInfo(ctx: XlContext): Promise<Record<string, string | number>> {
  return (await ctx.client()).call('host.info', {});
}

function num(v: string | number | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

/** The daemon's domains in domid order (Domain-0, the daemon itself, first). */
async function domains(ctx: XlContext): Promise<DomainSummary[]> {
  const l = await (await ctx.client()).call('domain.list', {});
  return l.sort((a, b) => a.domid - b.domid);
}

/** Domains named on the command line, in that order; an unknown one ends the command as xl does. */
async function selected(ctx: XlContext, args: string[]): Promise<DomainSummary[]> {
  const all = await domains(ctx);
  const out: DomainSummary[] = [];
  for (const a of args) {
    const domid = await findDomain(ctx, a);
    const d = all.find((x) => x.domid === domid);
    if (!d) {
      ctx.err(`Error: Domain '${a}' does not exist.\n`);
      throw new XlExit(1);
    }
    out.push(d);
  }
  return out;
}

export const list: XlCommand = {
  name: 'list',
  desc: 'List information about all/some domains',
  usage: '[options] [Domain]\n',
  help: [
    '-l, --long              Output all VM details (the stored configurations, as JSON)',
    '-v, --verbose           Prints out UUIDs and security context',
    '-Z, --context           Prints out security context',
    '-c, --cpupool           Prints the cpupool the domain is in',
    '-n, --numa              Prints out NUMA node affinity',
  ].join('\n'),
  options: {
    long: { type: 'boolean', short: 'l' },
    verbose: { type: 'boolean', short: 'v' },
    context: { type: 'boolean', short: 'Z' },
    cpupool: { type: 'boolean', short: 'c' },
    numa: { type: 'boolean', short: 'n' },
  },
  async run(ctx, v, args) {
    const doms = args.length ? await selected(ctx, args) : await domains(ctx);
    if (v['long']) {
      // libxl prints each domain's stored configuration; Domain-0 has none
      const c = await ctx.client();
      const out: { domid: number; config: unknown; xenode_accel: string }[] = [];
      for (const d of doms) {
        if (d.domid === 0) continue;
        try {
          const r = await c.call('domain.config', { dom: d.domid });
          // beside libxl's fields: which CPU runs it (KVM, the software CPU, or both)
          out.push({ domid: d.domid, config: r.config, xenode_accel: r.summary.accel });
        } catch { /* gone meanwhile: skipped, as libxl does */ }
      }
      ctx.out(`${JSON.stringify(out, null, 4)}\n`);
      return 0;
    }
    const opts: ListOptions = { verbose: v['verbose'] === true, context: v['context'] === true, cpupool: v['cpupool'] === true };
    if (v['numa']) opts.numaNodes = num((await hostInfo(ctx))['nr_nodes']) ?? 1;
    ctx.out(`${listHeader(opts)}\n`);
    for (const d of doms) ctx.out(`${listRow(d, opts)}\n`);
    return 0;
  },
};

export const vmList: XlCommand = {
  name: 'vm-list',
  desc: 'List guest domains, excluding dom0, stubdoms, etc.',
  usage: '',
  async run(ctx) {
    // libxl_list_vm: every domain but stub domains (xenode has none), Domain-0 included despite the description
    ctx.out(`${vmListHeader()}\n`);
    for (const d of await domains(ctx)) ctx.out(`${vmListRow(d)}\n`);
    return 0;
  },
};

export const claims: XlCommand = {
  name: 'claims',
  desc: 'List outstanding claim information about all domains',
  usage: '',
  async run(ctx) {
    // claim_mode is xl.conf's, on by default, and xenode reads no xl.conf: no "not enabled" warning
    const opts: ListOptions = { claim: true };
    ctx.out(`${listHeader(opts)}\n`);
    for (const d of await domains(ctx)) ctx.out(`${listRow(d, opts)}\n`);
    return 0;
  },
};

export const sharing: XlCommand = {
  name: 'sharing',
  desc: 'Get information about page sharing',
  usage: '[Domain]',
  async run(ctx, _v, args) {
    if (args.length > 1) {
      ctx.out(commandHelp(sharing)); // xl's help("sharing")
      return 1;
    }
    const doms = args.length ? await selected(ctx, args) : await domains(ctx);
    ctx.out(`${sharingHeader()}\n`);
    for (const d of doms) ctx.out(`${sharingRow(d)}\n`);
    return 0;
  },
};

export const vcpuList: XlCommand = {
  name: 'vcpu-list',
  desc: 'List the VCPUs for all/some domains',
  usage: '[Domain, ...]',
  async run(ctx, _v, args) {
    const c = await ctx.client();
    const nrCpus = num((await hostInfo(ctx))['nr_cpus']) ?? 0;
    const rows: VcpuSummary[] = [];
    if (args.length === 0) {
      rows.push(...await c.call('vcpu.list', {}));
    } else {
      for (const a of args) {
        const domid = await findDomain(ctx, a);
        try {
          rows.push(...await c.call('vcpu.list', { dom: domid }));
        } catch (e) {
          // libxl_list_vcpu fails and xl prints no row for it, going on with the rest
          if (!(e instanceof ApiCallError && e.code === 'ENOENT')) throw e;
          reportDaemonError(ctx, e);
        }
      }
    }
    ctx.out(`${vcpuListHeader()}\n`);
    for (const r of rows) ctx.out(`${vcpuListRow(r, nrCpus)}\n`);
    return 0;
  },
};

export const vcpuPin: XlCommand = {
  name: 'vcpu-pin',
  canDryrun: true,
  modifies: true,
  desc: 'Set which CPUs a VCPU can use',
  usage: '<Domain> <VCPU|all> <Hard affinity|-|all> <Soft affinity|-|all>',
  minArgs: 3,
  async run(ctx, _v, args) {
    const [dom, vcpuArg, hardArg, softArg] = args as [string, string, string, string | undefined];
    const domid = await findDomain(ctx, dom);
    let vcpu: number | 'all';
    if (/^[0-9]+$/.test(vcpuArg)) vcpu = Number(vcpuArg);
    else if (vcpuArg === 'all') vcpu = 'all';
    else {
      ctx.err(`Error: Invalid argument ${vcpuArg} as VCPU.\n`);
      return 1;
    }
    const c = await ctx.client();
    const nrCpus = num((await hostInfo(ctx))['nr_cpus']) ?? 0;
    let hard: number[] | null | undefined, soft: number[] | null | undefined;
    try {
      hard = hardArg === '-' ? undefined : parseCpuSet(hardArg, nrCpus);
      soft = softArg === undefined || softArg === '-' ? undefined : parseCpuSet(softArg, nrCpus);
    } catch (e) {
      ctx.err(`${(e as Error).message}\n`);
      return 1;
    }
    if (ctx.global.dryRun) {
      // -N: the parsed maps, nothing set
      ctx.out(`cpumap: ${hard === undefined ? '-' : cpuSet(hard, nrCpus)}${soft === undefined ? '' : ` ${cpuSet(soft, nrCpus)}`}\n`);
      return 0;
    }
    try {
      // "-" leaves the hard affinity as it is: the API always takes one, so
      // each vCPU's current hard affinity is sent back unchanged.
      if (hard === undefined) {
        const cur = (await c.call('vcpu.list', { dom: domid })).filter((x) => vcpu === 'all' || x.vcpu === vcpu);
        if (cur.length === 0) throw new Error(`no vCPU ${vcpu}`);
        for (const x of cur) await c.call('vcpu.pin', { dom: domid, vcpu: x.vcpu, hard: x.hard, ...(soft !== undefined ? { soft } : {}) });
      } else {
        await c.call('vcpu.pin', { dom: domid, vcpu, hard, ...(soft !== undefined ? { soft } : {}) });
      }
    } catch (e) {
      if (e instanceof Error && !('code' in e)) ctx.err(`xl: ${e.message}\n`);
      else reportDaemonError(ctx, e);
      ctx.err(vcpu === 'all' ? 'Could not set affinity.\n' : `Could not set affinity for vcpu \`${vcpu}'.\n`);
      return 1;
    }
    return 0;
  },
};

/**
 * xl vcpu-set (xl_vcpu.c vcpuset): strtoul of the count, the overcommit
 * check against the host's CPUs unless -i, then libxl_set_vcpuonline, which
 * for PV and PVH domains writes cpu/N/availability for the guest to act on.
 */
export const vcpuSet: XlCommand = {
  name: 'vcpu-set',
  modifies: true,
  desc: 'Set the number of active VCPUs allowed for the domain',
  usage: '[option] <Domain> <vCPUs>',
  help: "-i, --ignore-host  Don't limit the vCPU based on the host CPU count",
  options: { 'ignore-host': { type: 'boolean', short: 'i' } },
  minArgs: 2,
  async run(ctx, v, args) {
    const domid = await findDomain(ctx, args[0]!);
    const m = /^\s*([+-]?)(\d+)/.exec(args[1]!);
    if (!m) {
      ctx.err('Error: Invalid argument.\n');
      return 1;
    }
    // strtoul into an unsigned int: a minus sign negates modulo 2^64, then the value is truncated
    let n = BigInt(m[2]!);
    if (m[1] === '-') n = -n;
    const maxVcpus = Number(BigInt.asUintN(32, n));
    const c = await ctx.client();
    if (v['ignore-host'] !== true) {
      let online: number;
      try {
        online = (await c.call('domain.list', {})).find((d) => d.domid === domid)?.onlineVcpus ?? -1;
      } catch (e) {
        reportDaemonError(ctx, e);
        return 1;
      }
      if (online < 0) {
        ctx.err(`Domain ${domid} does not exist.\n`);
        return 1;
      }
      const hostCpus = num((await hostInfo(ctx))['nr_cpus']) ?? 0;
      if (maxVcpus > online && maxVcpus > hostCpus) {
        ctx.err(`You are overcommmitting! You have ${hostCpus} physical CPUs and want ${maxVcpus} vCPUs! Aborting, use --ignore-host to continue\n`);
        return 1;
      }
    }
    try {
      await c.call('domain.vcpuSet', { dom: domid, online: maxVcpus });
    } catch (e) {
      if (rcOf(e) === ERROR_DOMAIN_NOTFOUND) {
        ctx.err(`Domain ${domid} does not exist.\n`);
        return 1;
      }
      reportDaemonError(ctx, e);
      ctx.err(`libxl_set_vcpuonline failed domid=${domid} max_vcpus=${maxVcpus}, rc: ${rcOf(e)}\n`);
      return 1;
    }
    return 0;
  },
};

export const info: XlCommand = {
  name: 'info',
  desc: 'Get information about Xen host',
  usage: '-n, --numa         List host NUMA topology information',
  options: { numa: { type: 'boolean', short: 'n' } },
  async run(ctx, v, args) {
    const numa = v['numa'] === true;
    // with -n an argument selects nothing, as in xl
    for (const l of infoLines(await hostInfo(ctx), numa ? undefined : args[0], numa)) ctx.out(`${l}\n`);
    return 0;
  },
};

export const dmesg: XlCommand = {
  name: 'dmesg',
  desc: 'Read and/or clear dmesg buffer',
  usage: '[-c]',
  help: '  -c                        Clear dmesg buffer as well as printing it',
  options: { clear: { type: 'boolean', short: 'c' } },
  async run(ctx, v) {
    const { text } = await (await ctx.client()).call('host.dmesg', { clear: v['clear'] === true });
    ctx.out(text);
    return 0;
  },
};

/**
 * Uptime of each domain from the daemon's clock: host.info's daemon_uptime
 * (seconds since the daemon started) less the domain's startTime (ns since
 * the same start). Domain-0, the daemon itself, started at 0.
 */
export const uptime: XlCommand = {
  name: 'uptime',
  desc: 'Print uptime for all/some domains',
  usage: '[-s] [Domain]',
  options: { short: { type: 'boolean', short: 's' } },
  async run(ctx, v, args) {
    const short = v['short'] === true;
    const hi = await hostInfo(ctx);
    const daemonUp = num(hi['daemon_uptime']);
    if (daemonUp === undefined) {
      ctx.err('xl: the daemon does not report its uptime (host.info daemon_uptime); cannot compute uptimes\n');
      return 1;
    }
    const all = await domains(ctx);
    // a named domain that is not there is left out, as libxl_vm_get_start_time's failure makes xl do
    const doms = args.length ? (await Promise.all(args.map((a) => findDomain(ctx, a)))).flatMap((id) => all.filter((d) => d.domid === id)) : all;
    const now = new Date();
    if (!short) ctx.out(`${uptimeHeader()}\n`);
    for (const d of doms) ctx.out(`${uptimeRow(d.name, d.domid, daemonUp - d.startTime / 1e9, short, now)}\n`);
    return 0;
  },
};

export const top: XlCommand = {
  name: 'top',
  desc: 'Monitor a host and the domains in real time',
  usage: '[-b] [-i ITERATIONS] [-d SECONDS]',
  help: [
    '-b, --batch             output in batch mode (no screen control, no keys)',
    '-i, --iterations=N      number of screens before exiting',
    '-d, --delay=SECONDS     seconds between updates (default 1)',
  ].join('\n'),
  options: {
    batch: { type: 'boolean', short: 'b' },
    iterations: { type: 'string', short: 'i' },
    delay: { type: 'string', short: 'd' },
  },
  async run(ctx, v) {
    const batch = v['batch'] === true;
    const iterations = v['iterations'] === undefined ? Infinity : Number(v['iterations']);
    const delay = v['delay'] === undefined ? 1 : Number(v['delay']);
    if (!(iterations >= 1) || (iterations !== Infinity && !Number.isInteger(iterations))) {
      ctx.err(`xl top: -i wants a whole number >= 1, got '${String(v['iterations'])}'\n`);
      return 2;
    }
    if (!(delay > 0)) {
      ctx.err(`xl top: -d wants a number of seconds > 0, got '${String(v['delay'])}'\n`);
      return 2;
    }
    const c = await ctx.client();
    const interactive = !batch && process.stdin.isTTY === true && process.stdout.isTTY === true;
    let quit = false;
    let wake: (() => void) | null = null;
    const onKey = (b: Buffer): void => {
      if (b.includes(0x71) || b.includes(0x51) || b.includes(0x03) || b.includes(0x1b)) { quit = true; wake?.(); }
    };
    if (interactive) {
      process.stdin.setRawMode(true);
      process.stdin.on('data', onKey);
      process.stdin.resume();
    }
    try {
      let prev: TopSample | null = null;
      for (let i = 0; i < iterations && !quit; i++) {
        const [doms, hi] = await Promise.all([c.call('domain.list', {}), c.call('host.info', {})]);
        const cur: TopSample = { at: Date.now(), domains: doms.sort((a, b) => a.domid - b.domid) };
        const total = num(hi['total_memory']), free = num(hi['free_memory']);
        const lines = topScreen(cur, prev, {
          ...(total !== undefined ? { totalMemKiB: total * 1024 } : {}),
          ...(free !== undefined ? { freeMemKiB: free * 1024 } : {}),
          ...(num(hi['nr_cpus']) !== undefined ? { nrCpus: num(hi['nr_cpus'])! } : {}),
          ...(hi['cpu_mhz'] !== undefined ? { cpuMhz: String(hi['cpu_mhz']) } : {}),
          ...(hi['xen_version'] !== undefined ? { version: String(hi['xen_version']) } : {}),
        }, new Date());
        ctx.out(interactive ? `\x1b[H\x1b[2J${lines.join('\r\n')}\r\n` : `${lines.join('\n')}\n`);
        prev = cur;
        if (i + 1 < iterations && !quit) {
          await new Promise<void>((r) => { wake = r; setTimeout(r, delay * 1000); });
          wake = null;
        }
      }
    } finally {
      if (interactive) {
        process.stdin.off('data', onKey);
        process.stdin.setRawMode(false);
        process.stdin.pause();
      }
    }
    return 0;
  },
};

