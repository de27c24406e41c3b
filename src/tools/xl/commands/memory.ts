// mem-set and mem-max (xl_mem.c): a domain's balloon target and the
// hypervisor's limit on its reservation, through the daemon as libxl sets
// them (libxl_set_memory_target with enforce, libxl_domain_setmaxmem).

import type { XlCommand } from '../command.js';
import { findDomain, reportDaemonError } from './common.js';

/**
 * xl's parse_mem_size_kb: a decimal number with at most one suffix, b
 * (bytes), k, m (the default), g or t, in either case; -1 when it is not one.
 */
export function parseMemSizeKb(s: string): number {
  const m = /^\s*([+-]?\d+)([a-zA-Z]?)$/.exec(s);
  if (!m) return -1;
  let kb = BigInt(m[1]!);
  switch (m[2]!.toLowerCase()) {
    case 't': kb <<= 30n; break;
    case 'g': kb <<= 20n; break;
    case '': case 'm': kb <<= 10n; break;
    case 'k': break;
    case 'b': kb >>= 10n; break;
    default: return -1;
  }
  if (kb < 0n || kb > BigInt(Number.MAX_SAFE_INTEGER)) return -1;
  return Number(kb);
}

const SIZE_USAGE = "<Domain> <MemMB['b'[bytes]|'k'[KB]|'m'[MB]|'g'[GB]|'t'[TB]]>";

function memCommand(name: 'mem-set' | 'mem-max'): XlCommand {
  const set = name === 'mem-set';
  return {
    name,
    modifies: true,
    desc: set ? 'Set the current memory usage for a domain' : 'Set the maximum amount reservation for a domain',
    usage: SIZE_USAGE,
    minArgs: 2,
    async run(ctx, _v, args) {
      const domid = await findDomain(ctx, args[0]!);
      const mem = args[1]!;
      const kb = parseMemSizeKb(mem);
      if (kb === -1) {
        ctx.err(`invalid memory size: ${mem}\n`);
        return 1;
      }
      try {
        const c = await ctx.client();
        if (set) await c.call('domain.memset', { dom: domid, targetKiB: kb });
        else await c.call('domain.memmax', { dom: domid, maxKiB: kb });
      } catch (e) {
        reportDaemonError(ctx, e);
        ctx.err(`cannot set domid ${domid} ${set ? 'dynamic' : 'static'} max memory to : ${mem}\n`);
        return 1;
      }
      return 0;
    },
  };
}

export const memMax = memCommand('mem-max');
export const memSet = memCommand('mem-set');
