// The accelerator boundary: what the hypervisor needs from a CPU that runs
// guest code, whichever CPU it is (KVM, or the software CPU beside it). Like
// QEMU's accel ops and Firecracker's Vcpu, the hypervisor drives one
// interface: set up state, run until an exit, read the typed exit, complete it
// (data for an IN or an MMIO read, an MSR's value or #GP), inject an
// interrupt. Nothing here knows Xen; it is x86 as a guest sees it.

import type { FpuState, VcpuState } from './state.js';

/** General registers in the order of struct kvm_regs (asm/kvm.h), which both CPUs use as indices. */
export const REG = {
  rax: 0, rbx: 1, rcx: 2, rdx: 3, rsi: 4, rdi: 5, rsp: 6, rbp: 7,
  r8: 8, r9: 9, r10: 10, r11: 11, r12: 12, r13: 13, r14: 14, r15: 15,
  rip: 16, rflags: 17,
} as const;
export type RegName = keyof typeof REG;

export type SegName = 'cs' | 'ds' | 'es' | 'fs' | 'gs' | 'ss' | 'tr' | 'ldt';

/** A segment register with its hidden part, as struct kvm_segment spells it (flag fields 0/1). */
export interface Segment {
  base: number;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
}

export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/** The register state a vCPU is started with (a boot entry, VCPUOP_initialise). */
export interface InitialState {
  regs: Partial<Record<RegName, bigint>>;
  segs: Partial<Record<SegName, Segment & { avl?: number; unusable?: number }>>;
  gdt?: { base: number; limit: number };
  idt?: { base: number; limit: number };
  cr0: number;
  cr3?: number;
  cr4: number;
  efer: number;
}

/** Why a run stopped. */
export type ExitKind =
  /** port I/O: `io` describes it; for an IN, put the data in io.data before the next run */
  | 'io'
  /** an access to guest-physical memory that is not RAM: `mmio` describes it */
  | 'mmio'
  /** RDMSR / WRMSR the hypervisor asked to see: answer in msr.value / msr.error */
  | 'rdmsr' | 'wrmsr'
  /** HLT with the vCPU's interrupts as the guest left them */
  | 'hlt'
  /** the guest can take an interrupt now (asked for with requestInterruptWindow) */
  | 'irq-window'
  /** a kick or the pCPU timer stopped it */
  | 'interrupted'
  /** VMCALL / VMMCALL (the CPU could see it): RIP is past the instruction */
  | 'hypercall'
  /** a breakpoint set with setGuestBreakpoints was reached (RIP is at it, not yet run) */
  | 'debug'
  /** triple fault */
  | 'shutdown'
  /** the CPU could not run the guest's instruction; `detail` says which and why */
  | 'failure';

/**
 * One exit, reused for every run of a vCPU (no allocation per exit). Only the
 * part named by `kind` is meaningful.
 */
export class VcpuExit {
  kind: ExitKind = 'interrupted';
  readonly io: { port: number; size: number; count: number; out: boolean; data: Uint8Array; offset: number } = { port: 0, size: 0, count: 0, out: false, data: new Uint8Array(0), offset: 0 };
  readonly mmio: { gpa: bigint; len: number; write: boolean; data: Uint8Array } = { gpa: 0n, len: 0, write: false, data: new Uint8Array(8) };
  readonly msr = { index: 0, value: 0n, error: false };
  /** For 'failure': what could not be run, for the crash reason. */
  detail = '';
  /** For 'failure': the fault lies with the host's CPU (its KVM cannot emulate this), not the guest. */
  hostLimitation = false;
  /** For 'failure': the instruction's bytes when the CPU reported them (else the hypervisor reads them). */
  insnBytes: Uint8Array | null = null;
}

/**
 * Where a CPU puts guest-physical memory: the domain's RAM and frames, slot by
 * slot (KVM memory slots; the software CPU maps the same host memory).
 */
export interface GuestMemorySlots {
  setUserMemoryRegion(slot: number, guestPhys: number, size: number, hostAddr: bigint, flags?: number): void;
  deleteMemoryRegion(slot: number): void;
}

/** A vCPU of either CPU. Register reads after an exit see the guest's state at that exit. */
export interface AccelVcpu {
  readonly id: number;
  /** Which CPU runs it: 'kvm' or 'tcg'. */
  readonly accel: 'kvm' | 'tcg';
  /** The exit of the last run. */
  readonly exit: VcpuExit;
  /** Runs the guest until the next exit and returns it. */
  run(): VcpuExit;

  reg(i: number): bigint;
  setReg(i: number, v: bigint): void;
  rip: bigint;
  readonly cr0: number;
  readonly cr2: bigint;
  readonly cr3: bigint;
  readonly cr4: number;
  readonly efer: number;
  /** Current privilege level. */
  readonly cpl: number;
  /** True when CS is a 64-bit code segment. */
  readonly longMode64: boolean;
  segment(name: SegName): Segment;
  descriptorTable(which: 'gdt' | 'idt'): { base: bigint; limit: number };

  setInitialState(st: InitialState): void;
  setMsrs(msrs: { index: number; value: bigint }[]): void;
  /** Reads one MSR (IA32_TSC: the guest's TSC now). */
  getMsr(index: number): bigint;
  setCpuid(entries: CpuidEntry[]): void;

  /** An external interrupt can be taken at the next run (IF open, no interrupt shadow). */
  readonly readyForInterruptInjection: boolean;
  readonly ifFlag: boolean;
  requestInterruptWindow: boolean;
  /** Queues an external interrupt, delivered through the guest's IDT at the next run. */
  interrupt(vector: number): void;
  /**
   * Queues an NMI: delivered through IDT vector 2 at the next run whatever IF says, unless an NMI
   * handler is still running (NMIs blocked until its IRET); then it waits for that IRET.
   */
  nmi(): void;

  /** The x87/SSE/AVX state (an XSAVE image, state.ts). */
  getFpu(): FpuState;
  setFpu(f: FpuState): void;
  /**
   * The whole architectural state, for moving the vCPU to the other CPU. An
   * exit still to be completed (an IN's data, an MSR's answer) is completed
   * first, without running guest code, as KVM_RUN with immediate_exit does.
   */
  getState(): VcpuState;
  /** Loads a state taken from either CPU; the next run() starts from it. `keepTsc`: the TSC stays this CPU's own. */
  setState(s: VcpuState, o?: { keepTsc?: boolean }): void;

  /** Instruction breakpoints (at most 4) at which run() stops with 'debug'; [] for none. KVM only. */
  setGuestBreakpoints?(addrs: bigint[]): void;

  /** Forgets the vCPU here without destroying it (another thread holds it). */
  release(): void;
  close(): void;
}
