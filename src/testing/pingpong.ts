// Runs the pingpong sample pair the way a toolstack wires a frontend and a
// backend: pong is created first, ping second with peer=<pong>, then the
// control domain writes ping's domid into pong's ~/data/peer; pong publishes
// its port, ping binds to it. Used by the pingpong test and bench/evtchn.ts.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Toolstack } from '../tools/toolstack.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const PINGPONG_ELF = path.join(root, 'guests/build/pingpong.elf');

export interface PingPongOptions {
  n: number;
  /** hlt (default), block or poll: how both sides wait for an event */
  wait?: string;
  memoryMiB?: number;
  timeoutMs?: number;
}

export interface DomainEnd {
  domid: number;
  /** everything the guest printed (console_io and the PV console) */
  output: string;
  /** SHUTDOWN_* reason */
  reason: number;
}

export interface PingPongResult {
  ping: DomainEnd;
  pong: DomainEnd;
  /** ping's `rtt_us` figures (µs), if it printed them */
  rtt: Record<string, number> | null;
  /** the pCPU worker each domain's vCPU 0 was placed on */
  pcpus: { ping: number; pong: number };
}

/** The `key=value` numbers of ping's rtt line. */
export function parseRtt(output: string): Record<string, number> | null {
  const m = /pingpong: ping rtt_us (.*)/.exec(output);
  if (!m) return null;
  const out: Record<string, number> = {};
  for (const kv of m[1]!.trim().split(/\s+/)) {
    const [k, v] = kv.split('=');
    if (k && v !== undefined) out[k] = Number(v);
  }
  return out;
}

/** Boots pong then ping on a running toolstack and waits for both to shut down. */
export async function runPingPong(ts: Toolstack, o: PingPongOptions): Promise<PingPongResult> {
  const kernel = readFileSync(PINGPONG_ELF);
  const wait = o.wait ?? 'hlt';
  const memoryMiB = o.memoryMiB ?? 8;
  const text = new Map<number, string>();
  // Where each vCPU 0 runs, sampled while the guest prints (it is placed once a worker adopts it).
  const placed = new Map<number, number>();
  const append = (domid: number, s: string) => {
    text.set(domid, (text.get(domid) ?? '') + s);
    const pcpu = ts.hv.vcpus(domid)[0]?.pcpu ?? -1;
    if (pcpu >= 0) placed.set(domid, pcpu);
  };
  const reasons = new Map<number, number>();
  let settle: (() => void) | null = null;
  const onConsole = (domid: number, _src: string, s: string, eol: boolean) => append(domid, eol ? s + '\n' : s);
  const onShutdown = (domid: number, reason: number) => {
    reasons.set(domid, reason);
    settle?.();
  };
  ts.hv.on('console', onConsole);
  ts.hv.on('shutdown', onShutdown);
  const created: number[] = [];
  try {
    let pongId = -1;
    const pong = await ts.create({ name: `pong-${Date.now()}`, kernel, memoryMiB, vcpus: 1, cmdline: `role=pong n=${o.n} wait=${wait}` },
      (b) => append(pongId, Buffer.from(b).toString('latin1')));
    pongId = pong.domid;
    created.push(pong.domid);
    let pingId = -1;
    const ping = await ts.create({ name: `ping-${Date.now()}`, kernel, memoryMiB, vcpus: 1, cmdline: `role=ping n=${o.n} peer=${pong.domid} wait=${wait}` },
      (b) => append(pingId, Buffer.from(b).toString('latin1')));
    pingId = ping.domid;
    created.push(ping.domid);
    // The toolstack introduces the peers to each other (pong learns ping's domid).
    await ts.client.write(`/local/domain/${pong.domid}/data/peer`, String(ping.domid));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`pingpong did not finish in ${o.timeoutMs ?? 60_000} ms\nping: ${text.get(ping.domid) ?? ''}\npong: ${text.get(pong.domid) ?? ''}`)), o.timeoutMs ?? 60_000);
      settle = () => {
        if (reasons.has(ping.domid) && reasons.has(pong.domid)) {
          clearTimeout(timer);
          resolve();
        }
      };
      settle();
    });
    const end = (domid: number): DomainEnd => ({ domid, output: text.get(domid) ?? '', reason: reasons.get(domid)! });
    const pingEnd = end(ping.domid);
    const pcpus = { ping: placed.get(ping.domid) ?? -1, pong: placed.get(pong.domid) ?? -1 };
    return { ping: pingEnd, pong: end(pong.domid), rtt: parseRtt(pingEnd.output), pcpus };
  } finally {
    ts.hv.off('console', onConsole);
    ts.hv.off('shutdown', onShutdown);
    for (const id of created) await ts.destroy(id).catch(() => {});
  }
}
