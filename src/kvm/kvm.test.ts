import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { Kvm, EXIT, EXIT_INTERRUPTED, KvmError } from './kvm.js';
import { SharedMemory } from './memory.js';
import { RUN, RUN_IO, REG, KVM_XEN_HVM_CONFIG } from './abi.js';
import { needsKvm, flat32AtPage1, kvmUnavailableReason } from './testing.js';
import { within } from '../testing/wait.js';

/** A VM with 64 KiB of RAM at GPA 0 running `code` in flat 32-bit protected mode at 0x1000. */
function tinyVm(code: number[]) {
  const kvm = Kvm.open();
  const vm = kvm.createVm();
  const mem = SharedMemory.create('test-ram', 0x10000);
  vm.setUserMemoryRegion(0, 0, mem.size, mem.address);
  mem.bytes.set(code, 0x1000);
  const vcpu = vm.createVcpu(0);
  flat32AtPage1(kvm, vcpu);
  const done = () => { vcpu.close(); vm.close(); mem.close(); kvm.close(); };
  return { kvm, vm, mem, vcpu, done };
}

test('opening a missing device names the problem', () => {
  assert.throws(() => Kvm.open('/dev/no-such-kvm'), (e: unknown) => e instanceof KvmError && /does not exist/.test(e.message));
});

test('a 32-bit guest writes to port 0xE9 and its registers come back through the sync area', needsKvm(), () => {
  // mov al,'X'; out 0xe9,al; mov eax,0x1234; out 0x88,eax; hlt
  const t = tinyVm([0xb0, 0x58, 0xe6, 0xe9, 0xb8, 0x34, 0x12, 0, 0, 0xe7, 0x88, 0xf4]);
  try {
    assert.equal(t.vcpu.enter(), EXIT.IO);
    const io = RUN.exit;
    assert.equal(t.vcpu.runPage.getUint16(io + RUN_IO.port, true), 0xe9);
    const off = Number(t.vcpu.runPage.getBigUint64(io + RUN_IO.data_offset, true));
    assert.equal(t.vcpu.runBytes[off], 0x58);
    assert.equal(t.vcpu.enter(), EXIT.IO);
    assert.equal(t.vcpu.runPage.getUint16(io + RUN_IO.port, true), 0x88);
    assert.equal(t.vcpu.reg(REG.rax) & 0xffffffffn, 0x1234n);
    assert.equal(t.vcpu.cpl, 0);
    // a register written back through the sync area reaches the guest
    t.vcpu.setReg(REG.rax, 0n);
    assert.equal(t.vcpu.enter(), EXIT.HLT);
    assert.equal(t.vcpu.reg(REG.rax), 0n);
  } finally {
    t.done();
  }
});

test('a kick from another thread interrupts KVM_RUN without a JS signal handler', needsKvm(), async () => {
  // The guest spins at CPL0 forever (jmp $); only a kick can end KVM_RUN.
  const url = new URL('./kick.fixture.js', import.meta.url);
  const w = new Worker(url);
  const msg = await within('the kicked worker reporting KVM_RUN\'s return', new Promise<{ ok: boolean; reason: number; kicks: number; error?: string }>((resolve, reject) => {
    w.on('message', (m: { tid?: number } & Record<string, unknown>) => {
      if (typeof m.tid === 'number') {
        // the worker is about to enter the guest; kick it after a short while
        setTimeout(async () => {
          const { kick } = await import('./kick.js');
          kick({ pid: process.pid, tid: m.tid! });
        }, 50);
      } else resolve(m as never);
    });
    w.on('error', reject);
  })).finally(() => w.terminate());
  assert.equal(msg.error, undefined);
  assert.equal(msg.reason, EXIT_INTERRUPTED);
  assert.equal(msg.kicks, 1, 'the pending kick was consumed exactly once');
});

/** KVM_CAP_XEN_HVM's flags here; its VMCALL intercept is what the next test needs. */
function xenInterceptSkip(): { skip: string | false } {
  const r = kvmUnavailableReason();
  if (r) return { skip: `needs /dev/kvm: ${r}` };
  const k = Kvm.open();
  const flags = k.checkExtension('XEN_HVM');
  k.close();
  if (flags & KVM_XEN_HVM_CONFIG.INTERCEPT_HCALL) return { skip: false };
  process.stderr.write('\n*** SKIPPING the KVM_EXIT_XEN test: this host\'s KVM has no KVM_CAP_XEN_HVM intercept (VMCALL hypercalls run in the software CPU here) ***\n\n');
  return { skip: 'this host\'s KVM offers no KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL' };
}

test('with the Xen intercept, VMCALL exits as a hypercall with RIP past it; the result goes back in RAX', xenInterceptSkip(), () => {
  // mov eax, 0x1234; vmcall; out 0x88, al; hlt
  const t = tinyVm([0xb8, 0x34, 0x12, 0, 0, 0x0f, 0x01, 0xc1, 0xe6, 0x88, 0xf4]);
  try {
    t.vm.setXenHvmConfig(KVM_XEN_HVM_CONFIG.INTERCEPT_HCALL);
    const x = t.vcpu.run();
    assert.equal(x.kind, 'hypercall');
    assert.equal(t.vcpu.rip, 0x1008n);
    assert.equal(t.vcpu.reg(REG.rax), 0x1234n, 'RAX still the call number');
    t.vcpu.setReg(REG.rax, 0x55n);
    assert.equal(t.vcpu.run().kind, 'io');
    assert.equal(t.vcpu.reg(REG.rax), 0x55n, 'the result, and the guest went on from after the VMCALL');
    assert.equal(t.vcpu.rip, 0x100an);
  } finally {
    t.done();
  }
});
