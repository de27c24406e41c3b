// Helpers the xl commands share: resolving a domain argument the way xl's
// find_domain does, and reporting a daemon error.

import { ApiCallError } from '../../daemon/client.js';
import { XlExit, type XlContext } from '../command.js';

/** libxl's error numbers xl prints in "(rc=N)" (libxl_types.idl / _libxl_types.h: ERROR_FAIL, ERROR_INVAL, ERROR_NOPARAVIRT, ERROR_DOMAIN_NOTFOUND). */
export const ERROR_FAIL = -3;
export const ERROR_INVAL = -6;
export const ERROR_NOPARAVIRT = -10;
export const ERROR_DOMAIN_NOTFOUND = -21;

/** What xl's libxl_domain_qualifier_to_domid treats as a domain id: all digits. */
export function isDomid(s: string): boolean {
  return /^[0-9]+$/.test(s);
}

/** The libxl-style rc for a daemon error code. */
export function rcOf(e: unknown): number {
  if (e instanceof ApiCallError) {
    if (e.code === 'ENOENT') return ERROR_DOMAIN_NOTFOUND;
    if (e.code === 'EINVAL' || e.code === 'EEXIST') return ERROR_INVAL;
  }
  return ERROR_FAIL;
}

/**
 * xl's find_domain: a name or a domain id to {domid, name}. An unknown one
 * prints "<p> is an invalid domain identifier (rc=N)" and exits 1 (rc -6 for
 * a name as libxl_name_to_domid reports, -21 for an id).
 */
export async function findDomain(ctx: XlContext, p: string): Promise<{ domid: number; name: string }> {
  const c = await ctx.client();
  try {
    return await c.call('domain.resolve', { dom: isDomid(p) ? Number(p) : p });
  } catch (e) {
    if (e instanceof ApiCallError && e.code === 'ENOENT') {
      ctx.err(`${p} is an invalid domain identifier (rc=${isDomid(p) ? ERROR_DOMAIN_NOTFOUND : ERROR_INVAL})\n`);
      throw new XlExit(1);
    }
    throw e;
  }
}

/** Prints the daemon's reason for a failure (xl shows libxl's log line in the same place). */
export function reportDaemonError(ctx: XlContext, e: unknown): void {
  if (e instanceof ApiCallError) ctx.err(`xl: ${e.message}\n`);
  else throw e;
}
