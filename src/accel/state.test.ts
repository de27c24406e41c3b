// A vCPU's state moves between KVM and the software CPU without loss: a state
// with a distinct value in every field is loaded into one CPU, read back,
// loaded into the other and read back again, and compared field by field,
// both ways round. The x87/SSE/AVX image too.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import koffi from 'koffi';
import { Kvm, type Vcpu } from '../kvm/kvm.js';
import { TcgVm } from '../tcg/vm.js';
import { TcgVcpu } from '../tcg/vcpu.js';
import { TcgKicker } from '../tcg/kicker.js';
import { tcgSupportedCpuid } from '../tcg/cpuid.js';
import { needsKvm } from '../kvm/testing.js';
import { needsTcg } from '../testing/accel.js';
import { CPU_MSRS, XSAVE, XFEATURE, diffStates, emptyFpu, type VcpuState, type SegmentState } from './state.js';
import { REG, type AccelVcpu } from './vcpu.js';

const both = { skip: needsKvm().skip || needsTcg().skip };

let kicker: TcgKicker | null = null;
let kvm: Kvm | null = null;
after(() => { kicker?.close(); kvm?.close(); });

function kvmVcpu(): Vcpu {
  kvm ??= Kvm.open();
  const vm = kvm.createVm();
  const v = vm.createVcpu(0);
  v.setCpuid(kvm.supportedCpuid());
  return v;
}

function tcgVcpu(): TcgVcpu {
  kicker ??= new TcgKicker();
  const v = new TcgVcpu(0, new TcgVm(1_000_000), { kicker, msrExits: () => false, onIo: () => false, onMmio: () => {} });
  v.setCpuid(tcgSupportedCpuid());
  return v;
}

const seg = (selector: number, type: number, o: Partial<SegmentState> = {}): SegmentState => ({
  base: 0, limit: 0xffffffff, selector, type, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0, ...o,
});

/** A 64-bit kernel's state with something distinct in every field a CPU keeps. */
function sample(avx: boolean): VcpuState {
  const fpu = emptyFpu();
  const dv = new DataView(fpu.xsave.buffer);
  dv.setUint16(XSAVE.fcw, 0x27f, true);
  dv.setUint16(XSAVE.fsw, (5 << 11) | 0x20, true); // TOP = 5, PE
  dv.setUint8(XSAVE.ftw, 0xe0); // R5..R7 in use: ST(0)..ST(2)
  dv.setUint16(XSAVE.fop, 0x5d9, true);
  dv.setUint32(XSAVE.mxcsr, 0x1fa1, true);
  for (let i = 0; i < 3; i++) {
    // 80-bit values: mantissa with the integer bit, then sign/exponent
    dv.setBigUint64(XSAVE.st + 16 * i, 0x8000000000000000n | BigInt(0x1111 * (i + 1)), true);
    dv.setUint16(XSAVE.st + 16 * i + 8, 0x3fff + i, true);
  }
  for (let i = 0; i < 16 * 16; i++) fpu.xsave[XSAVE.xmm + i] = (i * 7 + 3) & 0xff;
  if (avx) for (let i = 0; i < 16 * 16; i++) fpu.xsave[XSAVE.ymmHi + i] = (i * 13 + 5) & 0xff;
  fpu.xcr0 = XFEATURE.x87 | XFEATURE.sse | (avx ? XFEATURE.avx : 0n);
  dv.setBigUint64(XSAVE.xstateBv, fpu.xcr0, true);
  const regs = Array.from({ length: 18 }, (_, i) => 0x1000_0000_0000n * BigInt(i + 1) + BigInt(i));
  regs[REG.rip] = 0xffffffff81001234n;
  regs[REG.rflags] = 0x293n; // IF off: the shadow and a pending interrupt are consistent with it
  const code64 = seg(0x10, 0xb, { db: 0, l: 1 });
  return {
    regs,
    segs: {
      cs: code64, ss: seg(0x18, 3), ds: seg(0x2b, 3, { dpl: 3 }), es: seg(0, 3, { present: 0, unusable: 1, base: 0, limit: 0 }),
      fs: seg(0x33, 3, { dpl: 3, base: 0x7f0012345000 }), gs: seg(0, 3, { base: 0xffff888007a00000, present: 0, unusable: 1, limit: 0 }),
      tr: seg(0x40, 0xb, { s: 0, db: 0, g: 0, base: 0xfffffe0000003000, limit: 0x4087 }),
      ldt: seg(0x50, 2, { s: 0, db: 0, g: 0, base: 0xffff888001234000, limit: 0xfff }),
    },
    gdt: { base: 0xfffffe0000001000n, limit: 0x7f },
    idt: { base: 0xfffffe0000000000n, limit: 0xfff },
    cr0: 0x80050033n, cr2: 0x7f00deadb000n, cr3: 0x1234000n, cr4: 0x406f0n | (avx ? 0n : 0n), cr8: 0n,
    efer: 0xd01n,
    dr: [0xffffffff81000000n, 0x7f0000001000n, 0x2000n, 0x3000n], dr6: 0xffff0ff1n, dr7: 0x401n,
    msrs: new Map<number, bigint>([
      [CPU_MSRS.SYSENTER_CS, 0x10n], [CPU_MSRS.SYSENTER_ESP, 0xfffffe0000004000n], [CPU_MSRS.SYSENTER_EIP, 0xffffffff81002000n],
      [CPU_MSRS.PAT, 0x0007040600070406n], [CPU_MSRS.STAR, 0x0023001000000000n], [CPU_MSRS.LSTAR, 0xffffffff81003000n],
      [CPU_MSRS.CSTAR, 0xffffffff81004000n], [CPU_MSRS.SFMASK, 0x47700n], [CPU_MSRS.KERNEL_GS_BASE, 0x7f00aa550000n], [CPU_MSRS.TSC_AUX, 3n],
    ]),
    tsc: 123_456_789_000n,
    tscNs: process.hrtime.bigint(),
    fpu,
    events: { pendingInterrupt: 0xf3, interruptShadow: true, nmiMasked: true, nmiPending: true },
  };
}

function hostHasAvx(): boolean {
  kvm ??= Kvm.open();
  const d = kvm.supportedCpuid().find((e) => e.function === 0xd && e.index === 0);
  return d !== undefined && (d.eax & 4) !== 0;
}

let tscWritable: boolean | undefined;
/** Whether this host's KVM takes a TSC written from user space (PVM has no TSC offset: its guests read the host's). */
function kvmTakesTsc(): boolean {
  if (tscWritable !== undefined) return tscWritable;
  // Two writes far apart: a host that ignores them reads its own TSC both times, which cannot be near both
  // (a freshly booted host's TSC is small, so one small value alone proves nothing).
  const v = kvmVcpu();
  try {
    v.setMsrs([{ index: 0x10, value: 1_000_000n }]);
    const low = v.getMsr(0x10);
    v.setMsrs([{ index: 0x10, value: 1n << 60n }]);
    const high = v.getMsr(0x10);
    tscWritable = low < 1_000_000n + 10_000_000_000n && high >= 1n << 60n;
  } finally {
    v.close();
  }
  if (!tscWritable) process.stderr.write('note: this host\'s KVM ignores TSC writes (PVM); a vCPU moved to KVM keeps the host\'s TSC, which only moves forward\n');
  return tscWritable;
}

/** Everything but the TSC must match; the TSC moves on, by less than a second of its clock. */
function assertSame(a: VcpuState, b: VcpuState, khz: number, what: string, to: AccelVcpu): void {
  assert.deepEqual(diffStates(a, b), [], what);
  const d = b.tsc - a.tsc;
  if (to.accel === 'kvm' && !kvmTakesTsc()) assert.ok(d >= 0n, `${what}: the TSC went back by ${-d}`);
  else assert.ok(d >= 0n && d < BigInt(khz) * 1000n, `${what}: the TSC moved by ${d} (${khz} kHz)`);
}

function roundTrip(first: AccelVcpu, second: AccelVcpu, third: AccelVcpu, avx: boolean, khz: number): void {
  first.setState(sample(avx));
  const s1 = first.getState();
  // What the first CPU keeps of the sample is the sample (up to bits a CPU sets itself).
  const want = sample(avx);
  // (The host's FPU keeps FOP only with an unmasked x87 exception pending.)
  const hostBits = first.accel === 'kvm' ? /^(fop|fip|fdp):/ : /^$/;
  assert.deepEqual(diffStates(want, s1).filter((d) => !hostBits.test(d)), [], `${first.accel} keeps the state it was given`);
  second.setState(s1);
  const s2 = second.getState();
  assertSame(s1, s2, khz, `${first.accel} -> ${second.accel}`, second);
  third.setState(s2);
  const s3 = third.getState();
  assertSame(s2, s3, khz, `${first.accel} -> ${second.accel} -> ${third.accel}`, third);
}

test('a vCPU state moves KVM -> software CPU -> KVM register by register', both, () => {
  const a = kvmVcpu();
  const b = tcgVcpu();
  const c = kvmVcpu();
  try {
    roundTrip(a, b, c, hostHasAvx(), a.tscKhz);
  } finally {
    a.close(); b.close(); c.close();
  }
});

test('a vCPU state moves software CPU -> KVM -> software CPU register by register', both, () => {
  const a = tcgVcpu();
  const b = kvmVcpu();
  const c = tcgVcpu();
  try {
    roundTrip(a, b, c, hostHasAvx(), b.tscKhz);
  } finally {
    a.close(); b.close(); c.close();
  }
});

test('the software CPU keeps the x87/SSE state guest code leaves (FXSAVE agrees with getFpu)', needsTcg(), () => {
  kicker ??= new TcgKicker();
  const MEM = 1 << 20;
  const libc = koffi.load('libc.so.6');
  const mmap = libc.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, long off)') as (a: null, l: number, p: number, f: number, fd: number, o: number) => unknown;
  const mem = mmap(null, MEM, 3, 0x22, -1, 0);
  const bytes = new Uint8Array(koffi.view(mem, MEM));
  const vm = new TcgVm(1_000_000);
  vm.setUserMemoryRegion(0, 0, MEM, koffi.address(mem));
  const v = new TcgVcpu(0, vm, { kicker, msrExits: () => false, onIo: () => false, onMmio: () => {} });
  try {
    const dv = new DataView(bytes.buffer);
    dv.setBigUint64(0x3008, 0x00cf9b000000ffffn, true);
    dv.setBigUint64(0x3010, 0x00cf93000000ffffn, true);
    const flat = (type: number, selector: number) => seg(selector, type);
    v.setInitialState({
      regs: { rip: 0x1000n, rsp: 0x8000n },
      segs: { cs: flat(0xb, 8), ds: flat(3, 0x10), es: flat(3, 0x10), ss: flat(3, 0x10), fs: flat(3, 0x10), gs: flat(3, 0x10) },
      gdt: { base: 0x3000, limit: 0x17 }, cr0: 0x11, cr4: 0x600, efer: 0,
    });
    // fld1; fldpi; mov eax,0x1f00|0xa0 -> [0x5000]; ldmxcsr [0x5000]; movd xmm3,eax;
    // fxsave [0x6000]; hlt
    bytes.set([0xd9, 0xe8, 0xd9, 0xeb, 0xb8, 0xa0, 0x1f, 0, 0, 0xa3, 0, 0x50, 0, 0, 0x0f, 0xae, 0x15, 0, 0x50, 0, 0,
      0x66, 0x0f, 0x6e, 0xd8, 0x0f, 0xae, 0x05, 0, 0x60, 0, 0, 0xf4], 0x1000);
    assert.equal(v.run().kind, 'hlt');
    const f = v.getFpu();
    const img = bytes.subarray(0x6000, 0x6000 + 512);
    const fdv = new DataView(f.xsave.buffer);
    assert.equal(fdv.getUint32(XSAVE.mxcsr, true), 0x1fa0);
    assert.equal(fdv.getUint16(XSAVE.fsw, true) >>> 11 & 7, 6, 'two loads: TOP = 6');
    assert.equal(fdv.getUint8(XSAVE.ftw), 0xc0, 'R6 and R7 in use');
    // ST(0) = pi, ST(1) = 1.0 as FXSAVE stored them, and XMM3's low dword
    assert.deepEqual(Array.from(f.xsave.subarray(XSAVE.st, XSAVE.st + 10)), Array.from(img.subarray(32, 42)));
    assert.deepEqual(Array.from(f.xsave.subarray(XSAVE.st + 16, XSAVE.st + 26)), Array.from(img.subarray(48, 58)));
    assert.equal(fdv.getUint32(XSAVE.xmm + 48, true), 0x1fa0);
    assert.deepEqual(Array.from(f.xsave.subarray(XSAVE.xmm, XSAVE.xmm + 256)), Array.from(img.subarray(160, 416)));
  } finally {
    v.close();
  }
});
