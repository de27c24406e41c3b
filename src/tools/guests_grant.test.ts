// The grant sample pair through the toolstack, on the software CPU and on
// /dev/kvm: a granter grants a page to a backend on another pCPU worker,
// which copies from and into it (GNTTABOP_copy), maps it into its own
// physmap (GNTTABOP_map_grant_ref), writes through the mapping and unmaps;
// the granter sees each of these in its page and in the entry's
// GTF_reading/GTF_writing, and can revoke the grant only once it is unmapped.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Toolstack } from './toolstack.js';
import { needsTcg } from '../testing/accel.js';
import { needsKvm } from '../kvm/testing.js';
import { runGrantPair } from '../testing/grant.js';

for (const accel of ['tcg', 'kvm'] as const) {
  test(`grant copy and map between two domains on different pCPU workers (${accel === 'tcg' ? 'software CPU' : 'KVM'})`, accel === 'tcg' ? needsTcg() : needsKvm(), async () => {
    const ts = await Toolstack.start({ pcpus: 2, accel, log: () => {} });
    try {
      const r = await runGrantPair(ts);
      assert.doesNotMatch(r.backend.output, /^FAIL/m, r.backend.output);
      assert.doesNotMatch(r.granter.output, /^FAIL/m, r.granter.output);
      for (const name of ['backend-copy-from-grant', 'backend-copy-across-page-end-bad_copy_arg', 'backend-copy-into-readonly-grant-general_error',
        'backend-reads-the-pattern-through-the-mapping', 'backend-writable-map-of-readonly-grant-general_error', 'backend-unmap-again-bad_handle']) {
        assert.match(r.backend.output, new RegExp(`^PASS ${name}$`, 'm'));
      }
      for (const name of ['granter-sees-the-copy', 'granter-sees-the-write-through-the-mapping', 'granter-entry-in-use-while-mapped',
        'granter-cannot-revoke-while-mapped', 'granter-revokes-after-unmap']) {
        assert.match(r.granter.output, new RegExp(`^PASS ${name}$`, 'm'));
      }
      assert.ok(r.pcpus.granter >= 0 && r.pcpus.backend >= 0 && r.pcpus.granter !== r.pcpus.backend, `the pair runs on different workers (${JSON.stringify(r.pcpus)})`);
      assert.equal(r.granter.reason, 0, 'the granter powered off');
      assert.equal(r.backend.reason, 0, 'the backend powered off');
    } finally {
      await ts.shutdown();
    }
  });
}
