// Domain lifecycle commands: destroy, shutdown, reboot, pause, unpause,
// rename, domid, domname. Messages and exit statuses follow xl's
// (tools/xl/xl_vmcontrol.c, xl_misc.c, xl_info.c).

import type { DomainChange, DomainSummary } from '../../daemon/protocol.js';
import { XlExit, type XlCommand, type XlContext } from '../command.js';
import { ApiCallError } from '../../daemon/client.js';
import { ERROR_NOPARAVIRT, findDomain, rcOf, reportDaemonError } from './common.js';

async function destroyDomain(ctx: XlContext, domid: number, force: boolean): Promise<void> {
  if (domid === 0 && !force) {
    ctx.err('Not destroying domain 0; use -f to force.\nThis can only be done when using a disaggregated hardware domain and toolstack.\n\n');
    throw new XlExit(1);
  }
  try {
    await (await ctx.client()).call('domain.destroy', { dom: domid });
  } catch (e) {
    reportDaemonError(ctx, e);
    ctx.err(`destroy failed (rc=${rcOf(e)})\n`);
    throw new XlExit(1);
  }
}

export const destroy: XlCommand = {
  name: 'destroy',
  modifies: true,
  desc: 'Terminate a domain immediately',
  usage: '[options] <Domain>',
  help: '-f                      Permit destroying domain 0 (refused by xenode: domain 0 is the daemon itself).',
  options: { force: { type: 'boolean', short: 'f' } },
  minArgs: 1,
  async run(ctx, v, args) {
    const domid = await findDomain(ctx, args[0]!);
    await destroyDomain(ctx, domid, v['force'] === true);
    return 0;
  },
};

/** How long `-F` lets a guest act on control/shutdown before the daemon destroys it. */
const FORCE_TIMEOUT_MS = 10_000;

function shutdownOrReboot(reboot: boolean): XlCommand {
  const what = reboot ? 'reboot' : 'shutdown';
  return {
    name: what,
    modifies: true,
    desc: reboot ? 'Issue a reboot signal to a domain' : 'Issue a shutdown signal to a domain',
    usage: '[options] <-a|Domain>',
    help: [
      `-a, --all               ${reboot ? 'Reboot' : 'Shutdown'} all guest domains.`,
      '-h                      Print this help.',
      '-F                      Force it: at once if the guest has no PV control interface (xl sends',
      `                        an ACPI event there), else if it has not acted within ${FORCE_TIMEOUT_MS / 1000} s.`,
      `-w, --wait              Wait for guest(s) to ${what}; twice, until each is destroyed.`,
    ].join('\n'),
    options: {
      all: { type: 'boolean', short: 'a' },
      wait: { type: 'boolean', short: 'w', multiple: true },
      F: { type: 'boolean', short: 'F' },
    },
    async run(ctx, v, args) {
      const all = v['all'] === true;
      // -w waits for each domain to shut down; -w -w goes on to its death (xl counts them)
      const wait = Array.isArray(v['wait']) ? v['wait'].length : v['wait'] === true ? 1 : 0;
      const force = v['F'] === true;
      if (args.length === 0 && !all) {
        ctx.err('You must specify -a or a domain id.\n\n');
        return 1;
      }
      const c = await ctx.client();
      const targets = all
        ? (await c.call('domain.list', {})).filter((d) => d.domid !== 0).map((d) => d.domid)
        : [await findDomain(ctx, args[0]!)];
      // subscribed before the first request, so no shutdown or death is missed
      const events: DomainChange[] = [];
      let wake: (() => void) | null = null;
      const sub = wait ? await c.subscribe((ch) => { events.push(ch); wake?.(); }) : undefined;
      try {
        // one domain after the other, and the first failure ends the command, as in xl
        for (const domid of targets) {
          ctx.err(`${reboot ? 'Rebooting' : 'Shutting down'} domain ${domid}\n`);
          try {
            await c.call('domain.shutdown', { dom: domid, reboot, ...(force ? { force, timeoutMs: FORCE_TIMEOUT_MS } : {}) });
          } catch (e) {
            if (e instanceof ApiCallError && e.code === 'EOPNOTSUPP') {
              // the guest never set control/feature-poweroff (-reboot): libxl's ERROR_NOPARAVIRT
              ctx.err(`PV control interface not available: external graceful ${what} not possible.\n`);
              ctx.err('Use "-F" to force it (xenode has no ACPI event to fall back to).\n');
              ctx.err(`${what} failed (rc=${ERROR_NOPARAVIRT})\n`);
            } else {
              reportDaemonError(ctx, e);
              ctx.err(`${what} failed (rc=${rcOf(e)})\n`);
            }
            return 1;
          }
        }
        if (!sub) return 0;
        ctx.err(`Waiting for ${targets.length} domains\n`);
        // a domain already shut down before the request reports that at once, as libxl's death watch does
        const waiting = new Set(targets);
        for (const d of await c.call('domain.list', {})) {
          if (waiting.has(d.domid) && d.shutdown) events.unshift({ domid: d.domid, name: d.name, what: 'shutdown', reason: d.shutdownReason });
        }
        while (waiting.size > 0) {
          const ev = events.shift();
          if (!ev) {
            await new Promise<void>((r) => { wake = r; });
            wake = null;
            continue;
          }
          if (!waiting.has(ev.domid)) continue;
          if (ev.what === 'destroyed') {
            ctx.err(`Domain ${ev.domid} has been destroyed\n`);
            waiting.delete(ev.domid);
          } else if (ev.what === 'shutdown') {
            ctx.err(`Domain ${ev.domid} has been shut down, reason code ${ev.reason ?? -1}\n`);
            if (wait === 1) waiting.delete(ev.domid);
            else ctx.err(`Domain ${ev.domid} continue waiting for death\n`);
          }
        }
        return 0;
      } finally {
        await sub?.close().catch(() => {});
      }
    },
  };
}

export const shutdown = shutdownOrReboot(false);
export const reboot = shutdownOrReboot(true);

function pauseOrUnpause(pause: boolean): XlCommand {
  return {
    name: pause ? 'pause' : 'unpause',
    modifies: true,
    desc: pause ? 'Pause execution of a domain' : 'Unpause a paused domain',
    usage: '<Domain>',
    minArgs: 1,
    async run(ctx, _v, args) {
      const domid = await findDomain(ctx, args[0]!);
      try {
        await (await ctx.client()).call(pause ? 'domain.pause' : 'domain.unpause', { dom: domid });
      } catch (e) {
        // xl ignores libxl's failure here (libxl logs it); we report it and say so in the status
        reportDaemonError(ctx, e);
        return 1;
      }
      return 0;
    },
  };
}

export const pause = pauseOrUnpause(true);
export const unpause = pauseOrUnpause(false);

export const rename: XlCommand = {
  name: 'rename',
  modifies: true,
  desc: 'Rename a domain',
  usage: '<Domain> <NewDomainName>',
  minArgs: 2,
  async run(ctx, _v, args) {
    const domid = await findDomain(ctx, args[0]!);
    try {
      await (await ctx.client()).call('domain.rename', { dom: domid, name: args[1]! });
    } catch (e) {
      reportDaemonError(ctx, e);
      ctx.err(`Can't rename domain '${args[0]!}'.\n`);
      return 1;
    }
    return 0;
  },
};

async function listAll(ctx: XlContext): Promise<DomainSummary[]> {
  return (await ctx.client()).call('domain.list', {});
}

export const domid: XlCommand = {
  name: 'domid',
  desc: 'Convert a domain name to domain id',
  usage: '<DomainName>',
  minArgs: 1,
  async run(ctx, _v, args) {
    const d = (await listAll(ctx)).find((x) => x.name === args[0]);
    if (!d) {
      ctx.err(`Can't get domid of domain name '${args[0]!}', maybe this domain does not exist.\n`);
      return 1;
    }
    ctx.out(`${d.domid}\n`);
    return 0;
  },
};

export const domname: XlCommand = {
  name: 'domname',
  desc: 'Convert a domain id to domain name',
  usage: '<DomainId>',
  minArgs: 1,
  async run(ctx, _v, args) {
    // strtol semantics: leading digits count, no digits at all is an error
    const m = /^\s*[+-]?[0-9]+/.exec(args[0]!);
    if (!m) {
      ctx.err('Invalid domain id.\n\n');
      return 1;
    }
    const id = Number(m[0]) >>> 0;
    const d = (await listAll(ctx)).find((x) => x.domid === id);
    if (!d) {
      ctx.err(`Can't get domain name of domain id '${id}', maybe this domain does not exist.\n`);
      return 1;
    }
    ctx.out(`${d.name}\n`);
    return 0;
  },
};

