// One vCPU on two CPUs: KVM, with the software CPU beside it for what KVM
// cannot run (QEMU's `-accel kvm -accel tcg`, but per instruction rather than
// per machine). The hypervisor sees one AccelVcpu; underneath, the state moves
// between the two (state.ts) at these points:
// - KVM reports that it could not emulate an instruction (the host's
//   limitation, KVM_EXIT_INTERNAL_ERROR/EMULATION): the software CPU runs it,
//   and the vCPU goes back to KVM after it (or, with `kernelInSoftware`, when
//   the guest next leaves CPL 0).
// - With `kernelInSoftware` (a host whose KVM emulates guest CPL 0 code, at
//   ~1 us an instruction): CPL 0 code runs in the software CPU and CPL 3 code in
//   KVM. The software CPU stops before the first instruction outside CPL 0;
//   KVM is given hardware breakpoints on the kernel's entry points from CPL 3
//   (SYSCALL's target, the #PF/#UD/#GP gates) and stops there; any other
//   entry is seen at KVM's next exit, which shows the vCPU at CPL 0; an
//   interrupt the hypervisor injects (whose handler is CPL 0 code) is
//   delivered by the software CPU.
// Nothing here knows Xen.

import type { AccelVcpu, CpuidEntry, InitialState, Segment, SegName, VcpuExit } from './vcpu.js';
import type { FpuState, VcpuState } from './state.js';

/** The software CPU as a second home for a vCPU. */
export interface SoftwareVcpu extends AccelVcpu {
  /** When run() gives the vCPU back: never, before the first instruction outside CPL 0, or after one instruction (at its block's end at the latest). */
  returnAt: 'never' | 'user' | 'step';
  /** The last run() ended because returnAt said so ('interrupted'): the vCPU goes back to KVM. */
  readonly returned: boolean;
}

export interface HybridPolicy {
  /** Run guest CPL 0 code in the software CPU (this host's KVM emulates it). */
  kernelInSoftware: boolean;
  /**
   * Guest memory by linear address, as the kernel sees it (for the entry
   * points below): with it, KVM is given hardware breakpoints on the kernel's
   * entry points from CPL 3 and stops there, so the kernel runs in the
   * software CPU from its first instruction.
   */
  readKernel?: (s: VcpuState, linear: bigint, len: number) => Uint8Array | null;
}

/** IDT vectors whose gates are the kernel's usual ways in from CPL 3 besides SYSCALL: #PF, #UD (PVM turns INT n into it), #GP. */
const ENTRY_VECTORS = [14, 6, 13];
const MSR_LSTAR = 0xc0000082;
const EFER_LMA = 0x400n;

/**
 * Where a kernel is entered from CPL 3 without the hypervisor injecting
 * anything (at most 4, the hardware breakpoints there are): SYSCALL's target
 * (LSTAR) and the gates of ENTRY_VECTORS, read from the guest's IDT.
 */
export function kernelEntryPoints(s: VcpuState, read: (linear: bigint, len: number) => Uint8Array | null): bigint[] {
  const out: bigint[] = [];
  const long = (s.efer & EFER_LMA) !== 0n;
  const lstar = s.msrs.get(MSR_LSTAR) ?? 0n;
  if (long && lstar !== 0n) out.push(lstar);
  const size = long ? 16 : 8;
  for (const v of ENTRY_VECTORS) {
    if (out.length >= 4 || v * size + size - 1 > s.idt.limit) continue;
    const g = read(s.idt.base + BigInt(v * size), size);
    if (!g) continue;
    const dv = new DataView(g.buffer, g.byteOffset, size);
    if (!(dv.getUint8(5) & 0x80)) continue; // not present
    let off = BigInt(dv.getUint16(0, true) | (dv.getUint16(6, true) << 16)) & 0xffffffffn;
    if (long) off |= BigInt(dv.getUint32(8, true)) << 32n;
    if (!out.includes(off)) out.push(off);
  }
  return out;
}

export interface HybridStats {
  /** instructions KVM could not run, run by the software CPU */
  fallbacks: number;
  /** moves KVM -> software CPU and back */
  toSoftware: number;
  toKvm: number;
  /** moves to the software CPU at a kernel entry point KVM stopped at */
  atEntry: number;
}

export class HybridVcpu implements AccelVcpu {
  private cur: AccelVcpu;
  private window = false;
  /** Back to KVM at the next run (a stepped instruction ended in an exit, now answered). */
  private backToKvm = false;
  readonly stats: HybridStats = { fallbacks: 0, toSoftware: 0, toKvm: 0, atEntry: 0 };
  /** The breakpoints KVM has (to set them only when the entry points change). */
  private breakpoints: bigint[] = [];
  private breakpointsWork = true;
  /** Told of each instruction KVM could not run (`exit.detail`, RIP, the bytes if KVM gave them). */
  onFallback: ((x: VcpuExit, rip: bigint) => void) | null = null;

  constructor(readonly kvm: AccelVcpu, readonly soft: SoftwareVcpu, readonly policy: HybridPolicy) {
    this.cur = kvm;
  }

  get id(): number { return this.kvm.id; }
  /** The CPU that holds the vCPU now. */
  get accel(): 'kvm' | 'tcg' { return this.cur.accel; }
  get exit(): VcpuExit { return this.cur.exit; }

  run(): VcpuExit {
    for (;;) {
      if (this.cur === this.soft) {
        if (this.backToKvm) {
          this.backToKvm = false;
          this.move(this.kvm, 'never');
          continue;
        }
        const x = this.soft.run();
        if (this.soft.returned) {
          this.move(this.kvm, 'never');
          continue;
        }
        // A stepped instruction that exited: it is complete once the hypervisor has answered.
        if (this.soft.returnAt === 'step') this.backToKvm = true;
        return x;
      }
      if (this.policy.kernelInSoftware && this.kvm.cpl === 0) {
        this.move(this.soft, 'user');
        continue;
      }
      const x = this.kvm.run();
      if (x.kind === 'debug') {
        // at a kernel entry point: the kernel runs in the software CPU from here
        this.stats.atEntry++;
        this.move(this.soft, 'user');
        continue;
      }
      if (x.kind === 'failure' && x.hostLimitation) {
        this.stats.fallbacks++;
        this.onFallback?.(x, this.kvm.rip);
        // Kernel code stays in the software CPU; anything else goes back after the instruction.
        this.move(this.soft, this.policy.kernelInSoftware && this.kvm.cpl === 0 ? 'user' : 'step');
        continue;
      }
      return x;
    }
  }

  /** Moves the vCPU's state to `to` (the TSC stays KVM's: the software CPU is set to it and follows it at the same rate). */
  private move(to: AccelVcpu, returnAt: SoftwareVcpu['returnAt']): void {
    const from = this.cur;
    const s = from.getState();
    if (to === this.kvm) {
      to.setState(s, { keepTsc: true });
      this.stats.toKvm++;
      if (this.policy.kernelInSoftware && this.policy.readKernel) this.watchEntries(s);
    } else {
      this.soft.returnAt = returnAt;
      to.setState(s);
      this.stats.toSoftware++;
    }
    from.requestInterruptWindow = false;
    to.requestInterruptWindow = this.window;
    this.cur = to;
  }

  /** Gives KVM breakpoints on the kernel's entry points (if this host's KVM takes them). */
  private watchEntries(s: VcpuState): void {
    if (!this.breakpointsWork || !this.kvm.setGuestBreakpoints) return;
    const read = this.policy.readKernel!;
    const want = kernelEntryPoints(s, (a, n) => read(s, a, n));
    if (want.length === this.breakpoints.length && want.every((a, i) => a === this.breakpoints[i])) return;
    try {
      this.kvm.setGuestBreakpoints(want);
      this.breakpoints = want;
    } catch {
      this.breakpointsWork = false; // the host's KVM has no guest debugging: exits show CPL 0 instead
    }
  }

  reg(i: number): bigint { return this.cur.reg(i); }
  setReg(i: number, v: bigint): void { this.cur.setReg(i, v); }
  get rip(): bigint { return this.cur.rip; }
  set rip(v: bigint) { this.cur.rip = v; }
  get cr0(): number { return this.cur.cr0; }
  get cr2(): bigint { return this.cur.cr2; }
  get cr3(): bigint { return this.cur.cr3; }
  get cr4(): number { return this.cur.cr4; }
  get efer(): number { return this.cur.efer; }
  get cpl(): number { return this.cur.cpl; }
  get longMode64(): boolean { return this.cur.longMode64; }
  segment(name: SegName): Segment { return this.cur.segment(name); }
  descriptorTable(which: 'gdt' | 'idt'): { base: bigint; limit: number } { return this.cur.descriptorTable(which); }

  /** A new start (boot, VCPUOP_initialise) is KVM's; the kernel moves over at the first run where it should. */
  setInitialState(st: InitialState): void {
    if (this.cur !== this.kvm) {
      this.soft.requestInterruptWindow = false;
      this.cur = this.kvm;
    }
    this.backToKvm = false;
    this.kvm.setInitialState(st);
  }

  setMsrs(msrs: { index: number; value: bigint }[]): void { this.cur.setMsrs(msrs); }
  getMsr(index: number): bigint { return this.cur.getMsr(index); }

  setCpuid(entries: CpuidEntry[]): void {
    this.kvm.setCpuid(entries);
    this.soft.setCpuid(entries);
  }

  get readyForInterruptInjection(): boolean { return this.cur.readyForInterruptInjection; }
  get ifFlag(): boolean { return this.cur.ifFlag; }
  get requestInterruptWindow(): boolean { return this.window; }
  set requestInterruptWindow(v: boolean) {
    this.window = v;
    this.cur.requestInterruptWindow = v;
  }

  interrupt(vector: number): void {
    this.toHandlerCpu().interrupt(vector);
  }

  nmi(): void {
    this.toHandlerCpu().nmi();
  }

  /** The CPU an event's handler runs on: it is kernel code, so the software CPU where that runs kernel code. */
  private toHandlerCpu(): AccelVcpu {
    if (this.policy.kernelInSoftware && this.cur === this.kvm) this.move(this.soft, 'user');
    return this.cur;
  }

  getFpu(): FpuState { return this.cur.getFpu(); }
  setFpu(f: FpuState): void { this.cur.setFpu(f); }
  getState(): VcpuState { return this.cur.getState(); }
  setState(s: VcpuState, o?: { keepTsc?: boolean }): void { this.cur.setState(s, o); }

  release(): void {
    this.kvm.release();
    this.soft.close();
  }

  close(): void {
    this.kvm.close();
    this.soft.close();
  }
}
