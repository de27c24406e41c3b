// Runs the grant sample pair the way a toolstack wires a frontend and a
// backend: the granter is created first, the backend second with
// peer=<granter>, then the control domain writes the backend's domid into the
// granter's ~/data/peer. Used by the grant test and bench/grant.ts.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Toolstack } from '../tools/toolstack.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const GRANT_ELF = path.join(root, 'guests/build/grant.elf');

export interface GrantPair {
  granter: { domid: number; output: string; reason: number };
  backend: { domid: number; output: string; reason: number };
  /** the pCPU worker each domain's vCPU 0 was placed on */
  pcpus: { granter: number; backend: number };
  /** the backend's `grant: bench` figures (ns per operation), with bench=N */
  bench: { copy4kNs: number; mapUnmapNs: number; n: number } | null;
}

/** Boots the granter then the backend on a running toolstack and waits for both to shut down. */
export async function runGrantPair(ts: Toolstack, o: { bench?: number; timeoutMs?: number } = {}): Promise<GrantPair> {
  const kernel = readFileSync(GRANT_ELF);
  const text = new Map<number, string>();
  // where each vCPU 0 runs, sampled while the guests print (placed once a worker adopts it)
  const placed = new Map<number, number>();
  const append = (domid: number, s: string) => {
    text.set(domid, (text.get(domid) ?? '') + s);
    const p = ts.hv.vcpus(domid)[0]?.pcpu ?? -1;
    if (p >= 0) placed.set(domid, p);
  };
  const reasons = new Map<number, number>();
  let settle: (() => void) | null = null;
  const onConsole = (domid: number, _src: string, s: string, eol: boolean) => append(domid, eol ? s + '\n' : s);
  const onShutdown = (domid: number, reason: number) => { reasons.set(domid, reason); settle?.(); };
  ts.hv.on('console', onConsole);
  ts.hv.on('shutdown', onShutdown);
  const created: number[] = [];
  try {
    let gid = -1;
    const g = await ts.create({ name: `granter-${Date.now()}`, kernel, memoryMiB: 8, vcpus: 1, cmdline: 'role=granter' }, (b) => append(gid, Buffer.from(b).toString('latin1')));
    gid = g.domid;
    created.push(gid);
    let bid = -1;
    const b = await ts.create({ name: `backend-${Date.now()}`, kernel, memoryMiB: 8, vcpus: 1, cmdline: `role=backend peer=${gid}${o.bench ? ` bench=${o.bench}` : ''}` },
      (x) => append(bid, Buffer.from(x).toString('latin1')));
    bid = b.domid;
    created.push(bid);
    await ts.client.write(`/local/domain/${gid}/data/peer`, String(bid));
    const ms = o.timeoutMs ?? 120_000;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the grant pair did not finish in ${ms} ms\ngranter: ${text.get(gid) ?? ''}\nbackend: ${text.get(bid) ?? ''}`)), ms);
      settle = () => {
        if (reasons.has(gid) && reasons.has(bid)) { clearTimeout(timer); resolve(); }
      };
      settle();
    });
    const out = text.get(bid) ?? '';
    const m = /grant: bench copy_4k_ns=(\d+) map_unmap_ns=(\d+) n=(\d+)/.exec(out);
    return {
      granter: { domid: gid, output: text.get(gid) ?? '', reason: reasons.get(gid)! },
      backend: { domid: bid, output: out, reason: reasons.get(bid)! },
      pcpus: { granter: placed.get(gid) ?? -1, backend: placed.get(bid) ?? -1 },
      bench: m ? { copy4kNs: Number(m[1]), mapUnmapNs: Number(m[2]), n: Number(m[3]) } : null,
    };
  } finally {
    ts.hv.off('console', onConsole);
    ts.hv.off('shutdown', onShutdown);
    for (const id of created) await ts.destroy(id).catch(() => {});
  }
}
