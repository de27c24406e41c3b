// One vCPU on KVM and the software CPU (hybrid.ts) over one guest memory: an
// instruction this host's KVM cannot emulate is run by the software CPU and
// the vCPU goes on in KVM; with the kernel in the software CPU, CPL 3 code
// runs in KVM and a fault there brings the vCPU back at its CPL 0 handler.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Kvm } from '../kvm/kvm.js';
import { SharedMemory } from '../kvm/memory.js';
import { TcgVm } from '../tcg/vm.js';
import { TcgVcpu } from '../tcg/vcpu.js';
import { TcgKicker } from '../tcg/kicker.js';
import { needsKvm } from '../kvm/testing.js';
import { needsTcg } from '../testing/accel.js';
import { HybridVcpu } from './hybrid.js';
import { REG, type Segment, type VcpuExit } from './vcpu.js';

const both = { skip: needsKvm().skip || needsTcg().skip };
/** PVM: guest CPL 0 code runs in KVM's instruction emulator, which cannot run x87 FNOP. */
const pvm = fs.existsSync('/sys/module/kvm_pvm');

let kicker: TcgKicker | null = null;
after(() => kicker?.close());

const MEM = 2 << 20;

function rig(kernelInSoftware: boolean, entryBreakpoints = false) {
  const kvm = Kvm.open();
  const vm = kvm.createVm();
  const mem = SharedMemory.create('hybrid-test', MEM);
  vm.setUserMemoryRegion(0, 0, MEM, mem.address);
  const tvm = new TcgVm(1_000_000);
  tvm.setUserMemoryRegion(0, 0, MEM, mem.address);
  kicker ??= new TcgKicker();
  const io: VcpuExit['io'][] = [];
  const k = vm.createVcpu(0);
  const t = new TcgVcpu(0, tvm, { kicker, besideKvm: true, exitPorts: [0x88], msrExits: () => false, onMmio: () => {}, onIo: (x) => { io.push({ ...x }); return x.port === 0x88; } });
  // identity-mapped guest memory: a linear address is its offset
  const readKernel = (_s: unknown, va: bigint, n: number) => (va + BigInt(n) <= BigInt(MEM) ? mem.bytes.slice(Number(va), Number(va) + n) : null);
  const h = new HybridVcpu(k, t, { kernelInSoftware, readKernel: entryBreakpoints ? readKernel : undefined });
  h.setCpuid(kvm.supportedCpuid());
  const dv = new DataView(mem.bytes.buffer, mem.bytes.byteOffset, MEM);
  return { h, k, mem, dv, done: () => { h.close(); vm.close(); mem.close(); kvm.close(); } };
}

const flat = (type: number, selector: number, dpl = 0): Segment => ({ base: 0, limit: 0xffffffff, selector, type, present: 1, dpl, db: 1, s: 1, l: 0, g: 1 });

/**
 * Long mode, identity-mapped 2 MiB (user-accessible), GDT at 0x3000 with
 * kernel code/data 0x08/0x10, user data/code 0x18/0x20, a TSS at 0x28 (RSP0
 * 0x9000); IDT at 0x4000 with #UD (6) to 0x2000; code at 0x1000.
 */
function long64(r: ReturnType<typeof rig>, code: number[], handler: number[], user: number[] = []): void {
  const { dv, mem } = r;
  dv.setBigUint64(0x10000, 0x11007n, true);
  dv.setBigUint64(0x11000, 0x12007n, true);
  dv.setBigUint64(0x12000, 0x87n, true);
  dv.setBigUint64(0x3008, 0x00af9b000000ffffn, true);
  dv.setBigUint64(0x3010, 0x00cf93000000ffffn, true);
  dv.setBigUint64(0x3018, 0x00cff3000000ffffn, true);
  dv.setBigUint64(0x3020, 0x00affb000000ffffn, true);
  // 64-bit TSS at 0x5000, limit 0x67, type 9 (available)
  dv.setBigUint64(0x3028, 0x0000890050000067n, true);
  dv.setBigUint64(0x3030, 0n, true);
  dv.setBigUint64(0x5004, 0x9000n, true);
  const gate = 0x4000 + 6 * 16;
  dv.setUint32(gate, (0x2000 & 0xffff) | (8 << 16), true);
  dv.setUint32(gate + 4, 0x8e00, true);
  r.h.setInitialState({
    regs: { rip: 0x1000n, rsp: 0x8000n },
    segs: {
      cs: { ...flat(0xb, 8), db: 0, l: 1 }, ds: flat(3, 0x10), es: flat(3, 0x10), ss: flat(3, 0x10), fs: flat(3, 0x10), gs: flat(3, 0x10),
      tr: { base: 0x5000, limit: 0x67, selector: 0x28, type: 0xb, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0 },
    },
    gdt: { base: 0x3000, limit: 0x37 }, idt: { base: 0x4000, limit: 0xfff },
    cr0: 0x80050033, cr3: 0x10000, cr4: 0x6a0, efer: 0x500,
  });
  mem.bytes.set(code, 0x1000);
  mem.bytes.set(handler, 0x2000);
  mem.bytes.set(user, 0x1100);
}

// fnop; mov eax,0x1234; out 0x88,eax; hlt
const FNOP_THEN_OUT = [0xd9, 0xd0, 0xb8, 0x34, 0x12, 0, 0, 0xe7, 0x88, 0xf4];

test('an instruction KVM cannot emulate runs in the software CPU and the vCPU goes on in KVM', both, () => {
  const r = rig(false);
  try {
    long64(r, FNOP_THEN_OUT, []);
    const x = r.h.run();
    assert.equal(x.kind, 'io', x.detail);
    assert.equal(x.io.port, 0x88);
    assert.equal(r.h.reg(REG.rax) & 0xffffffffn, 0x1234n);
    assert.equal(r.h.stats.fallbacks, pvm ? 1 : 0, "this host's KVM could not run FNOP at CPL 0 (PVM) or ran it itself");
    // the software CPU gives the vCPU back at the end of the instruction's block at the latest (here the
    // block ends with the OUT, whose exit it reports), and the rest runs in KVM
    assert.equal(r.h.run().kind, 'hlt');
    assert.equal(r.h.accel, 'kvm', 'back in KVM');
  } finally {
    r.done();
  }
});

test("the same instruction alone in KVM is the host's failure, reported as such", { skip: both.skip || (!pvm && 'FNOP at CPL 0 is emulated only by PVM') }, () => {
  const r = rig(false);
  try {
    long64(r, FNOP_THEN_OUT, []);
    const x = r.k.run();
    assert.equal(x.kind, 'failure');
    assert.equal(x.hostLimitation, true);
    assert.match(x.detail, /limitation of this host's KVM/);
    assert.equal(r.k.rip, 0x1000n, 'stopped at the FNOP');
  } finally {
    r.done();
  }
});

test('with the kernel in the software CPU, CPL 3 runs in KVM and its #UD brings the vCPU to the handler', both, () => {
  const r = rig(true);
  try {
    // ring 0: push ss 0x1b, rsp 0x7000, rflags 0x2, cs 0x23, rip 0x1100; iretq
    const enter = [0x6a, 0x1b, 0x68, 0x00, 0x70, 0, 0, 0x6a, 0x02, 0x6a, 0x23, 0x68, 0x00, 0x11, 0, 0, 0x48, 0xcf];
    // ring 3: mov ecx,200000; dec ecx; jnz -4; ud2
    const user = [0xb9, 0x40, 0x0d, 0x03, 0x00, 0xff, 0xc9, 0x75, 0xfc, 0x0f, 0x0b];
    // handler: fnop; mov eax,[rsp] (the #UD's RIP); out 0x88,eax; hlt
    const handler = [0xd9, 0xd0, 0x8b, 0x04, 0x24, 0xe7, 0x88, 0xf4];
    long64(r, enter, handler, user);
    const x = r.h.run();
    assert.equal(x.kind, 'io', x.detail);
    assert.equal(x.io.port, 0x88);
    assert.equal(r.h.reg(REG.rax) & 0xffffffffn, 0x1109n, 'the #UD frame names the UD2');
    assert.equal(r.h.reg(REG.rcx) & 0xffffffffn, 0n, 'the CPL 3 loop ran to its end');
    assert.equal(r.h.accel, 'tcg', 'the handler runs in the software CPU');
    assert.equal(r.h.cpl, 0);
    assert.ok(r.h.stats.toKvm >= 1, 'CPL 3 ran in KVM');
    assert.equal(r.dv.getBigUint64(0x9000 - 32, true), 0x23n, 'the frame has the user CS');
  } finally {
    r.done();
  }
});

test('with breakpoints on the kernel entry points, KVM stops at the #UD gate and the handler runs in the software CPU from its first instruction', both, () => {
  const r = rig(true, true);
  try {
    // ring 0: push ss 0x1b, rsp 0x7000, rflags 0x2, cs 0x23, rip 0x1100; iretq
    const enter = [0x6a, 0x1b, 0x68, 0x00, 0x70, 0, 0, 0x6a, 0x02, 0x6a, 0x23, 0x68, 0x00, 0x11, 0, 0, 0x48, 0xcf];
    // ring 3: mov ecx,200000; dec ecx; jnz -4; ud2
    const user = [0xb9, 0x40, 0x0d, 0x03, 0x00, 0xff, 0xc9, 0x75, 0xfc, 0x0f, 0x0b];
    // handler: fnop; mov eax,[rsp] (the #UD's RIP); out 0x88,eax; hlt
    const handler = [0xd9, 0xd0, 0x8b, 0x04, 0x24, 0xe7, 0x88, 0xf4];
    long64(r, enter, handler, user);
    const x = r.h.run();
    assert.equal(x.kind, 'io', x.detail);
    assert.equal(x.io.port, 0x88);
    assert.equal(r.h.reg(REG.rax) & 0xffffffffn, 0x1109n, 'the #UD frame names the UD2');
    assert.equal(r.h.reg(REG.rcx) & 0xffffffffn, 0n, 'the CPL 3 loop ran to its end');
    assert.equal(r.h.accel, 'tcg', 'the handler runs in the software CPU');
    assert.equal(r.h.cpl, 0);
    assert.ok(r.h.stats.toKvm >= 1, 'CPL 3 ran in KVM');
    assert.equal(r.dv.getBigUint64(0x9000 - 32, true), 0x23n, 'the frame has the user CS');
    assert.equal(r.h.stats.atEntry, 1, 'KVM stopped at the #UD gate');
    assert.equal(r.h.stats.fallbacks, 0, 'so KVM never met the FNOP');
  } finally {
    r.done();
  }
});
