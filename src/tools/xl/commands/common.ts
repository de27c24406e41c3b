// Helpers the xl commands share: resolving a domain argument the way xl's
// find_domain does, and reporting a daemon error.

import { ApiCallError } from '../../daemon/client.js';
import { SocketClient } from '../../xenstored/client.js';
import { XlExit, type GlobalOptions, type XlContext } from '../command.js';

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
 * libxl_domain_qualifier_to_domid's reading of all digits: strtoul, so a
 * value past ULONG_MAX saturates, then truncated to the uint32_t domid.
 */
export function qualifierDomid(p: string): number {
  const n = BigInt(p);
  const ulongMax = (1n << 64n) - 1n;
  return Number((n > ulongMax ? ulongMax : n) & 0xffffffffn);
}

/**
 * xl's find_domain: all digits are a domain id taken as it is, without
 * asking whether such a domain exists (libxl_domain_qualifier_to_domid), so
 * each command meets a missing id in its own way; anything else is a name,
 * and an unknown name prints "<p> is an invalid domain identifier (rc=-6)"
 * (libxl_name_to_domid's ERROR_INVAL) and exits 1.
 */
export async function findDomain(ctx: XlContext, p: string): Promise<number> {
  if (isDomid(p)) return qualifierDomid(p);
  const c = await ctx.client();
  try {
    return (await c.call('domain.resolve', { dom: p })).domid;
  } catch (e) {
    if (e instanceof ApiCallError && e.code === 'ENOENT') {
      ctx.err(`${p} is an invalid domain identifier (rc=${ERROR_INVAL})\n`);
      throw new XlExit(1);
    }
    throw e;
  }
}

/** -T: the date and pid xentoollog's stdiostream logger puts before each line (XTL_STDIOSTREAM_SHOW_DATE | SHOW_PID). */
export function logPrefix(g: GlobalOptions, now = new Date()): string {
  if (!g.timestamps) return '';
  const p = (n: number) => String(n).padStart(2, '0');
  const tz = new Intl.DateTimeFormat('en-US', { timeZoneName: 'short' }).formatToParts(now).find((x) => x.type === 'timeZoneName')?.value ?? 'UTC';
  return `${now.getFullYear()}-${p(now.getMonth() + 1)}-${p(now.getDate())} ${p(now.getHours())}:${p(now.getMinutes())}:${p(now.getSeconds())} ${tz} [${process.pid}] `;
}

/** Prints the daemon's reason for a failure (xl shows libxl's log line in the same place). */
export function reportDaemonError(ctx: XlContext, e: unknown): void {
  if (e instanceof ApiCallError) ctx.err(`${logPrefix(ctx.global)}xl: ${e.message}\n`);
  else throw e;
}

/** A frontend node's number as libxl's *_getinfo reads it: -1 when it is not there or not a number. */
export const nodeNumber = (v: string | undefined): number => (v !== undefined && /^\d+$/.test(v) ? Number(v) : -1);

/**
 * The frame of xl's block-list and network-list: `header`, then for each
 * domain named each device of `kind` (its frontend directory under
 * /local/domain/<domid>/device/<kind>, by number) as `line` reads it from the
 * daemon's xenstore. A name that is not a domain is said and skipped, as xl's
 * libxl_domain_qualifier_to_domid failure is; a domid is taken as it is.
 */
export async function listDevices(ctx: XlContext, args: string[], kind: string, header: string,
  line: (read: (node: string) => Promise<string | undefined>, domid: number, devid: number) => Promise<string>): Promise<number> {
  const c = await ctx.client();
  const { path } = await c.call('xenstore.socket', {});
  const xs = await SocketClient.connect(path);
  try {
    ctx.out(`${header}\n`);
    for (const a of args) {
      let domid: number;
      if (isDomid(a)) domid = qualifierDomid(a);
      else {
        try {
          domid = (await c.call('domain.resolve', { dom: a })).domid;
        } catch (e) {
          if (!(e instanceof ApiCallError && e.code === 'ENOENT')) throw e;
          ctx.err(`${a} is an invalid domain identifier\n`);
          continue;
        }
      }
      const dir = `/local/domain/${domid}/device/${kind}`;
      const devs = (await xs.directory(dir).catch(() => [] as string[])).filter((x) => /^\d+$/.test(x)).map(Number).sort((x, y) => x - y);
      for (const dev of devs) ctx.out(`${await line((node) => xs.tryRead(`${dir}/${dev}/${node}`), domid, dev)}\n`);
    }
  } finally {
    xs.close();
  }
  return 0;
}
