// The local APIC model as a guest uses it: the `lapic` sample checks the xAPIC
// page, self-IPIs, TPR, EOI, the LVT timer in its three modes, x2APIC and the
// event-channel upcall delivered through HVMOP_set_evtchn_upcall_vector's
// vector (guests/samples/lapic.c).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needsKvm } from '../kvm/testing.js';
import { guest, verdict, xenodeRun } from '../testing/xenode.js';

test('the lapic guest passes every local APIC check and powers off', needsKvm(), async () => {
  const r = await xenodeRun([guest('lapic')], { timeoutMs: 60_000 });
  const v = verdict(r);
  assert.deepEqual(v.fails, []);
  assert.ok(v.passed >= 48, `ran ${v.passed} checks`);
  for (const c of ['self-ipi-delivered', 'tpr-passes-class-6', 'tpr-holds-class-4', 'tpr-held-stays-in-irr', 'oneshot-not-early', 'tsc-deadline-fired', 'x2apic-self-ipi', 'upcall-in-service-in-handler']) {
    assert.match(r.stdout, new RegExp(`PASS ${c}\\b`));
  }
  assert.equal(r.code, 0, r.stderr);
});
