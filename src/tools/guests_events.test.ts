// The event-channel sample guests on /dev/kvm: `evtchn` checks every
// EVTCHNOP and its error cases against the headers and the upcall path
// through HVM_PARAM_CALLBACK_IRQ's vector (booted with `xenode run`).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needsKvm } from '../kvm/testing.js';
import { guest, verdict, xenodeRun as run } from '../testing/xenode.js';

for (const vcpus of [1, 2]) {
  test(`the evtchn guest passes every event-channel check (${vcpus} vCPU${vcpus > 1 ? 's' : ''})`, needsKvm(), async () => {
    const r = await run(['--vcpus', String(vcpus), guest('evtchn')]);
    const v = verdict(r);
    assert.deepEqual(v.fails, []);
    assert.equal(v.failed, 0);
    // With a second vCPU the per-vCPU rules are checked too.
    assert.ok(v.passed >= (vcpus > 1 ? 200 : 170), `ran ${v.passed} checks`);
    for (const name of ['bind_interdomain-new-local-port-pending', 'peer-reverts-to-unbound-status', 'bind_virq-global-on-vcpu1-EINVAL',
      'bind_ipi-no-such-vcpu-ENOENT', 'alloc_until-ENOSPC', 'max_evtchn_port-default-1023', 'init_control-bad-gfn-EINVAL',
      'upcall-delivered-on-sti', 'upcall-delivered-after-plain-sti', 'alloc_unbound-lowest-free', 'masked-send-no-upcall', 'unmask-redelivers-upcall', 'wait_for_event-hlt-timer-wakes',
      'wait_for_event-schedop_block-timer-wakes', 'reset-closes-every-port']) {
      assert.match(r.stdout, new RegExp(`^PASS ${name}$`, 'm'));
    }
    if (vcpus > 1) assert.match(r.stdout, /^PASS bind_vcpu-interdomain-to-vcpu1$/m);
    assert.equal(r.code, 0, 'the guest powers off when all checks pass');
  });
}
