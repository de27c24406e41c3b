// `xenode arinc653`: reads or sets a cpupool's ARINC 653 schedule through the
// daemon (the API's sched.arinc653, libxc's xc_sched_arinc653_schedule_set
// and _get; Xen's xl has no command for it).

import { parseArgs } from 'node:util';
import { ApiCallError, DaemonClient, defaultSocketPath } from './daemon/client.js';

const USAGE = `usage: xenode arinc653 [--socket PATH] [--pool POOL] [MAJOR_MS DOMAIN[:VCPU]=MS ...]

Without a schedule, prints the pool's (Pool-0 by default). With one, sets it:
the major frame in ms, then the minor frames in order, each a domain (name or
id), optionally its vCPU (default 0), and its runtime in ms; at most 64, their
total within the major frame. Every pCPU of the pool starts the new schedule's
first major frame together.

  xenode arinc653 20 guest1=5 guest2:0=3 guest1=2 guest3=6`;

const ms = (s: string, what: string): number => {
  const n = Number(s);
  if (!Number.isFinite(n) || n <= 0) throw new RangeError(`${what} must be a positive number of ms, not '${s}'`);
  return Math.round(n * 1000);
};

export async function main(argv: string[]): Promise<number> {
  let values, positionals;
  let set: { majorFrameUs: number; entries: { dom: string | number; vcpu: number; runtimeUs: number }[] } | undefined;
  try {
    ({ values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { socket: { type: 'string' }, pool: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
    if (values.help) { console.log(USAGE); return 0; }
    if (positionals.length) {
      set = {
        majorFrameUs: ms(positionals[0]!, 'the major frame'),
        entries: positionals.slice(1).map((p) => {
          const m = /^([^:=]+)(?::(\d+))?=(.+)$/.exec(p);
          if (!m) throw new RangeError(`'${p}' is not DOMAIN[:VCPU]=MS`);
          return { dom: /^\d+$/.test(m[1]!) ? Number(m[1]) : m[1]!, vcpu: Number(m[2] ?? 0), runtimeUs: ms(m[3]!, `${m[1]}'s minor frame`) };
        }),
      };
    }
  } catch (e) {
    console.error(`xenode arinc653: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const c = await DaemonClient.connect(values.socket ?? defaultSocketPath());
  try {
    const pool = values.pool === undefined ? undefined : /^\d+$/.test(values.pool) ? Number(values.pool) : values.pool;
    const s = await c.call('sched.arinc653', { ...(pool !== undefined ? { pool } : {}), ...(set ? { set } : {}) });
    if (!s.majorFrameUs) {
      console.log(`cpupool ${s.poolid}: no ARINC 653 schedule (nothing runs)`);
      return 0;
    }
    console.log(`cpupool ${s.poolid}: major frame ${s.majorFrameUs / 1000} ms, from ${s.epochUs / 1e6} s system time`);
    let at = 0;
    for (const e of s.entries) {
      console.log(`  ${String(at / 1000).padStart(9)} ms  ${String(e.runtimeUs / 1000).padStart(8)} ms  ${e.name || `d${e.domid}`} (${e.domid}) vCPU ${e.vcpu}`);
      at += e.runtimeUs;
    }
    if (at < s.majorFrameUs) console.log(`  ${String(at / 1000).padStart(9)} ms  ${String((s.majorFrameUs - at) / 1000).padStart(8)} ms  idle`);
    return 0;
  } catch (e) {
    if (e instanceof ApiCallError) {
      console.error(`xenode arinc653: ${e.message}`);
      return 1;
    }
    throw e;
  } finally {
    c.close();
  }
}
