// The VM pool: VMs made ahead on a helper thread, each with the recipe applied
// (capabilities, MSR filter), handed over by take(), made on the spot when
// none is ready, and closed with the pool.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Kvm, EXIT } from './kvm.js';
import { SharedMemory } from './memory.js';
import { RUN, RUN_MSR, KVM_MSR_EXIT_REASON_FILTER, KVM_MSR_FILTER_READ, KVM_MSR_FILTER_WRITE } from './abi.js';
import { needsKvm, flat32AtPage1 } from './testing.js';
import { until } from '../testing/wait.js';
import { VmPool, type VmRecipe } from './vm_pool.js';

const TRAPPED_MSR = 0x40000000;
const recipe: VmRecipe = {
  caps: [{ cap: 'X86_USER_SPACE_MSR', args: [KVM_MSR_EXIT_REASON_FILTER] }],
  msrFilter: [{ flags: KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE, base: TRAPPED_MSR, nmsrs: 1, bitmap: new Uint8Array(1) }],
};
const openFds = () => fs.readdirSync('/proc/self/fd').length;


test('a VM from the pool comes with the recipe applied: the filtered MSR exits to user space', needsKvm(), async () => {
  const kvm = Kvm.open();
  const pool = new VmPool(kvm, recipe, 2);
  try {
    await until('the pool filling to 2 ready VMs', () => pool.readyCount === 2);
    const vm = pool.take();
    const mem = SharedMemory.create('pool-ram', 0x10000);
    try {
      vm.setUserMemoryRegion(0, 0, mem.size, mem.address);
      mem.bytes.set([0xb9, 0x00, 0x00, 0x00, 0x40, 0x0f, 0x32, 0xf4], 0x1000); // mov ecx,0x40000000; rdmsr; hlt
      const vcpu = vm.createVcpu(0);
      flat32AtPage1(kvm, vcpu);
      assert.equal(vcpu.enter(), EXIT.X86_RDMSR);
      assert.equal(vcpu.runPage.getUint32(RUN.exit + RUN_MSR.index, true), TRAPPED_MSR);
      assert.equal(vcpu.runPage.getUint32(RUN.exit + RUN_MSR.reason, true), KVM_MSR_EXIT_REASON_FILTER);
      vcpu.close();
    } finally {
      vm.close();
      mem.close();
    }
    // the one taken is replaced
    await until('the pool filling to 2 ready VMs', () => pool.readyCount === 2);
  } finally {
    await pool.close();
    kvm.close();
  }
});

test('an empty pool makes the VM on the spot; closing the pool closes the VMs nobody took', needsKvm(), async () => {
  const kvm = Kvm.open();
  const before = openFds();
  const none = new VmPool(kvm, recipe, 0);
  const vm = none.take();
  assert.ok(vm.fd > 0);
  vm.close();
  await none.close();
  const pool = new VmPool(kvm, recipe, 3);
  await until('the pool filling to 3 ready VMs', () => pool.readyCount === 3);
  assert.ok(openFds() >= before + 3);
  await pool.close();
  assert.equal(pool.readyCount, 0);
  assert.equal(openFds(), before, 'every pooled VM closed');
  kvm.close();
});
