// Worker used by kvm.test.ts: runs a spinning guest until kicked.
import { parentPort } from 'node:worker_threads';
import { Kvm, Segment } from './kvm.js';
import { SharedMemory } from './memory.js';
import { prepareVcpuThread, consumeKick } from './kick.js';

const flat32 = (type: number, selector: number): Segment => ({ base: 0, limit: 0xffffffff, selector, type, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1 });
try {
  const { runMask, target } = prepareVcpuThread();
  const kvm = Kvm.open();
  const vm = kvm.createVm();
  const mem = SharedMemory.create('kick-ram', 0x10000);
  vm.setUserMemoryRegion(0, 0, mem.size, mem.address);
  mem.bytes.set([0xeb, 0xfe], 0x1000); // jmp $
  const vcpu = vm.createVcpu(0);
  vcpu.setCpuid(kvm.supportedCpuid());
  vcpu.setInitialState({
    regs: { rip: 0x1000n },
    segs: { cs: flat32(11, 8), ds: flat32(3, 16), ss: flat32(3, 16), tr: { base: 0, limit: 0x67, selector: 0, type: 11, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0 } },
    cr0: 0x11, cr4: 0, efer: 0,
  });
  vcpu.setSignalMask(runMask);
  parentPort!.postMessage({ tid: target.tid });
  const reason = vcpu.enter();
  let kicks = 0;
  while (consumeKick()) kicks++;
  parentPort!.postMessage({ ok: true, reason, kicks });
} catch (e) {
  parentPort!.postMessage({ ok: false, reason: 0, kicks: 0, error: String(e) });
}
