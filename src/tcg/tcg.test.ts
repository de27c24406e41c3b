// The software CPU as the hypervisor sees it: a vCPU runs guest code over
// guest memory it does not copy, and stops exactly where a KVM vCPU would
// exit (port I/O, MSRs, VMCALL, HLT, a kick), with exceptions and interrupts
// delivered through the guest's own IDT.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import koffi from 'koffi';
import { unicornAvailable } from './unicorn.js';
import { MAX_IO_PAGES, TcgVm } from './vm.js';
import { TcgVcpu } from './vcpu.js';
import { TcgKicker } from './kicker.js';
import { calibrate } from './cpu_state.js';
import { unicorn, UC_CTL_CPU_MODEL_WRITE, UC_CPU_X86_EPYC } from './unicorn.js';
import { KickTimer } from '../kvm/kick.js';
import { Worker } from 'node:worker_threads';
import { SharedMemory } from '../kvm/memory.js';
import type { Segment, VcpuExit } from '../accel/vcpu.js';

const avail = unicornAvailable();
// Unicorn is installed by scripts/setup.sh; in CI it must be there.
if (!avail.ok && process.env.CI === 'true') throw new Error(`the software CPU is required in CI: ${avail.why}`);
const opts = { skip: avail.ok ? false : `*** SKIPPING SOFTWARE CPU TESTS: ${avail.why} ***` };

const MEM = 2 << 20;
const libc = koffi.load('libc.so.6');
const mmap = libc.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, long off)') as (a: null, l: number, p: number, f: number, fd: number, o: number) => unknown;

let kicker: TcgKicker | null = null;
after(() => kicker?.close());

interface Rig { v: TcgVcpu; bytes: Uint8Array; dv: DataView; io: VcpuExit['io'][]; mmio: { gpa: bigint; len: number; write: boolean; value: number }[] }

/** A vCPU over 2 MiB of guest RAM at GPA 0; port 0x88 exits (as the hypercall port does), other ports are recorded. */
function rig(msrExits: (i: number) => boolean = (i) => i === 0x40000000, ram?: SharedMemory): Rig {
  kicker ??= new TcgKicker();
  const mem = ram ? null : mmap(null, MEM, 3, 0x22, -1, 0);
  const bytes = ram ? ram.bytes : new Uint8Array(koffi.view(mem, MEM));
  const vm = new TcgVm(1_000_000);
  vm.setUserMemoryRegion(0, 0, MEM, ram ? ram.address : koffi.address(mem));
  const io: VcpuExit['io'][] = [];
  const mmio: Rig['mmio'] = [];
  const v = new TcgVcpu(0, vm, {
    kicker, msrExits, exitPorts: [0x88],
    onIo: (x) => { io.push({ ...x, data: x.data.slice(0, 8) }); if (!x.out) x.data[0] = 0x5a; return x.port === 0x88; },
    onMmio: (m) => { mmio.push({ gpa: m.gpa, len: m.len, write: m.write, value: m.data[0]! }); if (!m.write) m.data.fill(0xab); },
  });
  return { v, bytes, dv: new DataView(bytes.buffer), io, mmio };
}

const flat = (type: number, selector = 0): Segment => ({ base: 0, limit: 0xffffffff, selector, type, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1 });

/** 32-bit protected mode, paging off, code at 0x1000, stack at 0x8000, IDT at 0x4000 (8-byte gates to CS 0x08). */
function prot32(r: Rig, code: number[], cr4 = 0x200): void {
  // GDT at 0x3000: null, 32-bit code (0x08), data (0x10)
  r.dv.setBigUint64(0x3008, 0x00cf9b000000ffffn, true);
  r.dv.setBigUint64(0x3010, 0x00cf93000000ffffn, true);
  r.v.setInitialState({
    regs: { rip: 0x1000n, rsp: 0x8000n },
    segs: { cs: flat(0xb, 8), ds: flat(3, 0x10), es: flat(3, 0x10), ss: flat(3, 0x10), fs: flat(3, 0x10), gs: flat(3, 0x10) },
    gdt: { base: 0x3000, limit: 0x17 }, idt: { base: 0x4000, limit: 0x7ff },
    cr0: 0x11, cr4, efer: 0,
  });
  r.bytes.set(code, 0x1000);
}

function gate32(r: Rig, vector: number, handler: number): void {
  const lo = (handler & 0xffff) | (8 << 16);
  const hi = (handler & 0xffff0000) | 0x8e00; // present, DPL 0, 32-bit interrupt gate
  r.dv.setUint32(0x4000 + vector * 8, lo >>> 0, true);
  r.dv.setUint32(0x4000 + vector * 8 + 4, hi >>> 0, true);
}

/** Long mode with 2 MiB identity paging; IDT at 0x4000 with 16-byte gates. */
function long64(r: Rig, code: number[], tss = 0): void {
  r.dv.setBigUint64(0x10000, 0x11003n, true);
  r.dv.setBigUint64(0x11000, 0x12003n, true);
  r.dv.setBigUint64(0x12000, 0x83n, true); // 2 MiB page at 0, writable
  r.dv.setBigUint64(0x3008, 0x00af9b000000ffffn, true);
  r.dv.setBigUint64(0x3010, 0x00cf93000000ffffn, true);
  const code64: Segment = { ...flat(0xb, 8), db: 0, l: 1 };
  r.v.setInitialState({
    regs: { rip: 0x1000n, rsp: 0x8000n },
    segs: {
      cs: code64, ds: flat(3, 0x10), es: flat(3, 0x10), ss: flat(3, 0x10), fs: flat(3, 0x10), gs: flat(3, 0x10),
      tr: { base: tss, limit: 0x67, selector: 0x28, type: 0xb, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0 },
    },
    gdt: { base: 0x3000, limit: 0x17 }, idt: { base: 0x4000, limit: 0xfff },
    cr0: 0x80000011, cr3: 0x10000, cr4: 0x220, efer: 0x500,
  });
  r.bytes.set(code, 0x1000);
}

function gate64(r: Rig, vector: number, handler: number, ist = 0): void {
  const o = 0x4000 + vector * 16;
  r.dv.setUint32(o, ((handler & 0xffff) | (8 << 16)) >>> 0, true);
  r.dv.setUint32(o + 4, ((handler & 0xffff0000) | 0x8e00 | ist) >>> 0, true);
  r.dv.setUint32(o + 8, 0, true);
}

test('the CPU state layout is proven on the loaded Unicorn', opts, () => {
  const u = unicorn();
  const out: unknown[] = [null];
  u.open(4, 8, out);
  u.ctl(out[0], UC_CTL_CPU_MODEL_WRITE, 'int', UC_CPU_X86_EPYC); // XSETBV finds XCR0
  const L = calibrate(u, out[0]);
  // QEMU 5.0's CPUX86State as Unicorn 2.1.4 builds it
  assert.equal(L.eip, 128);
  assert.equal(L.gdt, 376);
  assert.ok(L.efer > L.cr && L.dr > L.efer && L.errorCode === L.dr - 16);
  u.close(out[0]);
});

test('an OUT exits with RIP past it; an IN is completed into AL at the next run', opts, () => {
  const r = rig();
  // mov eax,0x12345678; out 0x88,eax; in al,0x60; mov ebx,eax; out 0x88,eax; hlt
  prot32(r, [0xb8, 0x78, 0x56, 0x34, 0x12, 0xe7, 0x88, 0xe4, 0x60, 0x89, 0xc3, 0xe7, 0x88, 0xf4]);
  let x = r.v.run();
  assert.equal(x.kind, 'io');
  assert.equal(x.io.port, 0x88);
  assert.equal(new DataView(x.io.data.buffer).getUint32(x.io.offset, true), 0x12345678);
  assert.equal(r.v.rip, 0x1007n);
  x = r.v.run();
  assert.equal(x.kind, 'io');
  assert.equal(r.v.rip, 0x100dn);
  // the IN at 0x60 was done during the access (onIo answered 0x5a into AL); EAX's upper bytes are kept
  assert.equal(r.v.reg(1), 0x1234565an);
  assert.equal(r.v.run().kind, 'hlt');
  assert.equal(r.v.rip, 0x100en);
});

test('REP OUTSB to a port done during the access keeps every element once', opts, () => {
  const r = rig();
  r.bytes.set([0x61, 0x62, 0x63, 0x64], 0x2000);
  // mov esi,0x2000; mov ecx,4; mov dx,0xe9; rep outsb; hlt
  prot32(r, [0xbe, 0x00, 0x20, 0, 0, 0xb9, 4, 0, 0, 0, 0x66, 0xba, 0xe9, 0x00, 0xf3, 0x6e, 0xf4]);
  assert.equal(r.v.run().kind, 'hlt');
  assert.equal(String.fromCharCode(...r.io.map((i) => i.data[0]!)), 'abcd');
});

test('an MMIO read is answered during the access; a write is seen once and ends the run at the end of its block', opts, () => {
  const r = rig();
  // mov eax,[0xfee00030]; mov [0xfee000b0],eax; jmp $+2 (ends the block); hlt
  prot32(r, [0xa1, 0x30, 0x00, 0xe0, 0xfe, 0xa3, 0xb0, 0x00, 0xe0, 0xfe, 0xeb, 0x00, 0xf4]);
  const x = r.v.run();
  assert.equal(x.kind, 'interrupted');
  assert.equal(r.v.rip, 0x100cn);
  assert.equal(r.v.reg(0), 0xababababn);
  assert.deepEqual(r.mmio.map((m) => [m.gpa, m.len, m.write]), [[0xfee00030n, 4, false], [0xfee000b0n, 4, true]]);
  assert.equal(r.v.run().kind, 'hlt');
  assert.equal(r.mmio.length, 2, 'the write is not replayed');
});

test('a guest reading page after page outside RAM fails at MAX_IO_PAGES I/O pages instead of growing the host', opts, () => {
  const r = rig();
  // mov eax,0x40000000; mov ecx,5000; 1: mov ebx,[eax]; add eax,0x1000; dec ecx; jnz 1b; hlt
  prot32(r, [0xb8, 0x00, 0x00, 0x00, 0x40, 0xb9, 0x88, 0x13, 0x00, 0x00, 0x8b, 0x18, 0x05, 0x00, 0x10, 0x00, 0x00, 0x49, 0x75, 0xf6, 0xf4]);
  let x = r.v.run();
  for (let i = 0; i < 100 && x.kind === 'interrupted'; i++) x = r.v.run();
  assert.equal(x.kind, 'failure', x.detail);
  const pages = new Set(r.mmio.map((m) => m.gpa)).size;
  assert.ok(pages <= MAX_IO_PAGES && pages > MAX_IO_PAGES - 16, `${pages} device pages read before the limit stopped the 5000`);
});

test('RDMSR/WRMSR the hypervisor asked for exit at the instruction; an error becomes #GP(0) there', opts, () => {
  const r = rig((i) => i === 0x40000000 || i === 0x12345);
  gate32(r, 13, 0x2000);
  r.bytes.set([0xe7, 0x88, 0xf4], 0x2000); // #GP handler: out 0x88; hlt
  // mov ecx,0x40000000; mov eax,0x7000; xor edx,edx; wrmsr; mov ecx,0x12345; rdmsr; hlt
  prot32(r, [0xb9, 0, 0, 0, 0x40, 0xb8, 0, 0x70, 0, 0, 0x31, 0xd2, 0x0f, 0x30, 0xb9, 0x45, 0x23, 0x01, 0, 0x0f, 0x32, 0xf4]);
  let x = r.v.run();
  assert.equal(x.kind, 'wrmsr');
  assert.equal(x.msr.index, 0x40000000);
  assert.equal(x.msr.value, 0x7000n);
  assert.equal(r.v.rip, 0x100cn, 'RIP at the WRMSR until the hypervisor answers');
  x.msr.error = false;
  x = r.v.run();
  assert.equal(x.kind, 'rdmsr');
  assert.equal(x.msr.index, 0x12345);
  x.msr.error = true;
  x = r.v.run();
  assert.equal(x.kind, 'io', 'the #GP handler ran');
  // frame: EIP of the RDMSR, then CS, EFLAGS; the error code 0 on top
  const sp = Number(r.v.reg(6));
  assert.deepEqual([r.dv.getUint32(sp, true), r.dv.getUint32(sp + 4, true), r.dv.getUint32(sp + 8, true)], [0, 0x1013, 8]);
});

test('QEMU\'s own MSRs are done in the CPU; the TSC runs at the domain\'s rate', opts, () => {
  const r = rig();
  // mov ecx,0xc0000101 (GS_BASE); mov eax,0x1234; xor edx,edx; wrmsr; xor eax,eax; rdmsr; mov ebx,eax; rdtsc; hlt
  prot32(r, [0xb9, 1, 1, 0, 0xc0, 0xb8, 0x34, 0x12, 0, 0, 0x31, 0xd2, 0x0f, 0x30, 0x31, 0xc0, 0x0f, 0x32, 0x89, 0xc3, 0x0f, 0x31, 0xf4]);
  const t0 = r.v.getMsr(0x10);
  assert.equal(r.v.run().kind, 'hlt');
  assert.equal(r.v.reg(1), 0x1234n);
  const t = r.v.reg(0) | (r.v.reg(3) << 32n);
  const t1 = r.v.getMsr(0x10);
  assert.ok(t >= t0 && t <= t1, `guest TSC ${t} between ${t0} and ${t1}`);
});

test('MTRRcap is the CPU\'s (8 variable ranges, fixed ranges, WC: 0x508, as KVM and Xen answer)', opts, () => {
  const r = rig();
  // mov ecx,0xfe; rdmsr; hlt
  prot32(r, [0xb9, 0xfe, 0, 0, 0, 0x0f, 0x32, 0xf4]);
  assert.equal(r.v.run().kind, 'hlt');
  assert.equal(r.v.reg(0), 0x508n);
});

test('VMCALL and VMMCALL exit as hypercalls with RIP past them', opts, () => {
  const r = rig();
  prot32(r, [0x0f, 0x01, 0xc1, 0x0f, 0x01, 0xd9, 0xf4]);
  assert.equal(r.v.run().kind, 'hypercall');
  assert.equal(r.v.rip, 0x1003n);
  assert.equal(r.v.run().kind, 'hypercall');
  assert.equal(r.v.rip, 0x1006n);
});

test('long mode: #PF is delivered through a 16-byte gate with CR2 and the error code, on the IST stack', opts, () => {
  const r = rig();
  gate64(r, 14, 0x2000, 1);
  r.bytes.set([0xe7, 0x88, 0xf4], 0x2000);
  // TSS at 0x5000 with IST1 = 0x9000
  r.dv.setBigUint64(0x5000 + 0x24, 0x9000n, true);
  // write to 0x40000000 (not mapped): mov dword [0x40000000], 1
  long64(r, [0xc7, 0x04, 0x25, 0x00, 0x00, 0x00, 0x40, 0x01, 0x00, 0x00, 0x00, 0xf4], 0x5000);
  const x = r.v.run();
  assert.equal(x.kind, 'io');
  assert.equal(r.v.reg(6), 0x9000n - 48n, 'IST1 stack, 16-byte aligned, six words pushed');
  const q = (o: number) => r.dv.getBigUint64(0x9000 - 48 + o, true);
  assert.equal(q(0), 2n, 'error code: write to a non-present page at CPL 0');
  assert.equal(q(8), 0x1000n, 'RIP of the faulting instruction');
  assert.equal(q(16), 8n);
  assert.equal(q(40), 0x10n, 'old SS');
});

test('an exception at CPL3 is delivered through an IDT, GDT, TSS and stack on supervisor-only pages', opts, () => {
  const r = rig();
  // 4 KiB paging: the user's code (0x1000) and stack (0x6000) pages are user pages, every other page (IDT 0x4000,
  // GDT 0x3000, TSS 0x5000, handler 0x2000, kernel stack 0x8000) supervisor-only, as in Linux.
  r.dv.setBigUint64(0x10000, 0x11007n, true);
  r.dv.setBigUint64(0x11000, 0x12007n, true);
  r.dv.setBigUint64(0x12000, 0x13007n, true);
  for (let p = 0; p < 512; p++) r.dv.setBigUint64(0x13000 + p * 8, BigInt(p * 0x1000) | (p === 1 || p === 6 ? 7n : 3n), true);
  r.dv.setBigUint64(0x3008, 0x00af9b000000ffffn, true);
  r.dv.setBigUint64(0x3010, 0x00cf93000000ffffn, true);
  r.dv.setBigUint64(0x3018, 0x00affb000000ffffn, true); // user code, DPL 3
  r.dv.setBigUint64(0x3020, 0x00cff3000000ffffn, true); // user data, DPL 3
  r.dv.setBigUint64(0x5000 + 4, 0x9000n, true); // RSP0
  gate64(r, 6, 0x2000);
  r.bytes.set([0xe7, 0x88, 0xf4], 0x2000);
  r.bytes.set([0x0f, 0x0b], 0x1000); // ud2
  const user = (type: number, selector: number): Segment => ({ ...flat(type, selector), dpl: 3 });
  r.v.setInitialState({
    regs: { rip: 0x1000n, rsp: 0x6800n },
    segs: {
      cs: { ...user(0xb, 0x1b), db: 0, l: 1 }, ds: user(3, 0x23), es: user(3, 0x23), ss: user(3, 0x23), fs: user(3, 0x23), gs: user(3, 0x23),
      tr: { base: 0x5000, limit: 0x67, selector: 0x28, type: 0xb, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0 },
    },
    gdt: { base: 0x3000, limit: 0x2f }, idt: { base: 0x4000, limit: 0xfff },
    cr0: 0x80000011, cr3: 0x10000, cr4: 0x220, efer: 0x500,
  });
  const x = r.v.run();
  assert.equal(x.kind, 'io', `not delivered: ${x.kind} ${x.detail ?? ''}`);
  assert.equal(r.v.reg(6), 0x9000n - 40n, 'RSP0 stack, five words pushed');
  const q = (o: number) => r.dv.getBigUint64(0x9000 - 40 + o, true);
  assert.equal(q(0), 0x1000n, 'RIP of the ud2');
  assert.equal(q(8), 0x1bn, 'old CS (CPL3)');
  assert.equal(q(24), 0x6800n, 'old RSP');
  assert.equal(q(32), 0x23n, 'old SS');
  assert.equal(r.v.segment('cs').selector, 8, 'now at CPL0');
});

test('a new initial state after a run in long mode starts real mode afresh (INIT then STARTUP): no long mode, no pending interrupt', opts, () => {
  const r = rig();
  // mov rax,0x123456789; out 0x88,eax; cli; hlt (a CPU halting itself down, as Linux's play_dead does)
  long64(r, [0x48, 0xb8, 0x89, 0x67, 0x45, 0x23, 0x01, 0x00, 0x00, 0x00, 0xe7, 0x88, 0xfa, 0xf4]);
  let x = r.v.run();
  assert.equal(x.kind, 'io');
  assert.equal(new DataView(x.io.data.buffer).getUint32(x.io.offset, true), 0x23456789);
  assert.equal(r.v.run().kind, 'hlt');
  assert.equal(r.v.longMode64, true);
  r.v.interrupt(0x30); // interrupts are off: it stays pending, and must not outlive the reset
  // STARTUP vector 0x08: real mode, CS 0x0800 (base 0x8000), IP 0, CR0 = ET, EFLAGS = 2 with IF open
  const seg = (selector: number, type: number): Segment => ({ base: selector << 4, limit: 0xffff, selector, type, present: 1, dpl: 0, db: 0, s: 1, l: 0, g: 0 });
  r.v.setInitialState({
    regs: { rip: 0n, rsp: 0x7000n, rflags: 0x202n },
    segs: { cs: seg(0x800, 0xb), ds: seg(0, 3), es: seg(0, 3), ss: seg(0, 3), fs: seg(0, 3), gs: seg(0, 3) },
    gdt: { base: 0, limit: 0xffff }, idt: { base: 0, limit: 0xffff },
    cr0: 0x10, cr3: 0, cr4: 0, efer: 0,
  });
  // mov ax,cs; out 0x88,ax; mov eax,cr0; out 0x88,eax; mov ax,0xffff; inc ax; out 0x88,ax; hlt
  r.bytes.set([0x8c, 0xc8, 0xe7, 0x88, 0x0f, 0x20, 0xc0, 0x66, 0xe7, 0x88, 0xb8, 0xff, 0xff, 0x40, 0xe7, 0x88, 0xf4], 0x8000);
  const word = (e: VcpuExit) => new DataView(e.io.data.buffer).getUint16(e.io.offset, true);
  x = r.v.run();
  assert.equal(x.kind, 'io', `${x.kind} ${x.detail ?? ''}`);
  assert.equal([x.io.size, word(x)].join(), '2,2048', 'a 16-bit OUT of CS = 0x0800');
  assert.equal(r.v.longMode64, false);
  assert.equal([r.v.efer, r.v.cpl, r.v.segment('cs').base].join(), '0,0,32768');
  x = r.v.run();
  assert.equal(x.kind, 'io');
  assert.equal(new DataView(x.io.data.buffer).getUint32(x.io.offset, true) & 0x80000011, 0x10, 'CR0: ET, no PE or PG');
  x = r.v.run();
  assert.equal(x.kind, 'io');
  assert.equal(word(x), 0, '16-bit arithmetic wraps');
  assert.equal(r.v.run().kind, 'hlt', 'no interrupt from before the reset was delivered (the IVT at 0 is all zeros)');
  assert.equal(r.v.rip, 0x11n);
});

test('CPUID reports OSXSAVE (leaf 1) and OSPKE (leaf 7) as the guest\'s CR4 has them, whatever the table says', opts, () => {
  for (const [cr4, table, want] of [[0x200, 1 << 27, 0], [0x40200, 0, 1 << 27]] as const) {
    const r = rig();
    r.v.setCpuid([{ function: 1, index: 0, flags: 0, eax: 0, ebx: 0, ecx: table | 1, edx: 0 }]);
    // mov eax,1; cpuid; mov eax,ecx; out 0x88,eax; hlt
    prot32(r, [0xb8, 1, 0, 0, 0, 0x0f, 0xa2, 0x89, 0xc8, 0xe7, 0x88, 0xf4], cr4);
    const x = r.v.run();
    assert.equal(x.kind, 'io');
    assert.equal(new DataView(x.io.data.buffer).getUint32(x.io.offset, true), want | 1, `CR4 0x${cr4.toString(16)}`);
  }
});

test('an empty IDT makes a fault a triple fault (the vCPU shuts down)', opts, () => {
  const r = rig();
  prot32(r, [0x0f, 0x0b]); // ud2
  r.dv.setUint32(0x4000 + 6 * 8 + 4, 0, true);
  const x = r.v.run();
  assert.equal(x.kind, 'shutdown');
  assert.match(x.detail, /not present/);
});

test('an interrupt queued while IF=0 waits for STI and the instruction after it', opts, () => {
  const r = rig();
  gate32(r, 0x40, 0x2000);
  r.bytes.set([0xe7, 0x88, 0xf4], 0x2000);
  // cli; out 0x88,eax; sti; nop; jmp $
  prot32(r, [0xfa, 0xe7, 0x88, 0xfb, 0x90, 0xeb, 0xfe]);
  assert.equal(r.v.run().kind, 'io');
  assert.equal(r.v.ifFlag, false);
  r.v.interrupt(0x40);
  r.v.requestInterruptWindow = true;
  // not deliverable yet: the run goes on to STI, stops when IF opens, and delivers after the shadow
  let x = r.v.run();
  for (let i = 0; i < 4 && x.kind !== 'io'; i++) x = r.v.run();
  assert.equal(x.kind, 'io');
  assert.equal(r.dv.getUint32(Number(r.v.reg(6)), true), 0x1005, 'returns to the instruction after the one STI shadowed');
});

test('the pCPU timer and a kick from another thread stop a guest spinning in the software CPU', opts, async () => {
  const r = rig();
  prot32(r, [0xeb, 0xfe]); // jmp $
  // the timer, as the pCPU arms it for a slice end: aimed at the kick helper
  const timer = new KickTimer(kicker!.tid);
  const t0 = process.hrtime.bigint();
  timer.arm(t0 + 20_000_000n);
  assert.equal(r.v.run().kind, 'interrupted');
  assert.ok(process.hrtime.bigint() - t0 >= 20_000_000n, 'not before the deadline');
  timer.close();
  // a kick from another thread, as an event sent to this vCPU would do
  const kickJs = new URL('../kvm/kick.js', import.meta.url).href;
  const w = new Worker(`import(${JSON.stringify(kickJs)}).then((m) => setTimeout(() => m.kick(require('node:worker_threads').workerData), 20));`,
    { eval: true, workerData: { pid: process.pid, tid: kicker!.tid } });
  assert.equal(r.v.run().kind, 'interrupted');
  await w.terminate();
});

test('SYSCALL from CPL 3 enters the kernel at LSTAR as the CPU does (RCX, R11, SFMASK, flat CS/SS from STAR); SYSRET returns', opts, () => {
  const r = rig();
  // 2 MiB identity map, user-accessible; GDT: 0x08 kernel code64, 0x10 kernel data, 0x20 user data, 0x28 user code64
  r.dv.setBigUint64(0x10000, 0x11007n, true);
  r.dv.setBigUint64(0x11000, 0x12007n, true);
  r.dv.setBigUint64(0x12000, 0x87n, true);
  r.dv.setBigUint64(0x3008, 0x00af9b000000ffffn, true);
  r.dv.setBigUint64(0x3010, 0x00cf93000000ffffn, true);
  r.dv.setBigUint64(0x3020, 0x00cff3000000ffffn, true);
  r.dv.setBigUint64(0x3028, 0x00affb000000ffffn, true);
  const code64: Segment = { ...flat(0xb, 8), db: 0, l: 1 };
  r.v.setInitialState({
    regs: { rip: 0x1000n, rsp: 0x8000n },
    segs: { cs: code64, ds: flat(3, 0x10), es: flat(3, 0x10), ss: flat(3, 0x10), fs: flat(3, 0x10), gs: flat(3, 0x10) },
    gdt: { base: 0x3000, limit: 0x2f }, idt: { base: 0x4000, limit: 0xfff },
    cr0: 0x80000011, cr3: 0x10000, cr4: 0x220, efer: 0x501, // LME, LMA, SCE
  });
  r.bytes.set([
    0xb9, 0x81, 0x00, 0x00, 0xc0, 0x31, 0xc0, 0xba, 0x08, 0x00, 0x18, 0x00, 0x0f, 0x30, // STAR: SYSCALL CS 0x08, SYSRET base 0x18
    0xb9, 0x82, 0x00, 0x00, 0xc0, 0xb8, 0x00, 0x20, 0x00, 0x00, 0x31, 0xd2, 0x0f, 0x30, // LSTAR = 0x2000
    0xb9, 0x84, 0x00, 0x00, 0xc0, 0xb8, 0x00, 0x02, 0x00, 0x00, 0x31, 0xd2, 0x0f, 0x30, // SFMASK = IF
    0xb9, 0x00, 0x18, 0x00, 0x00, 0x41, 0xbb, 0x02, 0x02, 0x00, 0x00, // rcx = 0x1800, r11 = IF | 2
    0x48, 0x0f, 0x07, // sysretq
  ], 0x1000);
  r.bytes.set([0xb8, 0x34, 0x12, 0x00, 0x00, 0x0f, 0x05], 0x1800); // user: mov eax, 0x1234; syscall
  r.bytes.set([0xe6, 0x88, 0xf4], 0x2000); // kernel entry: out 0x88, al; hlt
  const x = r.v.run();
  assert.equal(x.kind, 'io');
  assert.equal(x.io.port, 0x88);
  assert.equal(r.io.at(-1)!.data[0], 0x34, 'RAX kept: the syscall number reached the kernel');
  assert.equal(r.v.rip, 0x2002n, 'entered at LSTAR');
  assert.equal(r.v.cpl, 0);
  assert.equal(r.v.reg(2), 0x1807n, 'RCX = the instruction after SYSCALL');
  assert.equal(r.v.reg(11) & 0x200n, 0x200n, 'R11 = the user RFLAGS (IF set)');
  assert.equal(r.v.reg(17) & 0x200n, 0n, 'SFMASK cleared IF');
  const st = r.v.getState();
  assert.equal(st.segs.cs.selector, 0x08);
  assert.equal(st.segs.ss.selector, 0x10);
  assert.equal(st.segs.cs.l, 1);
});

test('SYSCALL with EFER.SCE clear raises #UD at the instruction', opts, () => {
  const r = rig();
  gate64(r, 6, 0x2000);
  r.bytes.set([0xe6, 0x88, 0xf4], 0x2000);
  long64(r, [0x0f, 0x05, 0xf4]);
  assert.equal(r.v.run().kind, 'io');
  assert.equal(r.dv.getBigUint64(0x8000 - 40, true), 0x1000n, '#UD returns to the SYSCALL itself');
});

test('SYSENTER enters at IA32_SYSENTER_EIP on IA32_SYSENTER_ESP with flat CS/SS from IA32_SYSENTER_CS; #GP(0) when it is 0', opts, () => {
  const r = rig();
  prot32(r, [
    0xb9, 0x74, 0x01, 0x00, 0x00, 0xb8, 0x08, 0x00, 0x00, 0x00, 0x31, 0xd2, 0x0f, 0x30, // SYSENTER_CS = 0x08
    0xb9, 0x75, 0x01, 0x00, 0x00, 0xb8, 0x00, 0x70, 0x00, 0x00, 0x0f, 0x30, // SYSENTER_ESP = 0x7000
    0xb9, 0x76, 0x01, 0x00, 0x00, 0xb8, 0x00, 0x20, 0x00, 0x00, 0x0f, 0x30, // SYSENTER_EIP = 0x2000
    0xfb, 0x0f, 0x34, // sti; sysenter
  ]);
  r.bytes.set([0xe6, 0x88, 0xf4], 0x2000);
  assert.equal(r.v.run().kind, 'io');
  assert.equal(r.v.rip, 0x2002n);
  assert.equal(r.v.reg(6), 0x7000n);
  assert.equal(r.v.reg(17) & 0x200n, 0n, 'IF cleared');
  const st = r.v.getState();
  assert.deepEqual([st.segs.cs.selector, st.segs.ss.selector, st.segs.cs.db], [0x08, 0x10, 1]);

  const z = rig();
  gate32(z, 13, 0x2000);
  prot32(z, [0x0f, 0x34]);
  z.bytes.set([0xe6, 0x88, 0xf4], 0x2000);
  assert.equal(z.v.run().kind, 'io');
  assert.deepEqual([z.dv.getUint32(0x8000 - 16, true), z.dv.getUint32(0x8000 - 12, true)], [0, 0x1000], '#GP(0) at the SYSENTER');
});

test('stops from another thread at any point never run an instruction twice nor skip one\'s hook (RAM, port, MMIO, RDTSC)', opts, async () => {
  const r = rig();
  const n = 20000;
  prot32(r, [
    0xb9, n & 0xff, (n >> 8) & 0xff, 0, 0, 0xbf, 0x00, 0x00, 0x01, 0x00, // mov ecx,n; mov edi,0x10000
    0xff, 0x05, 0x00, 0x20, 0, 0, 0xe6, 0x80, 0xa3, 0x00, 0x03, 0xe0, 0xfe, // loop: inc dword [0x2000]; out 0x80,al; mov [0xfee00300],eax
    0x0f, 0x31, 0x89, 0x07, 0x89, 0x57, 0x04, 0x83, 0xc7, 0x08, // rdtsc; mov [edi],eax; mov [edi+4],edx; add edi,8
    0x49, 0x75, 0xe6, 0xf4, // dec ecx; jnz loop; hlt
  ]);
  const t0 = r.v.getMsr(0x10);
  // a thread that stops the vCPU every ~20 us, as kicks and the pCPU timer would
  const kickJs = new URL('../kvm/kick.js', import.meta.url).href;
  const stop = new Int32Array(new SharedArrayBuffer(8)); // [0]: stop kicking, [1]: kicks so far
  const w = new Worker(`import(${JSON.stringify(kickJs)}).then((m) => { const { t, stop } = require('node:worker_threads').workerData;
    while (!Atomics.load(stop, 0)) { m.kick(t); Atomics.add(stop, 1, 1); Atomics.wait(stop, 0, 0, 0.02); } });`,
  { eval: true, workerData: { t: { pid: process.pid, tid: kicker!.tid }, stop } });
  for (let waited = 0; Atomics.load(stop, 1) === 0; waited++) {
    assert.ok(waited < 10_000, 'the kicking thread started within 10 s');
    Atomics.wait(stop, 1, 0, 1);
  }
  let interrupted = 0;
  try {
    for (let x = r.v.run(); x.kind !== 'hlt'; x = r.v.run()) {
      assert.equal(x.kind, 'interrupted', `run ${interrupted + 1} ended '${x.kind}'${x.detail ? ` (${x.detail})` : ''} at RIP 0x${r.v.rip.toString(16)}, pass ${r.dv.getUint32(0x2000, true)}`);
      // a replayed MMIO write would end its run again and again
      assert.ok(++interrupted <= 4 * n, `${interrupted} runs for ${n} passes`);
    }
  } finally {
    // the kicking thread stops whatever happened: left running, it would stop every later test's vCPU too
    Atomics.store(stop, 0, 1);
    await w.terminate();
  }
  assert.equal(r.dv.getUint32(0x2000, true), n, 'the RAM counter counted each pass once');
  assert.equal(r.io.filter((i) => i.port === 0x80).length, n, 'each OUT was seen once');
  assert.equal(r.mmio.filter((m) => m.write && m.gpa === 0xfee00300n).length, n, 'each MMIO write was seen once');
  assert.ok(interrupted >= n, 'every MMIO write ended a run');
  const t1 = r.v.getMsr(0x10);
  let last = t0;
  for (let i = 0; i < n; i++) {
    const t = r.dv.getBigUint64(0x10000 + 8 * i, true);
    assert.ok(t >= last && t <= t1, `RDTSC ${i} read ${t}: the domain's TSC runs from ${last} to ${t1}`);
    last = t;
  }
});

test('the arithmetic flags and DF live across exits taken inside an instruction (an OUT that exits, an RDMSR)', opts, () => {
  const r = rig();
  prot32(r, [
    0xb8, 0x01, 0x00, 0x00, 0x00, 0x83, 0xf8, 0x02, // mov eax,1; cmp eax,2 (CF, SF)
    0xfd, 0xe6, 0x88, // std; out 0x88,al (exits)
    0x9c, 0x5b, 0xfc, // pushfd; pop ebx; cld
    0xb9, 0x00, 0x00, 0x00, 0x40, 0x31, 0xc0, 0x0f, 0x32, // mov ecx,0x40000000; xor eax,eax (ZF); rdmsr (exits)
    0x9c, 0x5a, 0xf4, // pushfd; pop edx; hlt
  ]);
  // (a kick left over from the test before may end a run early)
  const run = () => { let x = r.v.run(); while (x.kind === 'interrupted') x = r.v.run(); return x; };
  assert.equal(run().kind, 'io');
  const x = run();
  assert.equal(x.kind, 'rdmsr');
  x.msr.value = 0n;
  assert.equal(run().kind, 'hlt');
  const CF = 1n, ZF = 0x40n, SF = 0x80n, DF = 0x400n;
  assert.equal(r.v.reg(1) & (CF | ZF | SF | DF), CF | SF | DF, 'CF, SF and DF after the OUT');
  assert.equal(r.v.reg(3) & (CF | ZF | SF | DF), ZF, 'ZF after the RDMSR');
});

test('code written by the guest runs as written: a page stored to before it held code, patched after', opts, () => {
  const r = rig();
  prot32(r, [
    0xc7, 0x05, 0x00, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // mov dword [0x3000], 0
    0xc6, 0x05, 0x00, 0x20, 0x00, 0x00, 0xb8, // mov byte [0x2000], 0xb8 (mov eax, imm32)
    0xc7, 0x05, 0x01, 0x20, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, // mov dword [0x2001], 1
    0xc6, 0x05, 0x05, 0x20, 0x00, 0x00, 0xc3, // mov byte [0x2005], 0xc3 (ret)
    0xb9, 0x00, 0x20, 0x00, 0x00, 0xff, 0xd1, 0x89, 0xc3, // mov ecx, 0x2000; call ecx; mov ebx, eax
    0xc7, 0x05, 0x01, 0x20, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // mov dword [0x2001], 2 (the page now holds code)
    0xff, 0xd1, 0xf4, // call ecx; hlt
  ]);
  let x = r.v.run();
  while (x.kind === 'interrupted') x = r.v.run();
  assert.equal(x.kind, 'hlt');
  assert.equal(r.v.reg(1), 1n, 'the code as first written');
  assert.equal(r.v.reg(0), 2n, 'the code as patched');
});

/** Runs the rig's vCPU to its first exit that is not a stop from outside. */
function runToExit(r: Rig): VcpuExit {
  let x = r.v.run();
  while (x.kind === 'interrupted') x = r.v.run();
  return x;
}

test('locked instructions are atomic against another thread updating the same word (x86 LOCK semantics between CPUs)', opts, async () => {
  // The guest's RAM is a memfd, as a domain's is; another thread maps it too, as a backend or another domain's pCPU would.
  const ram = SharedMemory.create('lock-test', MEM);
  const r = rig(undefined, ram);
  const N = 1_000_000;
  prot32(r, [
    // wait (bounded) for the other thread to be adding: [0x9004] != 0
    0xb9, 0xff, 0xff, 0xff, 0x7f, // mov ecx, 0x7fffffff
    0x83, 0x3d, 0x04, 0x90, 0x00, 0x00, 0x00, 0x75, 0x03, 0x49, 0x75, 0xf4, // W: cmp dword [0x9004], 0; jne +3; dec ecx; jnz W
    0xb9, N & 0xff, (N >> 8) & 0xff, (N >> 16) & 0xff, N >>> 24, // mov ecx, N
    0xbb, 0x01, 0x00, 0x00, 0x00, // L: mov ebx, 1
    0xf0, 0xff, 0x05, 0x00, 0x90, 0x00, 0x00, // lock inc dword [0x9000]
    0xf0, 0x0f, 0xc1, 0x1d, 0x10, 0x90, 0x00, 0x00, // lock xadd [0x9010], ebx
    0x49, 0x75, 0xe9, // dec ecx; jnz L
    0xc7, 0x05, 0x08, 0x90, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, // mov dword [0x9008], 1 (done)
    0xe6, 0x88, // out 0x88, al
  ]);
  const memJs = new URL('../kvm/memory.js', import.meta.url).href;
  const w = new Worker(`import(${JSON.stringify(memJs)}).then(({ SharedMemory }) => {
    const { workerData: { fd, size }, parentPort } = require('node:worker_threads');
    const m = SharedMemory.attach(fd, size);
    const w = new Int32Array(m.buffer, m.bytes.byteOffset, size / 4);
    const end = Date.now() + 20000;
    Atomics.store(w, 0x9004 / 4, 1);
    let n = 0;
    while (Atomics.load(w, 0x9008 / 4) === 0 && Date.now() < end) { Atomics.add(w, 0x9000 / 4, 1); Atomics.add(w, 0x9010 / 4, 1); n++; }
    parentPort.postMessage(n);
  });`, { eval: true, workerData: { fd: ram.fd, size: MEM } });
  const theirs = new Promise<number>((res, rej) => { w.once('message', res); w.once('error', rej); });
  try {
    const x = runToExit(r);
    assert.equal(x.kind, 'io');
    const n = await theirs;
    assert.ok(n > 0, `the other thread added while the guest did (${n})`);
    assert.equal(r.dv.getUint32(0x9000, true), N + n, 'lock inc: no increment lost either way');
    assert.equal(r.dv.getUint32(0x9010, true), N + n, 'lock xadd: no addition lost either way');
  } finally {
    await w.terminate();
  }
});

test('a locked instruction on a misaligned word (no single host atomic) still completes, once', opts, () => {
  const r = rig();
  prot32(r, [
    0xb8, 0x05, 0x00, 0x00, 0x00, // mov eax, 5
    0xf0, 0x0f, 0xc1, 0x05, 0x3e, 0x90, 0x00, 0x00, // lock xadd [0x903e], eax (straddles a cache line)
    0xf0, 0xff, 0x05, 0x01, 0x91, 0x00, 0x00, // lock inc dword [0x9101]
    0xf4, // hlt
  ]);
  r.dv.setUint32(0x903e, 10, true);
  r.dv.setUint32(0x9101, 7, true);
  assert.equal(runToExit(r).kind, 'hlt');
  assert.equal(r.dv.getUint32(0x903e, true), 15);
  assert.equal(r.v.reg(0), 10n, 'xadd returned the old value');
  assert.equal(r.dv.getUint32(0x9101, true), 8);
});

test('an NMI is taken through vector 2 with IF=0, and a second one waits for the handler\'s IRET', opts, () => {
  const r = rig();
  gate32(r, 2, 0x2000);
  // the handler: inc dword [0x9000]; out 0x88, al; iret
  r.bytes.set([0xff, 0x05, 0x00, 0x90, 0x00, 0x00, 0xe6, 0x88, 0xcf], 0x2000);
  // cli; out 0x88, al; L: out 0x88, al; jmp L
  prot32(r, [0xfa, 0xe6, 0x88, 0xe6, 0x88, 0xeb, 0xfc]);
  assert.equal(runToExit(r).kind, 'io');
  assert.equal(r.v.ifFlag, false);
  r.v.nmi();
  assert.equal(runToExit(r).kind, 'io');
  assert.equal(r.v.rip, 0x2008n, 'in the handler, with interrupts off');
  assert.equal(r.dv.getUint32(0x9000, true), 1);
  assert.equal(r.v.getState().events.nmiMasked, true, 'NMIs blocked while the handler runs');
  r.v.nmi();
  assert.equal(runToExit(r).kind, 'io');
  assert.equal(r.v.rip, 0x1005n, 'the handler returned; the second NMI waited');
  assert.equal(r.dv.getUint32(0x9000, true), 1);
  assert.equal(r.v.getState().events.nmiMasked, false, 'IRET unblocked NMIs');
  assert.equal(r.v.getState().events.nmiPending, true);
  assert.equal(runToExit(r).kind, 'io');
  assert.equal(r.v.rip, 0x2008n, 'the second NMI, taken after the IRET');
  assert.equal(r.dv.getUint32(0x9000, true), 2);
});
