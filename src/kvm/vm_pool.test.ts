// The VM pool: VMs made ahead on a helper thread, each with the recipe applied
// (capabilities, MSR filter), handed over by take(), made on the spot when
// none is ready, and closed with the pool.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Kvm, EXIT, type Segment } from './kvm.js';
import { SharedMemory } from './memory.js';
import { RUN, RUN_MSR, KVM_MSR_EXIT_REASON_FILTER, KVM_MSR_FILTER_READ, KVM_MSR_FILTER_WRITE } from './abi.js';
import { needsKvm } from './testing.js';
import { VmPool, type VmRecipe } from './vm_pool.js';

const TRAPPED_MSR = 0x40000000;
const recipe: VmRecipe = {
  caps: [{ cap: 'X86_USER_SPACE_MSR', args: [KVM_MSR_EXIT_REASON_FILTER] }],
  msrFilter: [{ flags: KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE, base: TRAPPED_MSR, nmsrs: 1, bitmap: new Uint8Array(1) }],
};
const flat32 = (type: number, selector: number): Segment => ({ base: 0, limit: 0xffffffff, selector, type, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1 });
const openFds = () => fs.readdirSync('/proc/self/fd').length;

async function until(f: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !f(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(f(), 'timed out');
}

test('a VM from the pool comes with the recipe applied: the filtered MSR exits to user space', needsKvm(), async () => {
  const kvm = Kvm.open();
  const pool = new VmPool(kvm, recipe, 2);
  try {
    await until(() => pool.readyCount === 2);
    const vm = pool.take();
    const mem = SharedMemory.create('pool-ram', 0x10000);
    try {
      vm.setUserMemoryRegion(0, 0, mem.size, mem.address);
      mem.bytes.set([0xb9, 0x00, 0x00, 0x00, 0x40, 0x0f, 0x32, 0xf4], 0x1000); // mov ecx,0x40000000; rdmsr; hlt
      const vcpu = vm.createVcpu(0);
      vcpu.setCpuid(kvm.supportedCpuid());
      vcpu.setInitialState({
        regs: { rip: 0x1000n, rsp: 0x8000n },
        segs: { cs: flat32(11, 8), ds: flat32(3, 16), es: flat32(3, 16), ss: flat32(3, 16), fs: flat32(3, 16), gs: flat32(3, 16),
          tr: { base: 0, limit: 0x67, selector: 0, type: 11, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0 } },
        cr0: 0x11, cr4: 0, efer: 0,
      });
      assert.equal(vcpu.enter(), EXIT.X86_RDMSR);
      assert.equal(vcpu.run.getUint32(RUN.exit + RUN_MSR.index, true), TRAPPED_MSR);
      assert.equal(vcpu.run.getUint32(RUN.exit + RUN_MSR.reason, true), KVM_MSR_EXIT_REASON_FILTER);
      vcpu.close();
    } finally {
      vm.close();
      mem.close();
    }
    // the one taken is replaced
    await until(() => pool.readyCount === 2);
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
  await until(() => pool.readyCount === 3);
  assert.ok(openFds() >= before + 3);
  await pool.close();
  assert.equal(pool.readyCount, 0);
  assert.equal(openFds(), before, 'every pooled VM closed');
  kvm.close();
});
