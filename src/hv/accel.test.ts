// The CPU choice says whether guests' VMCALL/VMMCALL hypercalls can reach
// xenode on this host's KVM (KVM_CAP_XEN_HVM's hypercall intercept), as the
// host's own KVM reports it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseAccel, xenHypercallIntercept } from './accel.js';
import { KVM_XEN_HVM_CONFIG } from '../kvm/abi.js';
import { Kvm } from '../kvm/kvm.js';
import { needsKvm } from '../kvm/testing.js';

test('KVM_CAP_XEN_HVM flags: only INTERCEPT_HCALL means VMCALL/VMMCALL exit to user space', () => {
  assert.equal(xenHypercallIntercept(0), false);
  assert.equal(xenHypercallIntercept(KVM_XEN_HVM_CONFIG.HYPERCALL_MSR), false);
  assert.equal(xenHypercallIntercept(KVM_XEN_HVM_CONFIG.HYPERCALL_MSR | KVM_XEN_HVM_CONFIG.INTERCEPT_HCALL), true);
  assert.equal(xenHypercallIntercept(0x3f), true);
});

test('the choice reports what this host\'s KVM offers, and says so when KVM runs guests', needsKvm(), () => {
  const k = Kvm.open();
  let flags: number;
  try {
    flags = k.checkExtension('XEN_HVM');
  } finally {
    k.close();
  }
  const c = chooseAccel('kvm');
  assert.equal(c.kvmXenHypercalls, xenHypercallIntercept(flags));
  assert.match(c.why, c.kvmXenHypercalls ? /KVM offers the Xen intercept/ : /do not reach xenode on this KVM \(no KVM_CAP_XEN_HVM intercept\)/);
  process.stderr.write(`KVM_CAP_XEN_HVM here: 0x${flags.toString(16)}\n`);
});
