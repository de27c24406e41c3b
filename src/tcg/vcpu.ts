// A vCPU on the software CPU: one Unicorn engine per vCPU over the domain's
// own guest memory (mapped, never copied: every write the hypervisor or
// another vCPU makes is seen at once). It implements the same accelerator
// interface as KVM: run() stops at port I/O, the MSRs the hypervisor asked to
// see, VMCALL/VMMCALL, HLT, a kick or the pCPU timer, and returns the typed
// exit; exceptions and interrupts are delivered through the guest's IDT here
// (deliver.ts), as the CPU would. An exit leaves RIP exactly after the
// instruction that caused it, as on KVM; a stop from outside (a kick, the
// pCPU timer, a device write) takes effect at the next block boundary, as in
// QEMU, and an interrupt window where QEMU itself would take the interrupt.

import koffi, { type TypeObject } from 'koffi';
import {
  unicorn, check, UnicornError, type UnicornLib, UC_ARCH_X86, UC_MODE_64, UC_CPU_X86_EPYC, UC_CTL_CPU_MODEL_WRITE,
  UC_HOOK_BLOCK, UC_HOOK_INSN, UC_HOOK_INTR, UC_X86_INS_IN, UC_X86_INS_OUT, UC_X86_INS_CPUID, UC_X86_INS_RDTSC, UC_X86_INS_RDTSCP, UC_X86_REG, UC_PROT_READ, UC_PROT_WRITE, UC_ERR_OK,
  UC_ERR_INSN_INVALID, UC_X86_INS_SYSCALL, UC_X86_INS_SYSENTER, XENODE_MSR_EXIT, XENODE_IO_EXIT, RUN_KICKED, RUN_WINDOW,
} from './unicorn.js';
import { calibrate, X86State, QEMU_REG_OF, HF_CS64, HF_INHIBIT_IRQ, HF2_NMI, DESC_AVL, segFlags, DESC_B, DESC_DPL_SHIFT, DESC_G, DESC_L, DESC_P, DESC_S, DESC_TYPE_SHIFT, SEGS } from './cpu_state.js';
import { deliver, enterSysenter, enterSyscall, type Event } from './deliver.js';
import type { TcgVm, TcgEngine } from './vm.js';
import type { TcgKicker } from './kicker.js';
import { XSAVE, XFEATURE, CPU_MSR_LIST, emptyFpu, SEG_NAMES, type FpuState, type SegmentState, type VcpuState } from '../accel/state.js';
import type { SoftwareVcpu } from '../accel/hybrid.js';
import { VcpuExit, REG, type CpuidEntry, type InitialState, type Segment, type SegName } from '../accel/vcpu.js';

const IA32_TSC = 0x10;
// SYSCALL's and SYSENTER's MSRs (SDM vol. 4, table 2-2)
const MSR_STAR = 0xc0000081;
const MSR_LSTAR = 0xc0000082;
const MSR_CSTAR = 0xc0000083;
const MSR_SYSCALL_MASK = 0xc0000084;
const MSR_SYSENTER_CS = 0x174;
const MSR_SYSENTER_ESP = 0x175;
const MSR_SYSENTER_EIP = 0x176;
/** Never reached (non-canonical): emulation runs until a stop, not to an address. */
const UNTIL_NEVER = 0x8000_0000_0000_0000n;
const EFLAGS_IF = 1n << 9n;
/** Deliveries handled inside one run() before the pCPU gets to look at its timers again. */
const MAX_INTERNAL_EVENTS = 64;
const VEC_UD = 6;
const VEC_NMI = 2;
const CPUID1_ECX_OSXSAVE = 1 << 27;
const CPUID7_ECX_OSPKE = 1 << 4;
const CR4_OSXSAVE = 1n << 18n;
const CR4_PKE = 1n << 22n;
const VEC_GP = 13;
const VEC_PF = 14;

/**
 * MSRs QEMU's TCG implements itself (helper_rdmsr/helper_wrmsr): the rest,
 * unless the hypervisor asked for them, are unknown to the CPU and exit like
 * KVM's "unknown MSR" exits (the hypervisor answers #GP).
 */
function tcgKnowsMsr(i: number): boolean {
  return i === 0x1b || i === 0xfe /* MTRRcap */ || (i >= 0x174 && i <= 0x176) || i === 0x179 || i === 0x17a || i === 0x17b || i === 0x1a0
    || (i >= 0x200 && i <= 0x20f) || i === 0x250 || i === 0x258 || i === 0x259 || (i >= 0x268 && i <= 0x26f)
    || i === 0x277 || i === 0x2ff || (i >= 0x400 && i < 0x400 + 4 * 10)
    || i === 0xc0000080 || i === 0xc0000081 || i === 0xc0000082 || i === 0xc0000083 || i === 0xc0000084
    || i === 0xc0000100 || i === 0xc0000101 || i === 0xc0000102 || i === 0xc0000103;
}

export interface TcgVcpuOptions {
  /** MSRs that exit to the hypervisor (KVM's MSR filter): index -> true */
  msrExits: (index: number) => boolean;
  /** Accesses to guest-physical memory that is not RAM, during the access (reads must be answered then). */
  onMmio: (m: VcpuExit['mmio']) => void;
  /**
   * Port I/O; true when it must be an exit instead (the access completes,
   * RIP moves past it). Only a port in `exitPorts` can exit: the vCPU stops at
   * its IN or OUT and asks there. Other ports are asked during the access
   * (so a REP INS/OUTS keeps every element), as are INS/OUTS to any port.
   */
  onIo: (io: VcpuExit['io']) => boolean;
  /** Ports whose IN or OUT may exit (onIo decides at the instruction). */
  exitPorts?: readonly number[];
  /** Stops the engine from other threads (kicks, the pCPU timer). */
  kicker: TcgKicker;
  /** The vCPU also runs in KVM (hybrid.ts): watch for the guest leaving CPL 0. */
  besideKvm?: boolean;
}

export class TcgVcpu implements SoftwareVcpu, TcgEngine {
  readonly accel = 'tcg' as const;
  readonly exit = new VcpuExit();
  readonly u: UnicornLib;
  readonly uc: unknown;
  private readonly st: X86State;
  private readonly ctx: unknown;
  /** The saved state matches the engine's. */
  private fresh = false;
  /** The saved state was changed here and goes back before the next run. */
  private dirty = false;
  /** An exit from a hook this run (the hook stopped the engine). */
  private hookExit = false;
  private hookEvent: Event | null = null;
  /** The RIP of the instruction that exited (for #GP on a refused MSR). */
  private exitRip = 0n;
  private pendingIrq = -1;
  private pendingNmi = false;
  private cpuid: CpuidEntry[] = [];
  /** The TSC the guest reads (native, for the RDTSC hooks): base_ns, khz, offset (int64 each). */
  private readonly tscParams: unknown;
  private readonly tscView: DataView;
  /** Ports whose I/O exits: a native bitmap, one bit a port. */
  private readonly exitPorts: unknown;
  private readonly scratch = new Uint8Array(16);
  /** Register reads through the API (not `scratch`: that holds an exit's port I/O data). */
  private readonly regBuf = new Uint8Array(16);
  private readonly regView = new DataView(this.regBuf.buffer);
  private readonly scratchView = new DataView(this.scratch.buffer);
  /** Register writes from hooks (not `scratch`: that holds an IN's data meanwhile). */
  private readonly regScratch = new Uint8Array(8);
  private readonly regScratchView = new DataView(this.regScratch.buffer);
  private readonly callbacks: unknown[] = [];
  requestInterruptWindow = false;
  private closed = false;
  /** Beside KVM (hybrid.ts): when run() hands the vCPU back. */
  returnAt: SoftwareVcpu['returnAt'] = 'never';
  returned = false;

  constructor(readonly id: number, readonly vm: TcgVm, private readonly opts: TcgVcpuOptions) {
    const u = (this.u = unicorn());
    const out: unknown[] = [null];
    check(u, u.open(UC_ARCH_X86, UC_MODE_64, out), 'uc_open');
    this.uc = out[0];
    check(u, u.ctl(this.uc, UC_CTL_CPU_MODEL_WRITE, 'int', UC_CPU_X86_EPYC), 'uc_ctl(CPU model)');
    const layout = calibrate(u, this.uc);
    const c: unknown[] = [null];
    check(u, u.contextAlloc(this.uc, c), 'uc_context_alloc');
    this.ctx = c[0];
    this.st = new X86State(layout, this.ctx);
    this.exit.io.data = this.scratch;
    this.tscParams = u.tscNew();
    this.tscView = new DataView(koffi.view(this.tscParams, 24));
    this.tscView.setBigInt64(0, vm.tscBaseNs, true);
    this.tscView.setBigInt64(8, BigInt(vm.tscKhz), true);
    this.exitPorts = koffi.alloc('uint8_t', 8192);
    const ports = new Uint8Array(koffi.view(this.exitPorts, 8192));
    ports.fill(0);
    for (const p of opts.exitPorts ?? []) ports[(p & 0xffff) >> 3]! |= 1 << (p & 7);
    this.installHooks();
    vm.addEngine(this);
  }

  // --- hooks: each records an exit and stops the engine (exactly there: QEMU's own exits) ---

  private installHooks(): void {
    const u = this.u;
    const uc = this.uc;
    const h: bigint[] = [0n];
    const reg = (cb: unknown, proto: TypeObject) => { const p = koffi.register(cb as never, koffi.pointer(proto)); this.callbacks.push(p); return p; };
    if (this.opts.besideKvm) check(u, u.hookAddRaw(uc, h, UC_HOOK_BLOCK, u.blockHook, null, 1n, 0n), 'uc_hook_add(block)');
    check(u, u.hookAdd(uc, h, UC_HOOK_INSN, reg((_: unknown, port: number, size: number, value: number) => this.onOut(port, size, value), u.protos.out), null, 1n, 0n, UC_X86_INS_OUT), 'uc_hook_add(out)');
    check(u, u.hookAdd(uc, h, UC_HOOK_INSN, reg((_: unknown, port: number, size: number) => this.onIn(port, size), u.protos.in), null, 1n, 0n, UC_X86_INS_IN), 'uc_hook_add(in)');
    check(u, u.hookAdd(uc, h, UC_HOOK_INSN, reg(() => this.onCpuid(), u.protos.insn), null, 1n, 0n, UC_X86_INS_CPUID), 'uc_hook_add(cpuid)');
    // RDTSC and RDTSCP in the shim, from the same parameters as tsc() below (no call out to JS)
    check(u, u.hookAdd(uc, h, UC_HOOK_INSN, u.rdtscHook, this.tscParams, 1n, 0n, UC_X86_INS_RDTSC), 'uc_hook_add(rdtsc)');
    check(u, u.hookAdd(uc, h, UC_HOOK_INSN, u.rdtscpHook, this.tscParams, 1n, 0n, UC_X86_INS_RDTSCP), 'uc_hook_add(rdtscp)');
    check(u, u.hookAdd(uc, h, UC_HOOK_INSN, reg(() => this.onSyscall('syscall'), u.protos.syscall), null, 1n, 0n, UC_X86_INS_SYSCALL), 'uc_hook_add(syscall)');
    check(u, u.hookAdd(uc, h, UC_HOOK_INSN, reg(() => this.onSyscall('sysenter'), u.protos.syscall), null, 1n, 0n, UC_X86_INS_SYSENTER), 'uc_hook_add(sysenter)');
    check(u, u.hookAddRaw(uc, h, UC_HOOK_INTR, reg((_: unknown, intno: number) => this.onIntr(intno), u.protos.intr), null, 1n, 0n), 'uc_hook_add(intr)');
  }

  private stop(): void {
    this.hookExit = true;
    this.u.stopHere();
  }

  private onOut(port: number, size: number, value: number): void {
    const io = this.exit.io;
    io.port = port; io.size = size; io.count = 1; io.out = true; io.offset = 0;
    this.scratchView.setUint32(0, value >>> 0, true);
    if (!this.opts.onIo(io)) return;
    this.exit.kind = 'io';
    this.stop();
  }

  private onIn(port: number, size: number): number {
    const io = this.exit.io;
    io.port = port; io.size = size; io.count = 1; io.out = false; io.offset = 0;
    this.scratchView.setUint32(0, 0, true);
    if (!this.opts.onIo(io)) return this.scratchView.getUint32(0, true);
    this.exit.kind = 'io';
    this.stop();
    return 0; // the data goes into AL/AX/EAX when the exit is completed
  }

  /**
   * RDMSR/WRMSR, stopped at the instruction (the native shim's pseudo-exception):
   * the TSC and QEMU's own MSRs are done here and the guest goes on; the rest
   * exit to the hypervisor, which answers in exit.msr. False: exited.
   */
  private msrAccess(write: boolean): boolean {
    this.sync();
    const st = this.st;
    const idx = Number(st.reg(1) & 0xffffffffn); // ECX
    const value = ((st.reg(2) & 0xffffffffn) << 32n) | (st.reg(0) & 0xffffffffn); // EDX:EAX
    const len = this.msrInsnLength();
    if (!this.opts.msrExits(idx) && (idx === IA32_TSC || tcgKnowsMsr(idx))) {
      let result = 0n;
      if (idx === IA32_TSC) {
        if (write) this.tscOffset = value - this.tscNow();
        else result = this.tsc();
      } else {
        if (this.dirty) this.flushState();
        if (write) this.msrWrite(idx, value);
        else result = this.msrRead(idx);
        this.fresh = false;
        this.sync();
      }
      if (!write) {
        st.setReg(0, result & 0xffffffffn);
        st.setReg(2, (result >> 32n) & 0xffffffffn);
      }
      st.eip += BigInt(len);
      this.dirty = true;
      return true;
    }
    const m = this.exit.msr;
    m.index = idx;
    m.value = write ? value : 0n;
    m.error = false;
    this.exitRip = st.eip;
    this.exitLen = len;
    this.exit.kind = write ? 'wrmsr' : 'rdmsr';
    return false;
  }

  /** RDMSR/WRMSR are 0f 32 / 0f 30, after any prefixes (legal, if pointless). */
  private msrInsnLength(): number {
    const b = this.linear.read(BigInt(this.segment('cs').base) + this.st.eip, 15);
    if (!b) return 2;
    let i = 0;
    while (i < 13 && (b[i] === 0x66 || b[i] === 0x67 || b[i] === 0xf2 || b[i] === 0xf3 || b[i] === 0x2e || b[i] === 0x3e || b[i] === 0x26 || b[i] === 0x36 || b[i] === 0x64 || b[i] === 0x65 || (this.longMode64 && (b[i]! & 0xf0) === 0x40))) i++;
    return i + 2;
  }

  private exitLen = 2;

  /**
   * IN or OUT to a port that may exit, stopped at the instruction (the native
   * shim's pseudo-exception; error code: port | size << 16 | IN << 20): onIo
   * decides. An exit leaves RIP past the instruction (an IN's data goes into
   * AL/AX/EAX at the next run); otherwise the access is completed here. False: exited.
   */
  private ioAccess(code: number): boolean {
    this.sync();
    const st = this.st;
    const len = this.ioInsnLength();
    if (len === 0) {
      // INS/OUTS: done during the access, element by element
      this.u.ioPass();
      return true;
    }
    const io = this.exit.io;
    io.port = code & 0xffff; io.size = (code >>> 16) & 7; io.count = 1; io.out = (code & (1 << 20)) === 0; io.offset = 0;
    this.scratchView.setUint32(0, io.out ? Number(st.reg(0) & 0xffffffffn) : 0, true);
    const exits = this.opts.onIo(io);
    st.eip += BigInt(len);
    this.dirty = true;
    if (exits) {
      this.exit.kind = 'io';
      return false;
    }
    if (!io.out) this.completeIn();
    return true;
  }

  /** IN/OUT (e4-e7 ib, ec-ef) after any prefixes: its length; 0 for INS/OUTS (6c-6f). */
  private ioInsnLength(): number {
    const b = this.linear.read(BigInt(this.segment('cs').base) + this.st.eip, 15);
    if (!b) return 1;
    let i = 0;
    while (i < 14 && (b[i] === 0x66 || b[i] === 0x67 || b[i] === 0xf2 || b[i] === 0xf3 || b[i] === 0x2e || b[i] === 0x3e || b[i] === 0x26 || b[i] === 0x36 || b[i] === 0x64 || b[i] === 0x65 || (this.longMode64 && (b[i]! & 0xf0) === 0x40))) i++;
    const op = b[i]!;
    if (op >= 0x6c && op <= 0x6f) return 0;
    return i + (op >= 0xe4 && op <= 0xe7 ? 2 : 1);
  }

  /** An IN's data (in `scratch`) into AL, AX or EAX, as the CPU would write it. */
  private completeIn(): void {
    const old = this.st.reg(0);
    const v = BigInt(this.scratchView.getUint32(0, true));
    const size = this.exit.io.size;
    this.st.setReg(0, size === 4 ? v : size === 2 ? (old & ~0xffffn) | (v & 0xffffn) : (old & ~0xffn) | (v & 0xffn));
    this.dirty = true;
  }

  private onCpuid(): number {
    const leaf = Number(this.regRead64(UC_X86_REG.RAX) & 0xffffffffn);
    const sub = Number(this.regRead64(UC_X86_REG.RCX) & 0xffffffffn);
    // KVM_CPUID_FLAG_SIGNIFCANT_INDEX (1): the subleaf selects the entry.
    const e = this.cpuid.find((x) => x.function === leaf && (!(x.flags & 1) || x.index === sub));
    let ecx = e?.ecx ?? 0;
    // The bits that report the guest's own CR4, as the CPU (and KVM's kvm_update_cpuid_runtime) keep them.
    if (leaf === 1 || (leaf === 7 && sub === 0)) {
      const cr4 = this.regRead64(UC_X86_REG.CR4);
      const [bit, on] = leaf === 1 ? [CPUID1_ECX_OSXSAVE, (cr4 & CR4_OSXSAVE) !== 0n] : [CPUID7_ECX_OSPKE, (cr4 & CR4_PKE) !== 0n];
      ecx = on ? ecx | bit : ecx & ~bit;
    }
    this.regWrite64(UC_X86_REG.RAX, BigInt(e?.eax ?? 0) & 0xffffffffn);
    this.regWrite64(UC_X86_REG.RBX, BigInt(e?.ebx ?? 0) & 0xffffffffn);
    this.regWrite64(UC_X86_REG.RCX, BigInt(ecx) & 0xffffffffn);
    this.regWrite64(UC_X86_REG.RDX, BigInt(e?.edx ?? 0) & 0xffffffffn);
    return 1;
  }


  /** SYSCALL or SYSENTER reached: the engine steps over it without entering the kernel, so stop and enter it here. */
  private onSyscall(insn: 'syscall' | 'sysenter'): void {
    this.syscallPending = insn;
    this.u.stopHere();
  }

  private syscallPending: 'syscall' | 'sysenter' | null = null;

  private onIntr(intno: number): void {
    // The state is exact here (the faulting instruction, or the one after INT n); it is saved again
    // once the engine has stopped (QEMU computes EFLAGS' arithmetic flags on its way out), but CR2
    // may have changed by then (see keepCr2): a #PF's is kept from here.
    this.u.contextSave(this.uc, this.ctx);
    const st = this.st;
    this.hookCr2 = st.cr(2);
    const software = st.exceptionIsInt;
    this.hookEvent = { vector: intno, errorCode: st.errorCode, software, returnRip: software ? st.exceptionNextEip : st.eip };
    this.u.emuStop(this.uc);
  }

  private readonly mmioAccess = { gpa: 0n, len: 0, write: false, data: new Uint8Array(8) };

  mmioRead(gpa: bigint, size: number): bigint {
    const m = this.mmioAccess;
    m.gpa = gpa; m.len = size; m.write = false;
    m.data.fill(0);
    this.opts.onMmio(m);
    let v = 0n;
    for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(m.data[i]!);
    return v;
  }

  mmioWrite(gpa: bigint, size: number, value: bigint): void {
    const m = this.mmioAccess;
    m.gpa = gpa; m.len = size; m.write = true;
    for (let i = 0; i < 8; i++) m.data[i] = i < size ? Number((value >> BigInt(8 * i)) & 0xffn) : 0;
    this.opts.onMmio(m);
    // A device write (an EOI, a TPR, a timer, an IPI) may make an interrupt deliverable or move a
    // deadline: stop at the end of the block so the hypervisor looks, as QEMU does for its devices.
    this.opts.kicker.request();
  }

  // --- time: the TSC runs at the domain's rate from the monotonic clock ---

  private tscNow(): bigint {
    return this.vm.tscAt(process.hrtime.bigint());
  }

  private get tscOffset(): bigint { return this.tscView.getBigInt64(16, true); }
  private set tscOffset(v: bigint) { this.tscView.setBigInt64(16, BigInt.asIntN(64, v), true); }

  private tsc(): bigint {
    return BigInt.asUintN(64, this.tscNow() + this.tscOffset);
  }

  // --- running ---

  run(): VcpuExit {
    const x = this.exit;
    this.complete();
    x.detail = '';
    x.insnBytes = null;
    x.hostLimitation = false;
    this.returned = false;
    for (let events = 0; ; events++) {
      // An NMI first (it outranks external interrupts), whatever IF says; blocked while a handler runs
      // (HF2_NMI_MASK, which the engine's IRET clears; the next run after that delivers it).
      if (this.pendingNmi && !(this.syncedState().hflags2 & HF2_NMI)) {
        this.pendingNmi = false;
        if (!this.deliverEvent({ vector: VEC_NMI, errorCode: null, software: false, returnRip: this.st.eip })) return x;
        this.st.hflags2 |= HF2_NMI;
      }
      if (this.pendingIrq >= 0 && this.readyForInterruptInjection && this.ifFlag) {
        const vector = this.pendingIrq;
        this.pendingIrq = -1;
        if (!this.deliverEvent({ vector, errorCode: null, software: false, returnRip: this.st.eip })) return x;
      }
      // QEMU forgets the last exception when it delivers one (do_interrupt); Unicorn never
      // delivers, so its memory of a #GP would turn the next fault into #DF, then a triple fault.
      this.sync();
      if (this.st.oldException !== -1) {
        this.st.oldException = -1;
        this.dirty = true;
      }
      if (this.dirty) {
        this.u.contextRestore(this.uc, this.ctx);
        this.dirty = false;
      }
      const begin = this.st.eip; // fresh: synced above
      this.fresh = false;
      this.hookExit = false;
      this.hookEvent = null;
      const atUser = this.returnAt === 'user';
      const step = this.returnAt === 'step';
      if (atUser || step) this.opts.kicker.atUser(step ? 'block' : 'user');
      const cr2 = this.st.cr(2);
      // An interrupt waiting for the guest: stop as soon as it can take one (KVM's interrupt
      // window), where QEMU would take it: IF open and no STI or MOV SS shadow.
      const r = this.u.run(this.opts.kicker.flag, this.uc, begin, UNTIL_NEVER, this.requestInterruptWindow ? 1 : 0, this.exitPorts as Uint8Array, 0);
      this.keepCr2(cr2);
      if (atUser || step) this.opts.kicker.atUser(null);
      const toUser = (atUser || step) && this.opts.kicker.userTaken();
      const kicked = (r & RUN_KICKED) !== 0;
      if (this.afterRun(r, toUser)) {
        // An exit that came with a kick: the kick is for the next run (KVM's stays pending too).
        if (kicked && x.kind !== 'interrupted') this.opts.kicker.request();
        return x;
      }
      if (kicked || events >= MAX_INTERNAL_EVENTS || step) {
        x.kind = 'interrupted';
        this.returned = step;
        return x;
      }
    }
  }

  /**
   * After a run (`r`: the native run's result; `toUser`: it stopped where
   * returnAt asked, the guest leaving CPL 0 or the end of a step's block):
   * true when it ended in an exit (in `exit`), false to run on.
   */
  private afterRun(r: number, toUser: boolean): boolean {
    const x = this.exit;
    const err = r & 0xff;
    const kicked = (r & RUN_KICKED) !== 0;
    // Set by the hooks during emuStart (TypeScript cannot see that).
    const ev = this.hookEvent as Event | null;
    if (this.hookExit as boolean) return true;
    const sys = this.syscallPending as 'syscall' | 'sysenter' | null;
    if (sys) {
      this.syscallPending = null;
      if (!this.enterKernel(sys)) return true;
    } else if (ev?.vector === XENODE_MSR_EXIT) {
      if (!this.msrAccess(ev.errorCode === 1)) return true;
    } else if (ev?.vector === XENODE_IO_EXIT) {
      if (!this.ioAccess(ev.errorCode ?? 0)) return true;
    } else if (ev) {
      if (!this.deliverEvent(ev)) return true;
    } else if (err === UC_ERR_OK && toUser) {
      // Stopped where the vCPU goes back to KVM (a kick with it was passed on there too).
      x.kind = 'interrupted';
      this.returned = true;
      return true;
    } else if (err === UC_ERR_OK && kicked) {
      // A kick (or the timer) stopped it. A HLT may have ended the same run: resuming after it
      // is what an interrupt would do, and a guest re-checks its condition and halts again.
      x.kind = 'interrupted';
      return true;
    } else if (err === UC_ERR_OK && r & RUN_WINDOW) {
      x.kind = 'irq-window';
      return true;
    } else if (err === UC_ERR_OK && this.afterHlt()) {
      x.kind = 'hlt';
      return true;
    } else if (err === UC_ERR_OK) {
      // Stopped with nothing to show for it: resume (the loop goes round).
    } else if (err === UC_ERR_INSN_INVALID) {
      this.sync();
      if (this.isVmcall()) {
        this.st.eip += 3n;
        this.dirty = true;
        x.kind = 'hypercall';
        return true;
      }
      if (!this.deliverEvent({ vector: VEC_UD, errorCode: null, software: false, returnRip: this.st.eip })) return true;
    } else {
      x.kind = 'failure';
      x.detail = `the software CPU stopped: ${this.u.strerror(err)}`;
      return true;
    }
    return false;
  }

  /**
   * After a run: Unicorn looks up the translation of the `until` address when
   * it stops, and outside 64-bit mode that lookup's failure writes CR2 as a
   * page fault would (measured: CR2 became `until` - 1), though the guest took
   * no fault. A CR2 the guest set or a fault wrote is never that value.
   */
  private keepCr2(before: bigint): void {
    const ev = this.hookEvent as Event | null;
    if (ev?.vector === VEC_PF) this.regWrite64(UC_X86_REG.CR2, this.hookCr2);
    else if (this.regRead64(UC_X86_REG.CR2) === UNTIL_NEVER - 1n) this.regWrite64(UC_X86_REG.CR2, before);
  }

  /** CR2 when the last exception reached the intr hook. */
  private hookCr2 = 0n;

  /** Completes the last exit as the CPU would (KVM does the same at the next KVM_RUN). */
  private complete(): void {
    const x = this.exit;
    if (x.kind === 'io' && !x.io.out) {
      this.sync();
      this.completeIn();
    } else if (x.kind === 'rdmsr' || x.kind === 'wrmsr') {
      this.sync();
      if (x.msr.error) {
        this.st.eip = this.exitRip;
        this.pendingFault = { vector: VEC_GP, errorCode: 0, software: false, returnRip: this.exitRip };
      } else {
        if (x.kind === 'rdmsr') {
          this.st.setReg(0, x.msr.value & 0xffffffffn);
          this.st.setReg(2, (x.msr.value >> 32n) & 0xffffffffn);
        }
        this.st.eip = this.exitRip + BigInt(this.exitLen);
      }
      this.dirty = true;
    }
    x.kind = 'interrupted';
    if (this.pendingFault) {
      const f = this.pendingFault;
      this.pendingFault = null;
      this.deliverEvent(f);
    }
  }

  private pendingFault: Event | null = null;

  /** Completes a SYSCALL or SYSENTER the engine stepped over (RIP is after it); false as deliverEvent. */
  private enterKernel(insn: 'syscall' | 'sysenter'): boolean {
    const entered = insn === 'syscall'
      ? enterSyscall(this.syncedState(), { star: this.msrRead(MSR_STAR), lstar: this.msrRead(MSR_LSTAR), cstar: this.msrRead(MSR_CSTAR), fmask: this.msrRead(MSR_SYSCALL_MASK) })
      : enterSysenter(this.syncedState(), { cs: this.msrRead(MSR_SYSENTER_CS), esp: this.msrRead(MSR_SYSENTER_ESP), eip: this.msrRead(MSR_SYSENTER_EIP) });
    this.dirty = true;
    if (entered) return true;
    // #UD (EFER.SCE clear) or #GP(0) (SYSENTER_CS is 0), at the instruction (both are 2 bytes: 0f 05, 0f 34)
    const rip = this.st.eip - 2n;
    this.st.eip = rip;
    return this.deliverEvent(insn === 'syscall'
      ? { vector: VEC_UD, errorCode: null, software: false, returnRip: rip }
      : { vector: VEC_GP, errorCode: 0, software: false, returnRip: rip });
  }

  /** The saved state, current (the MSR reads above go to the engine, not to it). */
  private syncedState(): X86State {
    this.sync();
    return this.st;
  }

  /** Delivers through the IDT; false (and a 'shutdown' exit) on a triple fault. */
  private deliverEvent(ev: Event): boolean {
    this.sync();
    const r = deliver(this.st, this.system, ev);
    this.dirty = true;
    if (!r.ok) {
      this.exit.kind = 'shutdown';
      this.exit.detail = r.why;
      return false;
    }
    return true;
  }

  /**
   * Linear memory as delivery reaches it: the IDT, GDT, TSS and the new stack
   * are supervisor accesses whatever the CPL (SDM vol. 3, 4.6.1), but the
   * engine's page walk takes its privilege from the CPL in hflags, so the walk
   * is done with CPL 0 and the saved CPL put back (the state goes back to the
   * engine before it runs again).
   */
  private supervisor<T>(access: () => T): T {
    const hf = this.st.hflags;
    if ((hf & 3) === 0) return access();
    this.st.hflags = hf & ~3;
    this.dirty = true;
    try {
      return access();
    } finally {
      this.st.hflags = hf;
      this.dirty = true;
    }
  }

  /** Linear memory at the current privilege (instruction bytes). */
  private readonly linear = {
    read: (addr: bigint, len: number): Uint8Array | null => {
      if (this.dirty) this.flushState();
      const b = new Uint8Array(len);
      return this.u.vmemRead(this.uc, addr, UC_PROT_READ, b, len) === UC_ERR_OK ? b : null;
    },
    write: (addr: bigint, data: Uint8Array): boolean => {
      if (this.dirty) this.flushState();
      return this.u.vmemWrite(this.uc, addr, UC_PROT_WRITE, data, data.length) === UC_ERR_OK;
    },
  };

  /** Linear memory as event delivery reaches it (supervisor accesses). */
  private readonly system = {
    read: (addr: bigint, len: number): Uint8Array | null => this.supervisor(() => this.linear.read(addr, len)),
    write: (addr: bigint, data: Uint8Array): boolean => this.supervisor(() => this.linear.write(addr, data)),
  };

  /** Paging in force is the saved state's (CR3 and all): hand the engine the state before walking with it. */
  private flushState(): void {
    this.u.contextRestore(this.uc, this.ctx);
    this.dirty = false;
  }

  private isVmcall(): boolean {
    const b = this.linear.read(BigInt(this.segment('cs').base) + this.st.eip, 3);
    // 0f 01 c1 vmcall (Intel), 0f 01 d9 vmmcall (AMD)
    return b !== null && b[0] === 0x0f && b[1] === 0x01 && (b[2] === 0xc1 || b[2] === 0xd9);
  }

  /** Whether the instruction before RIP is a HLT (a kick and a HLT may end the same run). */
  private afterHlt(): boolean {
    this.sync();
    const b = this.linear.read(BigInt(this.segment('cs').base) + this.st.eip - 1n, 1);
    return b !== null && b[0] === 0xf4;
  }

  // --- state ---

  private sync(): void {
    if (this.fresh) return;
    if (this.dirty) throw new UnicornError('software CPU: saved state changed while stale');
    this.u.contextSave(this.uc, this.ctx);
    this.fresh = true;
  }

  reg(i: number): bigint {
    this.sync();
    if (i === REG.rip) return this.st.eip;
    if (i === REG.rflags) return this.st.eflags;
    return this.st.reg(QEMU_REG_OF[i]!);
  }

  setReg(i: number, v: bigint): void {
    this.sync();
    if (i === REG.rip) this.st.eip = v;
    else if (i === REG.rflags) this.st.eflags = v;
    else this.st.setReg(QEMU_REG_OF[i]!, v);
    this.dirty = true;
  }

  get rip(): bigint { return this.reg(REG.rip); }
  set rip(v: bigint) { this.setReg(REG.rip, v); }
  get cr0(): number { this.sync(); return Number(this.st.cr(0) & 0xffffffffn); }
  get cr2(): bigint { this.sync(); return this.st.cr(2); }
  get cr3(): bigint { this.sync(); return this.st.cr(3); }

  descriptorTable(which: 'gdt' | 'idt'): { base: bigint; limit: number } {
    this.sync();
    const c = this.st.seg(which);
    return { base: c.base, limit: c.limit & 0xffff };
  }
  get cr4(): number { this.sync(); return Number(this.st.cr(4) & 0xffffffffn); }
  get efer(): number { this.sync(); return Number(this.st.efer & 0xffffffffn); }
  get cpl(): number { this.sync(); return this.st.hflags & 3; }
  get longMode64(): boolean { this.sync(); return (this.st.hflags & HF_CS64) !== 0; }
  get readyForInterruptInjection(): boolean { this.sync(); return (this.st.hflags & HF_INHIBIT_IRQ) === 0; }
  get ifFlag(): boolean { this.sync(); return (this.st.eflags & EFLAGS_IF) !== 0n; }

  segment(name: SegName): Segment {
    this.sync();
    const c = this.st.seg(name);
    const f = c.flags;
    return {
      base: Number(c.base), limit: c.limit, selector: c.selector, type: (f >>> DESC_TYPE_SHIFT) & 0xf,
      present: f & DESC_P ? 1 : 0, dpl: (f >>> DESC_DPL_SHIFT) & 3, db: f & DESC_B ? 1 : 0, s: f & DESC_S ? 1 : 0,
      l: f & DESC_L ? 1 : 0, g: f & DESC_G ? 1 : 0,
    };
  }

  setInitialState(s: InitialState): void {
    const u = this.u;
    if (this.dirty) this.flushState();
    // EFER first (CR0.PG with EFER.LME activates long mode), then the control registers through
    // the API (they flush the TLB and update QEMU's derived flags), then the rest in the saved state.
    this.fresh = false;
    this.sync();
    this.st.efer = BigInt(s.efer);
    u.contextRestore(this.uc, this.ctx);
    this.regWrite64(UC_X86_REG.CR4, BigInt(s.cr4));
    this.regWrite64(UC_X86_REG.CR3, BigInt(s.cr3 ?? 0));
    this.regWrite64(UC_X86_REG.CR0, BigInt(s.cr0));
    this.fresh = false;
    this.sync();
    const st = this.st;
    for (let i = 0; i < 16; i++) st.setReg(i, 0n);
    for (const [k, v] of Object.entries(s.regs) as [keyof typeof REG, bigint][]) {
      if (k === 'rip') st.eip = v;
      else if (k === 'rflags') st.eflags = v;
      else st.setReg(QEMU_REG_OF[REG[k]]!, v);
    }
    if (s.regs.rflags === undefined) st.eflags = 2n;
    for (const [name, seg] of Object.entries(s.segs) as [SegName, Segment & { unusable?: number }][]) {
      const flags = seg.unusable ? 0 : segFlags(seg);
      if (name in SEGS || name === 'tr' || name === 'ldt') st.setSeg(name as keyof typeof SEGS, { selector: seg.selector, base: BigInt(seg.base), limit: seg.limit, flags });
    }
    st.setSeg('gdt', { selector: 0, base: BigInt(s.gdt?.base ?? 0), limit: s.gdt?.limit ?? 0xffff, flags: 0 });
    st.setSeg('idt', { selector: 0, base: BigInt(s.idt?.base ?? 0), limit: s.idt?.limit ?? 0xffff, flags: 0 });
    st.setCr(2, 0n);
    st.xcr0 = XFEATURE.x87; // XCR0 after reset
    st.hflags &= ~HF_INHIBIT_IRQ;
    st.recomputeSegmentFlags();
    this.dirty = true;
    this.pendingIrq = -1;
    this.pendingNmi = false;
    this.pendingFault = null;
    this.exit.kind = 'interrupted';
    this.flushState();
    this.setFpu(emptyFpu()); // x87 and SSE as after reset: every register empty, FNINIT's control word, MXCSR's default
    u.ctl(this.uc, 0x4000000b); // UC_CTL_TLB_FLUSH
  }

  setMsrs(msrs: { index: number; value: bigint }[]): void {
    if (this.dirty) this.flushState();
    for (const m of msrs) {
      if (m.index === IA32_TSC) this.tscOffset = m.value - this.tscNow();
      else this.msrWrite(m.index, m.value);
    }
    this.fresh = false;
  }

  getMsr(index: number): bigint {
    if (index === IA32_TSC) return this.tsc();
    if (this.dirty) this.flushState();
    return this.msrRead(index);
  }

  setCpuid(entries: CpuidEntry[]): void {
    this.cpuid = entries.map((e) => ({ ...e }));
  }

  interrupt(vector: number): void {
    this.pendingIrq = vector;
  }

  nmi(): void {
    this.pendingNmi = true;
  }

  // --- the whole state, for moving to the other CPU (state.ts) ---

  getFpu(): FpuState {
    if (this.dirty) this.flushState(); // the register API reads the engine
    const R = UC_X86_REG;
    const xsave = new Uint8Array(XSAVE.size);
    const dv = new DataView(xsave.buffer);
    const fsw = this.regRead16(R.FPSW);
    const top = (fsw >>> 11) & 7;
    const tags = this.regRead16(R.FPTAG);
    let ftw = 0;
    for (let i = 0; i < 8; i++) if (((tags >>> (2 * i)) & 3) !== 3) ftw |= 1 << i;
    dv.setUint16(XSAVE.fcw, this.regRead16(R.FPCW), true);
    dv.setUint16(XSAVE.fsw, fsw, true);
    dv.setUint8(XSAVE.ftw, ftw);
    dv.setUint16(XSAVE.fop, this.regRead16(R.FOP), true);
    dv.setBigUint64(XSAVE.fip, this.regRead64(R.FIP), true);
    dv.setBigUint64(XSAVE.fdp, this.regRead64(R.FDP), true);
    dv.setUint32(XSAVE.mxcsr, this.regRead32(R.MXCSR), true);
    dv.setUint32(XSAVE.mxcsrMask, 0xffff, true);
    const b = new Uint8Array(32);
    for (let i = 0; i < 8; i++) {
      // FXSAVE keeps ST(i), the register TOP + i
      this.u.regRead(this.uc, R.FP0 + ((top + i) & 7), b);
      xsave.set(b.subarray(0, 10), XSAVE.st + 16 * i);
    }
    for (let i = 0; i < 16; i++) {
      this.u.regRead(this.uc, R.YMM0 + i, b);
      xsave.set(b.subarray(0, 16), XSAVE.xmm + 16 * i);
      xsave.set(b.subarray(16, 32), XSAVE.ymmHi + 16 * i);
    }
    this.sync();
    const xcr0 = this.st.xcr0;
    dv.setBigUint64(XSAVE.xstateBv, xcr0 & (XFEATURE.x87 | XFEATURE.sse | XFEATURE.avx), true);
    return { xsave, xcr0 };
  }

  setFpu(f: FpuState): void {
    this.sync();
    this.st.xcr0 = f.xcr0;
    this.flushState();
    const R = UC_X86_REG;
    const dv = new DataView(f.xsave.buffer, f.xsave.byteOffset, XSAVE.size);
    const fsw = dv.getUint16(XSAVE.fsw, true);
    const top = (fsw >>> 11) & 7;
    const ftw = dv.getUint8(XSAVE.ftw);
    let tags = 0;
    for (let i = 0; i < 8; i++) if (!(ftw & (1 << i))) tags |= 3 << (2 * i); // only empty or not matters to the CPU
    this.regWrite16(R.FPCW, dv.getUint16(XSAVE.fcw, true));
    this.regWrite16(R.FPSW, fsw);
    this.regWrite16(R.FPTAG, tags);
    this.regWrite16(R.FOP, dv.getUint16(XSAVE.fop, true));
    this.regWrite64(R.FIP, dv.getBigUint64(XSAVE.fip, true));
    this.regWrite64(R.FDP, dv.getBigUint64(XSAVE.fdp, true));
    this.regWrite32(R.MXCSR, dv.getUint32(XSAVE.mxcsr, true));
    const b = new Uint8Array(32);
    for (let i = 0; i < 8; i++) {
      b.fill(0);
      b.set(f.xsave.subarray(XSAVE.st + 16 * i, XSAVE.st + 16 * i + 10));
      this.u.regWrite(this.uc, R.FP0 + ((top + i) & 7), b);
    }
    for (let i = 0; i < 16; i++) {
      b.set(f.xsave.subarray(XSAVE.xmm + 16 * i, XSAVE.xmm + 16 * i + 16), 0);
      b.set(f.xsave.subarray(XSAVE.ymmHi + 16 * i, XSAVE.ymmHi + 16 * i + 16), 16);
      this.u.regWrite(this.uc, R.YMM0 + i, b);
    }
    this.fresh = false;
  }

  getState(): VcpuState {
    this.complete();
    this.sync();
    const st = this.st;
    const regs: bigint[] = [];
    for (let i = 0; i < 18; i++) regs.push(this.reg(i));
    const segs = {} as Record<SegName, SegmentState>;
    for (const n of SEG_NAMES) {
      const f = st.seg(n as keyof typeof SEGS).flags;
      segs[n] = { ...this.segment(n), avl: f & DESC_AVL ? 1 : 0, unusable: f & DESC_P ? 0 : 1 };
    }
    const dt = (w: 'gdt' | 'idt') => { const c = st.seg(w); return { base: c.base, limit: c.limit & 0xffff }; };
    const out: VcpuState = {
      regs, segs, gdt: dt('gdt'), idt: dt('idt'),
      cr0: st.cr(0), cr2: st.cr(2), cr3: st.cr(3), cr4: st.cr(4), cr8: 0n, efer: st.efer,
      dr: [st.dr(0), st.dr(1), st.dr(2), st.dr(3)], dr6: st.dr(6), dr7: st.dr(7),
      msrs: new Map(), tsc: 0n, tscNs: 0n, fpu: this.getFpu(),
      events: {
        pendingInterrupt: this.pendingIrq,
        interruptShadow: (st.hflags & HF_INHIBIT_IRQ) !== 0,
        nmiMasked: (st.hflags2 & HF2_NMI) !== 0,
        nmiPending: this.pendingNmi,
      },
    };
    out.cr8 = this.regRead64(UC_X86_REG.CR8);
    for (const i of CPU_MSR_LIST) out.msrs.set(i, this.msrRead(i));
    out.tscNs = process.hrtime.bigint();
    out.tsc = BigInt.asUintN(64, this.vm.tscAt(out.tscNs) + this.tscOffset);
    return out;
  }

  setState(s: VcpuState, o: { keepTsc?: boolean } = {}): void {
    const u = this.u;
    if (this.dirty) this.flushState();
    // As setInitialState: EFER, then the control registers through the API (QEMU derives flags and
    // flushes its TLB there), then the rest in the saved state.
    this.fresh = false;
    this.sync();
    this.st.efer = s.efer;
    u.contextRestore(this.uc, this.ctx);
    this.regWrite64(UC_X86_REG.CR4, s.cr4);
    this.regWrite64(UC_X86_REG.CR3, s.cr3);
    this.regWrite64(UC_X86_REG.CR0, s.cr0);
    this.regWrite64(UC_X86_REG.CR8, s.cr8);
    this.fresh = false;
    this.sync();
    const st = this.st;
    for (let i = 0; i < 16; i++) st.setReg(QEMU_REG_OF[i]!, s.regs[i]!);
    st.eip = s.regs[REG.rip]!;
    st.eflags = s.regs[REG.rflags]!;
    for (const n of SEG_NAMES) {
      const g = s.segs[n];
      // QEMU keeps an unusable segment as one whose P bit is clear (as its KVM code does)
      const flags = segFlags({ ...g, present: g.present && !g.unusable ? 1 : 0 });
      st.setSeg(n as keyof typeof SEGS, { selector: g.selector, base: BigInt(g.base), limit: g.limit, flags });
    }
    st.setSeg('gdt', { selector: 0, base: s.gdt.base, limit: s.gdt.limit, flags: 0 });
    st.setSeg('idt', { selector: 0, base: s.idt.base, limit: s.idt.limit, flags: 0 });
    st.setCr(2, s.cr2);
    s.dr.forEach((v, i) => st.setDr(i, v));
    st.setDr(6, s.dr6);
    st.setDr(7, s.dr7);
    st.hflags = s.events.interruptShadow ? st.hflags | HF_INHIBIT_IRQ : st.hflags & ~HF_INHIBIT_IRQ;
    st.hflags2 = s.events.nmiMasked ? st.hflags2 | HF2_NMI : st.hflags2 & ~HF2_NMI;
    st.recomputeSegmentFlags();
    this.dirty = true;
    this.flushState();
    this.setFpu(s.fpu);
    for (const [i, v] of s.msrs) this.msrWrite(i, v);
    this.fresh = false; // the MSRs went into the engine, not the saved state
    if (!o.keepTsc) this.tscOffset = s.tsc - this.vm.tscAt(s.tscNs);
    this.pendingIrq = s.events.pendingInterrupt;
    this.pendingNmi = s.events.nmiPending;
    this.pendingFault = null;
    this.exit.kind = 'interrupted';
    u.ctl(this.uc, 0x4000000b); // UC_CTL_TLB_FLUSH
  }

  // --- the register API, for hooks (the saved state is stale while the engine runs) ---

  private regRead64(id: number): bigint {
    this.u.regRead(this.uc, id, this.regBuf);
    return this.regView.getBigUint64(0, true);
  }

  private regRead32(id: number): number {
    this.u.regRead(this.uc, id, this.regBuf);
    return this.regView.getUint32(0, true);
  }

  private regRead16(id: number): number {
    this.u.regRead(this.uc, id, this.regBuf);
    return this.regView.getUint16(0, true);
  }

  private regWrite64(id: number, v: bigint): void {
    this.regScratchView.setBigUint64(0, BigInt.asUintN(64, v), true);
    this.u.regWrite(this.uc, id, this.regScratch);
  }

  private regWrite32(id: number, v: number): void {
    this.regScratchView.setUint32(0, v >>> 0, true);
    this.u.regWrite(this.uc, id, this.regScratch);
  }

  private regWrite16(id: number, v: number): void {
    this.regScratchView.setUint16(0, v, true);
    this.u.regWrite(this.uc, id, this.regScratch);
  }

  private msrRead(index: number): bigint {
    const b = new Uint8Array(16);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, index, true);
    this.viaQemu(() => this.u.regRead(this.uc, UC_X86_REG.MSR, b));
    return dv.getBigUint64(8, true);
  }

  private msrWrite(index: number, value: bigint): void {
    const b = new Uint8Array(16);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, index, true);
    dv.setBigUint64(8, value, true);
    this.viaQemu(() => this.u.regWrite(this.uc, UC_X86_REG.MSR, b));
  }

  /** MSR access through the API goes to QEMU's helpers, not to the shim's exit (msr_exit.c). */
  private viaQemu(f: () => void): void {
    this.u.passthrough(1);
    try {
      f();
    } finally {
      this.u.passthrough(0);
    }
  }

  release(): void {
    this.close();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.vm.removeEngine(this);
    this.u.contextFree(this.ctx);
    this.u.engineForget(this.uc);
    this.u.close(this.uc);
    for (const cb of this.callbacks) koffi.unregister(cb as never);
  }
}
