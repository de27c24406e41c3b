// The grant sample pair through the toolstack, on the software CPU (and on
// /dev/kvm where it runs guests): a granter grants a page to a backend on
// another pCPU worker, which copies from and into it (GNTTABOP_copy), maps it
// into its own physmap (GNTTABOP_map_grant_ref), writes through the mapping
// and unmaps; the granter sees each of these in its page and in the entry's
// GTF_reading/GTF_writing, and can revoke the grant only once it is unmapped.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Toolstack } from './toolstack.js';
import { needsTcg } from '../testing/accel.js';
import { kvmUnavailableReason } from '../kvm/testing.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const GRANT_ELF = path.join(root, 'guests/build/grant.elf');

async function runPair(accel: 'tcg' | 'kvm'): Promise<{ granter: string; backend: string; reasons: Map<number, number>; pcpus: number[] }> {
  const ts = await Toolstack.start({ pcpus: 2, accel, log: () => {} });
  const text = new Map<number, string>();
  const reasons = new Map<number, number>();
  const pcpus: number[] = [];
  // where each vCPU 0 runs, sampled while the guests print (placed once a worker adopts it)
  const placed = new Map<number, number>();
  const append = (domid: number, s: string) => {
    text.set(domid, (text.get(domid) ?? '') + s);
    const p = ts.hv.vcpus(domid)[0]?.pcpu ?? -1;
    if (p >= 0) placed.set(domid, p);
  };
  let settle: (() => void) | null = null;
  ts.hv.on('console', (domid, _src, s, eol) => append(domid, eol ? s + '\n' : s));
  ts.hv.on('shutdown', (domid, reason) => { reasons.set(domid, reason); settle?.(); });
  try {
    const kernel = readFileSync(GRANT_ELF);
    let gid = -1;
    const g = await ts.create({ name: `granter-${Date.now()}`, kernel, memoryMiB: 8, vcpus: 1, cmdline: 'role=granter' }, (b) => append(gid, Buffer.from(b).toString('latin1')));
    gid = g.domid;
    let bid = -1;
    const b = await ts.create({ name: `backend-${Date.now()}`, kernel, memoryMiB: 8, vcpus: 1, cmdline: `role=backend peer=${g.domid}` }, (x) => append(bid, Buffer.from(x).toString('latin1')));
    bid = b.domid;
    await ts.client.write(`/local/domain/${g.domid}/data/peer`, String(b.domid));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the grant pair did not finish\ngranter: ${text.get(gid) ?? ''}\nbackend: ${text.get(bid) ?? ''}`)), 120_000);
      settle = () => {
        if (reasons.has(gid) && reasons.has(bid)) { clearTimeout(timer); resolve(); }
      };
      settle();
    });
    pcpus.push(placed.get(gid) ?? -1, placed.get(bid) ?? -1);
    return { granter: text.get(gid) ?? '', backend: text.get(bid) ?? '', reasons: new Map([[0, reasons.get(gid)!], [1, reasons.get(bid)!]]), pcpus };
  } finally {
    await ts.shutdown();
  }
}

function check(r: Awaited<ReturnType<typeof runPair>>): void {
  assert.doesNotMatch(r.backend, /^FAIL/m, r.backend);
  assert.doesNotMatch(r.granter, /^FAIL/m, r.granter);
  for (const name of ['backend-copy-from-grant', 'backend-copy-across-page-end-bad_copy_arg', 'backend-copy-into-readonly-grant-general_error',
    'backend-reads-the-pattern-through-the-mapping', 'backend-writable-map-of-readonly-grant-general_error', 'backend-unmap-again-bad_handle']) {
    assert.match(r.backend, new RegExp(`^PASS ${name}$`, 'm'));
  }
  for (const name of ['granter-sees-the-copy', 'granter-sees-the-write-through-the-mapping', 'granter-entry-in-use-while-mapped',
    'granter-cannot-revoke-while-mapped', 'granter-revokes-after-unmap']) {
    assert.match(r.granter, new RegExp(`^PASS ${name}$`, 'm'));
  }
  assert.ok(r.pcpus[0]! >= 0 && r.pcpus[1]! >= 0 && r.pcpus[0] !== r.pcpus[1], `the pair runs on different workers (${r.pcpus.join(', ')})`);
  assert.equal(r.reasons.get(0), 0, 'the granter powered off');
  assert.equal(r.reasons.get(1), 0, 'the backend powered off');
}

test('grant copy and map between two domains on different pCPU workers (software CPU)', needsTcg(), async () => {
  check(await runPair('tcg'));
});

test('grant copy and map between two domains on different pCPU workers (KVM)', { skip: kvmUnavailableReason() ?? false }, async () => {
  check(await runPair('kvm'));
});
