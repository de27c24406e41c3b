// The local APIC of one vCPU (Xen's xen/arch/x86/hvm/vlapic.c; Intel SDM vol. 3
// ch. 11): xAPIC MMIO page at 0xFEE00000, x2APIC MSRs 0x800-0x8FF, the APIC
// base MSR 0x1B, TSC-deadline MSR 0x6E0, interrupt acceptance (IRR/ISR/TPR/PPR,
// EOI), IPIs through the ICR, the LVT timer, ESR. xenode has no in-kernel
// irqchip, so this model is what a guest that uses its LAPIC (Linux, Solo5,
// HVMOP_set_evtchn_upcall_vector) talks to.
//
// Numbers follow Xen: version 0x00050014 (version 0x14, max LVT entry 5: timer,
// thermal, perf, LINT0, LINT1, error; no CMCI, no directed EOI), bus clock 100 MHz
// (Xen's APIC_BUS_CYCLE_NS = 10, so a guest calibrating its APIC timer gets the
// rate it gets on Xen; Xen publishes no frequency leaf, guests calibrate against
// the pvclock/PIT), sub-word MMIO accesses that fit in one 32-bit register are
// allowed, everything else reads 0 and writes are dropped (vlapic_mmio_read/
// write), per-bit ESR latching with pending errors held outside the register
// page (Xen 4.20's pending_esr), relocating the xAPIC window is refused with
// #GP (guest_wrmsr_apic_base). Where we differ from Xen: the APIC ID is the
// vCPU id (Xen uses 2 * vcpu_id; ours must match CPUID leaf 1 EBX[31:24],
// which src/hv/x86/cpuid.ts sets to the vCPU id), the TSC-deadline mode bit of
// LVTT is writable only when TSC-deadline is offered (as KVM), and x2APIC
// WRMSRs with bits 63:32 set #GP for every register but the ICR (SDM; Xen
// truncates TMICT). Only edge-triggered delivery is modelled (no IOAPIC).
//
// Threads. The registers live in an Int32Array (`shared`, VLAPIC_SHARED_WORDS
// words; pass a view of a SharedArrayBuffer): the 1 KiB register page exactly as
// Xen's hvm_hw_lapic_regs (register at byte offset R is word R/4), then the
// pending ESR bits and the base-MSR flags. Everything another vCPU needs to
// deliver to this one (IRR, SVR, ID, LDR, DFR, base flags, pending ESR) is in
// that view, so acceptInterrupt()/setIrq()/ipiTargets() work from any thread:
// IRR and the pending ESR are changed only with Atomics.or/and, the way Xen uses
// test_and_set_bit on the page. Everything else (ISR, TPR, timer) is changed
// only by the thread running the vCPU, through the Vlapic object.
//
// How the pCPU loop uses it (src/hv/pcpu.ts; the integration is the lead's):
//  1. One Vlapic per vCPU, `shared` carved from the domain's SharedArrayBuffer
//     so other workers can deliver; clock = { now: () => d.now(),
//     guestTsc: () => hw.getMsr(IA32_TSC), tscKhz }. Options x2apic /
//     tscDeadline must match what CPUID leaf 1 ECX bits 21 / 24 say.
//  2. MSR filter: deny 0x1B, 0x6E0 (if offered) and 0x800-0x8FF so they exit
//     to user space. On X86_RDMSR/WRMSR with Vlapic.handlesMsr(index):
//     r = vlapic.rdmsr(index) / vlapic.wrmsr(index, data); error = r.gp ? 1 : 0,
//     data = r.value; then deliver r.ipi (step 4) if not null.
//  3. MMIO exit: off = vlapic.mmioOffset(gpa); off < 0 means not ours (x2APIC
//     mode, hardware-disabled, other address: keep reading all ones). Read:
//     put mmioRead(off, len) little-endian into data[0..len). Write: ipi =
//     mmioWrite(off, len, little-endian value of data[0..len)); deliver it.
//  4. IPI delivery (any thread): views = the domain's vCPU views by vCPU id.
//     mode 'fixed' | 'lowest': for id of ipiTargets(ipi, views):
//       if (acceptInterrupt(views[id], ipi.vector)) wake/kick vCPU id.
//     'nmi': inject an NMI into each target (Xen does; needs KVM_NMI).
//     'init' | 'startup': Xen's vlapic_init_sipi_one (pcpu.ts initSipi):
//       STARTUP starts a vCPU that is not initialised in real mode at
//       vector << 12 (how Linux brings up its secondary CPUs on PVH); INIT
//       of such a vCPU does nothing, INIT of one that has run takes it down,
//       puts its APIC in the INIT state (init()) and leaves it waiting for
//       a STARTUP.
//     'smi' | 'remote-read': log and drop (Xen ignores them).
//     'extint': Xen crashes the domain ("unsupported delivery mode").
//  5. Before each entry, after the CALLBACK_IRQ vector (which Xen checks first,
//     level-triggered on evtchn_upcall_pending): vec = vlapic.pendingVector();
//     if vec >= 0: when ready_for_interrupt_injection && RFLAGS.IF,
//     hw.interrupt(vec) then vlapic.ackInterrupt(vec); else request an
//     interrupt window.
//  6. HVMOP_set_evtchn_upcall_vector: where the event-channel core newly sets a
//     vCPU's evtchn_upcall_pending, call setIrq(view, upcallVector) (any
//     thread; edge, the guest EOIs) and kick that vCPU if it returns true --
//     instead of the level-triggered injection. The edge is requested again
//     when the guest software-enables the APIC with the upcall still pending
//     (config.upcallOnEnable), as after an INIT cleared IRR.
//  7. HLT / SCHEDOP_block: a vCPU is runnable again when pendingVector() >= 0.
//  8. Timers: in the pCPU timer pass, vlapic.tick(now) (true = an interrupt
//     was raised: unblock the vCPU) and earliest(vlapic.nextDeadline()).
//     Any APIC register write may move the deadline: re-arm after APIC exits
//     (timersDirty).
//  9. save(now) / restore(state, now) for save/restore and migration.

/** Register byte offsets in the xAPIC page; the x2APIC MSR is 0x800 + offset / 16. */
export const APIC = {
  ID: 0x020, LVR: 0x030, TASKPRI: 0x080, PROCPRI: 0x0a0, EOI: 0x0b0, LDR: 0x0d0, DFR: 0x0e0, SPIV: 0x0f0,
  ISR: 0x100, TMR: 0x180, IRR: 0x200, ESR: 0x280, CMCI: 0x2f0, ICR: 0x300, ICR2: 0x310,
  LVTT: 0x320, LVTTHMR: 0x330, LVTPC: 0x340, LVT0: 0x350, LVT1: 0x360, LVTERR: 0x370,
  TMICT: 0x380, TMCCT: 0x390, TDCR: 0x3e0, SELF_IPI: 0x3f0,
} as const;

export const APIC_DEFAULT_PHYS_BASE = 0xfee00000n;
export const MSR_IA32_APICBASE = 0x1b;
export const MSR_IA32_TSC_DEADLINE = 0x6e0;
export const MSR_X2APIC_FIRST = 0x800;
export const MSR_X2APIC_LAST = 0x8ff;
export const VLAPIC_VERSION = 0x00050014;
/** ns per APIC bus cycle (Xen: 10, a 100 MHz bus). */
export const APIC_BUS_CYCLE_NS = 10n;

export const APIC_BASE = { BSP: 0x100n, EXTD: 0x400n, ENABLE: 0x800n, ADDR_MASK: 0x000ffffffffff000n } as const;
export const APIC_ESR = { SENDILL: 0x20, RECVILL: 0x40 } as const;
export const APIC_LVT_MASKED = 1 << 16;
export const APIC_SPIV_APIC_ENABLED = 1 << 8;
export const APIC_TIMER_MODE = { ONESHOT: 0, PERIODIC: 0x20000, TSC_DEADLINE: 0x40000, MASK: 0x60000 } as const;
export const APIC_DM = { FIXED: 0, LOWEST: 0x100, SMI: 0x200, REMRD: 0x300, NMI: 0x400, INIT: 0x500, STARTUP: 0x600, EXTINT: 0x700 } as const;
export const APIC_DEST_LOGICAL = 0x800;
export const APIC_INT_ASSERT = 0x4000;
export const APIC_INT_LEVELTRIG = 0x8000;
export const APIC_SHORT = { NONE: 0, SELF: 0x40000, ALLINC: 0x80000, ALLBUT: 0xc0000, MASK: 0xc0000 } as const;

const VECTOR_MASK = 0xff;
const MODE_MASK = 0x700;
const SEND_PENDING = 1 << 12;
const LVT_MASK = APIC_LVT_MASKED | SEND_PENDING | VECTOR_MASK;
const LINT_MASK = LVT_MASK | MODE_MASK | (1 << 13) /* polarity */ | (1 << 14) /* remote IRR */ | (1 << 15) /* level */;
/** Writable bits of each LVT entry, LVTT..LVTERR (vlapic_lvt_mask). */
const LVT_WRITABLE = [LVT_MASK | APIC_TIMER_MODE.MASK, LVT_MASK | MODE_MASK, LVT_MASK | MODE_MASK, LINT_MASK, LINT_MASK, LVT_MASK];
const LVT_NUM = 6;
const SPIV_WRITABLE = 0x3ff; // vector, APIC enable, focus disable (no directed EOI: LVR bit 24 clear)
const ICR_WRITABLE = VECTOR_MASK | MODE_MASK | APIC_DEST_LOGICAL | APIC_INT_ASSERT | APIC_INT_LEVELTRIG | APIC_SHORT.MASK;
const DFR_FLAT = 0xffffffff;
const DFR_CLUSTER = 0x0fffffff;

/** Words of the shared view: the 1 KiB register page, the pending ESR bits, the base-MSR flags. */
export const VLAPIC_SHARED_WORDS = 258;
export const VLAPIC_SHARED_BYTES = VLAPIC_SHARED_WORDS * 4;
const W_PENDING_ESR = 256;
const W_BASE_FLAGS = 257; // APIC base MSR bits 11:0 (BSP, EXTD, ENABLE)

/** TDCR's divisor: 2^(n+1) for n = bits 3,1:0; n = 7 means divide by 1. */
const tdcrDivisor = (tdcr: number): number => 1 << ((((tdcr & 3) | ((tdcr & 8) >> 1)) + 1) & 7);

const BASE_ENABLE = Number(APIC_BASE.ENABLE);
const BASE_EXTD = Number(APIC_BASE.EXTD);

// --- the shared view: usable from any thread ------------------------------

const reg = (v: Int32Array, off: number): number => v[off >> 2]! >>> 0;
const bitWord = (base: number, vec: number): number => (base >> 2) + ((vec >> 5) << 2);

function x2apicMode(v: Int32Array): boolean {
  return (Atomics.load(v, W_BASE_FLAGS) & BASE_EXTD) !== 0;
}

/** Xen's vlapic_enabled: hardware-enabled (base MSR) and software-enabled (SVR bit 8). */
function enabled(v: Int32Array): boolean {
  return (Atomics.load(v, W_BASE_FLAGS) & BASE_ENABLE) !== 0 && (reg(v, APIC.SPIV) & APIC_SPIV_APIC_ENABLED) !== 0;
}

/** Highest set vector of an 8x32-bit register block (ISR/TMR/IRR), or -1. */
function highestVector(v: Int32Array, base: number): number {
  for (let i = 7; i >= 0; i--) {
    const w = Atomics.load(v, (base >> 2) + (i << 2));
    if (w !== 0) return i * 32 + 31 - Math.clz32(w);
  }
  return -1;
}

function testBit(v: Int32Array, base: number, vec: number): boolean {
  return (Atomics.load(v, bitWord(base, vec)) & (1 << (vec & 31))) !== 0;
}

/** Xen's vlapic_error: latch one ESR bit; the first time it is latched, raise LVTERR unless masked. */
function raiseError(v: Int32Array, bit: number): boolean {
  const old = Atomics.or(v, W_PENDING_ESR, bit);
  if (old & bit) return false;
  const lvterr = reg(v, APIC.LVTERR);
  if (lvterr & APIC_LVT_MASKED) return false;
  const vec = lvterr & VECTOR_MASK;
  // An illegal error vector would come back here: fold it into RECVILL instead.
  if (vec < 16) {
    Atomics.or(v, W_PENDING_ESR, APIC_ESR.RECVILL);
    return false;
  }
  return setIrr(v, vec);
}

function setIrr(v: Int32Array, vec: number): boolean {
  // Edge only: the trigger-mode bit is cleared (vlapic_set_irq with trig = 0).
  Atomics.and(v, bitWord(APIC.TMR, vec), ~(1 << (vec & 31)));
  const bit = 1 << (vec & 31);
  return (Atomics.or(v, bitWord(APIC.IRR, vec), bit) & bit) === 0;
}

/**
 * Xen's vlapic_set_irq (edge): marks `vector` pending in the IRR whatever the
 * APIC's enable state, as Xen does for the event-channel upcall vector. A
 * vector below 16 latches "receive illegal vector" in the ESR instead.
 * True when something newly became pending: the caller wakes/kicks the vCPU.
 */
export function setIrq(view: Int32Array, vector: number): boolean {
  if (!Number.isInteger(vector) || vector < 0 || vector > 255) throw new RangeError(`vector ${vector}`);
  if (vector < 16) return raiseError(view, APIC_ESR.RECVILL);
  return setIrr(view, vector);
}

/**
 * Fixed / lowest-priority delivery to the APIC whose shared view this is
 * (vlapic_accept_irq): dropped while the APIC is hardware- or
 * software-disabled. True when the vCPU must be woken/kicked.
 */
export function acceptInterrupt(view: Int32Array, vector: number): boolean {
  if (!enabled(view)) return false;
  return setIrq(view, vector);
}

/** APIC ID as destinations compare it: the 8-bit xAPIC ID or the 32-bit x2APIC ID. */
/**
 * The APIC ID of a vCPU, as its local APIC, CPUID leaf 1 and the MADT report
 * it. (Xen gives vCPU n the ID 2n; here it is n, the same everywhere.)
 */
export function apicIdOfVcpu(vcpuId: number): number {
  return vcpuId;
}

function apicId(v: Int32Array): number {
  const id = reg(v, APIC.ID);
  return x2apicMode(v) ? id : id >>> 24;
}

/** Xen's vlapic_match_logical_addr: does logical destination `mda` name this APIC? */
export function matchesLogical(view: Int32Array, mda: number): boolean {
  const ldr = reg(view, APIC.LDR);
  mda >>>= 0;
  if (x2apicMode(view)) return ldr >>> 16 === mda >>> 16 && (ldr & mda & 0xffff) !== 0;
  const id = ldr >>> 24;
  const m = mda & 0xff;
  switch (reg(view, APIC.DFR)) {
    case DFR_FLAT:
      return (id & m) !== 0;
    case DFR_CLUSTER:
      return id >>> 4 === m >>> 4 && (id & m & 0xf) !== 0;
    default:
      return false; // Xen warns about a bad DFR and matches nothing
  }
}

function ppr(v: Int32Array): number {
  const tpr = reg(v, APIC.TASKPRI);
  const isr = highestVector(v, APIC.ISR);
  const isrv = isr < 0 ? 0 : isr;
  return (tpr & 0xf0) >= (isrv & 0xf0) ? tpr & 0xff : isrv & 0xf0;
}

// --- IPIs --------------------------------------------------------------------

export type IpiMode = 'fixed' | 'lowest' | 'smi' | 'remote-read' | 'nmi' | 'init' | 'startup' | 'extint';
const MODES: readonly IpiMode[] = ['fixed', 'lowest', 'smi', 'remote-read', 'nmi', 'init', 'startup', 'extint'];
export type IpiShorthand = 'none' | 'self' | 'all' | 'others';
const SHORTHANDS: readonly IpiShorthand[] = ['none', 'self', 'all', 'others'];

/** An interprocessor interrupt a guest asked for by writing its ICR (or SELF_IPI). */
export interface Ipi {
  mode: IpiMode;
  vector: number;
  shorthand: IpiShorthand;
  /** Destination mode: logical (LDR/DFR matching) or physical (APIC ID). */
  logical: boolean;
  /** Destination as the sender's mode reads it: ICR bits 63:56 in xAPIC mode, 63:32 in x2APIC mode. */
  dest: number;
  /** The sending vCPU. */
  source: number;
  /** ICR low and high words as written (for logs). */
  icrLow: number;
  icrHigh: number;
}

/** Xen's vlapic_match_dest for a target APIC (by its shared view) and vCPU id. */
function matchesDest(ipi: Ipi, target: Int32Array, targetId: number): boolean {
  switch (ipi.shorthand) {
    case 'self':
      return targetId === ipi.source;
    case 'all':
      return true;
    case 'others':
      return targetId !== ipi.source;
    case 'none':
      if (ipi.logical) return matchesLogical(target, ipi.dest);
      return ipi.dest === (x2apicMode(target) ? 0xffffffff : 0xff) || ipi.dest === apicId(target);
  }
}

/**
 * The vCPUs an IPI goes to, given every vCPU's shared view (index = vCPU id).
 * Lowest priority picks one enabled target with the lowest PPR (ties: the
 * first after the sender, a fixed stand-in for Xen's round robin); every other
 * mode lists all matching vCPUs.
 */
export function ipiTargets(ipi: Ipi, views: readonly Int32Array[]): number[] {
  const n = views.length;
  if (ipi.mode !== 'lowest') {
    const out: number[] = [];
    for (let id = 0; id < n; id++) if (matchesDest(ipi, views[id]!, id)) out.push(id);
    return out;
  }
  let best = -1;
  let bestPpr = Infinity;
  for (let k = 1; k <= n; k++) {
    const id = (ipi.source + k) % n;
    const v = views[id]!;
    if (!matchesDest(ipi, v, id) || !enabled(v)) continue;
    const p = ppr(v);
    if (p < bestPpr) {
      best = id;
      bestPpr = p;
    }
  }
  return best < 0 ? [] : [best];
}

// --- the vCPU's own APIC -------------------------------------------------------

export interface VlapicClock {
  /** System time now, ns (the clock tick() and nextDeadline() speak). */
  now(): bigint;
  /** The guest's TSC now; read only when the guest writes IA32_TSC_DEADLINE. */
  guestTsc(): bigint;
  /** Guest TSC frequency, kHz. */
  readonly tscKhz: number;
}

export interface VlapicConfig {
  vcpuId: number;
  /** CPUID.1:ECX.x2APIC is offered: the base MSR's EXTD bit may be set. */
  x2apic: boolean;
  /** CPUID.1:ECX.TSC_Deadline is offered: MSR 0x6E0 and LVTT mode 2 exist. */
  tscDeadline: boolean;
  clock: VlapicClock;
  /** A VLAPIC_SHARED_WORDS view, normally of a SharedArrayBuffer; one is allocated if absent. */
  shared?: Int32Array;
  /**
   * The event-channel upcall vector to request when the guest software-enables
   * the APIC, or 0: HVMOP_set_evtchn_upcall_vector's vector while
   * evtchn_upcall_pending is set (Xen's vlapic_reg_write does it for SVR), so
   * an upcall that came while the APIC was reset or disabled is not lost.
   */
  upcallOnEnable?: () => number;
  /** The shared page already holds this vCPU's LAPIC (another worker ran it): no power-on reset of it; see takeOver. */
  existing?: boolean;
}

/** The outcome of an MSR access: #GP, or the value read and any IPI a write caused. */
export interface MsrResult {
  gp: boolean;
  value: bigint;
  ipi: Ipi | null;
}
const GP: MsrResult = Object.freeze({ gp: true, value: 0n, ipi: null });
const ok = (value = 0n, ipi: Ipi | null = null): MsrResult => ({ gp: false, value, ipi });

/** Everything a LAPIC is, as plain data (bigints: structured-clone, not JSON). */
export interface VlapicState {
  /** The register page, 256 words (Xen's hvm_hw_lapic_regs). */
  regs: number[];
  pendingEsr: number;
  apicBase: bigint;
  tdtMsr: bigint;
  /** ns since the current count started (-1: no count), and until the next expiry (null: none). */
  timerElapsedNs: bigint;
  timerDueInNs: bigint | null;
}

/** x2APIC registers a RDMSR may read (guest_rdmsr_x2apic's table). */
const X2APIC_READABLE = new Set<number>([
  APIC.ID, APIC.LVR, APIC.TASKPRI, APIC.PROCPRI, APIC.LDR, APIC.SPIV, APIC.ESR, APIC.ICR, APIC.CMCI,
  APIC.LVTT, APIC.LVTTHMR, APIC.LVTPC, APIC.LVT0, APIC.LVT1, APIC.LVTERR, APIC.TMICT, APIC.TMCCT, APIC.TDCR,
  ...[APIC.ISR, APIC.TMR, APIC.IRR].flatMap((b) => Array.from({ length: 8 }, (_, i) => b + 0x10 * i)),
]);

export class Vlapic {
  readonly shared: Int32Array;
  readonly vcpuId: number;
  private readonly clock: VlapicClock;
  private readonly canX2apic: boolean;
  private readonly canTdt: boolean;
  private readonly upcallOnEnable: (() => number) | null;
  private apicBase = 0n;
  private divisor = 2;
  private tdtMsr = 0n;
  /** When the current count began (null: TMCCT reads 0). */
  private timerStart: bigint | null = null;
  /** The next expiry (null: none armed). */
  private timerDeadline: bigint | null = null;

  constructor(cfg: VlapicConfig) {
    if (!Number.isInteger(cfg.vcpuId) || cfg.vcpuId < 0) throw new RangeError(`vCPU id ${cfg.vcpuId}`);
    if (!(cfg.clock.tscKhz > 0)) throw new RangeError(`TSC frequency ${cfg.clock.tscKhz} kHz`);
    if (cfg.shared && cfg.shared.length !== VLAPIC_SHARED_WORDS) {
      throw new RangeError(`LAPIC shared view has ${cfg.shared.length} words, needs ${VLAPIC_SHARED_WORDS}`);
    }
    this.shared = cfg.shared ?? new Int32Array(new SharedArrayBuffer(VLAPIC_SHARED_BYTES));
    this.vcpuId = cfg.vcpuId;
    this.clock = cfg.clock;
    this.canX2apic = cfg.x2apic;
    this.canTdt = cfg.tscDeadline;
    this.upcallOnEnable = cfg.upcallOnEnable ?? null;
    if (!cfg.existing) this.reset();
  }

  // --- state --------------------------------------------------------------

  /** Power-on state (vlapic_reset): enabled in the base MSR, BSP on vCPU 0, software-disabled. */
  reset(): void {
    this.setBase(APIC_DEFAULT_PHYS_BASE | APIC_BASE.ENABLE | (this.vcpuId === 0 ? APIC_BASE.BSP : 0n));
    this.set(APIC.ID, apicIdOfVcpu(this.vcpuId) << 24);
    this.init();
  }

  /**
   * INIT state (vlapic_do_init), for power-on and for an INIT IPI: everything
   * but the ID, the base MSR and, in x2APIC mode, the LDR.
   */
  init(): void {
    this.set(APIC.LVR, VLAPIC_VERSION);
    for (let i = 0; i < 8; i++) {
      Atomics.store(this.shared, (APIC.IRR >> 2) + 4 * i, 0);
      this.set(APIC.ISR + 0x10 * i, 0);
      this.set(APIC.TMR + 0x10 * i, 0);
    }
    this.set(APIC.ICR, 0);
    this.set(APIC.ICR2, 0);
    if (!this.x2apicMode) this.set(APIC.LDR, 0);
    this.set(APIC.TASKPRI, 0);
    this.set(APIC.TMICT, 0);
    this.set(APIC.TDCR, 0);
    this.divisor = 2;
    this.set(APIC.DFR, DFR_FLAT);
    for (let i = 0; i < LVT_NUM; i++) this.set(APIC.LVTT + 0x10 * i, APIC_LVT_MASKED);
    this.set(APIC.SPIV, 0xff);
    this.set(APIC.ESR, 0);
    Atomics.store(this.shared, W_PENDING_ESR, 0);
    this.tdtMsr = 0n;
    this.stopTimer();
  }

  private get(off: number): number {
    return reg(this.shared, off);
  }

  private set(off: number, val: number): void {
    this.shared[off >> 2] = val | 0;
  }

  /** Bits of the APIC base MSR this vCPU has (EXTD only when x2APIC is offered). */
  private get baseWritable(): bigint {
    return APIC_BASE.ADDR_MASK | APIC_BASE.ENABLE | APIC_BASE.BSP | (this.canX2apic ? APIC_BASE.EXTD : 0n);
  }

  private setBase(v: bigint): void {
    this.apicBase = v;
    Atomics.store(this.shared, W_BASE_FLAGS, Number(v & 0xfffn));
  }

  get apicBaseMsr(): bigint {
    return this.apicBase;
  }
  get x2apicMode(): boolean {
    return (this.apicBase & APIC_BASE.EXTD) !== 0n;
  }
  get hardwareEnabled(): boolean {
    return (this.apicBase & APIC_BASE.ENABLE) !== 0n;
  }
  /** Hardware- and software-enabled (Xen's vlapic_enabled). */
  get enabled(): boolean {
    return enabled(this.shared);
  }
  /** Processor priority (computed from TPR and the highest in-service vector). */
  get ppr(): number {
    return ppr(this.shared);
  }
  /** The ID destinations compare against (8-bit xAPIC or 32-bit x2APIC). */
  get apicId(): number {
    return apicId(this.shared);
  }

  // --- interrupt acceptance and injection -------------------------------------

  /** Fixed delivery to this APIC (see acceptInterrupt). */
  accept(vector: number): boolean {
    return acceptInterrupt(this.shared, vector);
  }

  /** Raw IRR set, as Xen raises the evtchn upcall vector (see setIrq). */
  setIrq(vector: number): boolean {
    return setIrq(this.shared, vector);
  }

  matchesLogical(mda: number): boolean {
    return matchesLogical(this.shared, mda);
  }

  /**
   * The vector to inject now, or -1: the highest IRR vector whose priority
   * class is above the PPR's (the TPR and in-service classes); nothing while
   * the APIC is disabled (vlapic_has_pending_irq plus Xen's TPR check).
   */
  pendingVector(): number {
    if (!this.enabled) return -1;
    const irr = highestVector(this.shared, APIC.IRR);
    if (irr < 0 || (irr & 0xf0) <= (this.ppr & 0xf0)) return -1;
    return irr;
  }

  /** The vector was injected: move it from IRR to ISR (vlapic_ack_pending_irq). */
  ackInterrupt(vector: number): void {
    if (!Number.isInteger(vector) || vector < 16 || vector > 255) throw new RangeError(`vector ${vector}`);
    const bit = 1 << (vector & 31);
    const w = bitWord(APIC.ISR, vector);
    this.shared[w] = this.shared[w]! | bit;
    Atomics.and(this.shared, bitWord(APIC.IRR, vector), ~bit);
  }

  /** EOI: retire the highest in-service vector (vlapic_EOI_set); nothing in service, nothing happens. */
  private eoi(): void {
    const vec = highestVector(this.shared, APIC.ISR);
    if (vec < 0) return;
    const w = bitWord(APIC.ISR, vec);
    this.shared[w] = this.shared[w]! & ~(1 << (vec & 31));
  }

  isInService(vector: number): boolean {
    return testBit(this.shared, APIC.ISR, vector);
  }
  isRequested(vector: number): boolean {
    return testBit(this.shared, APIC.IRR, vector);
  }

  // --- timer ----------------------------------------------------------------------

  private get timerMode(): number {
    return this.get(APIC.LVTT) & APIC_TIMER_MODE.MASK;
  }
  private get tickNs(): bigint {
    return APIC_BUS_CYCLE_NS * BigInt(this.divisor);
  }
  private get periodNs(): bigint {
    return BigInt(this.get(APIC.TMICT)) * this.tickNs;
  }
  private stopTimer(): void {
    this.timerStart = null;
    this.timerDeadline = null;
  }

  /** Starts a count of TMICT from `now` (TMICT write). */
  private startCount(now: bigint): void {
    const period = this.periodNs;
    if (period === 0n || this.timerMode === APIC_TIMER_MODE.TSC_DEADLINE || this.timerMode === APIC_TIMER_MODE.MASK) {
      this.stopTimer();
      return;
    }
    this.timerStart = now;
    this.timerDeadline = now + period;
  }

  /** TMCCT: counts down from TMICT at the bus clock / divisor; periodic reloads, one-shot stops at 0. */
  private currentCount(now: bigint): number {
    const mode = this.timerMode;
    if (this.timerStart === null || (mode !== APIC_TIMER_MODE.ONESHOT && mode !== APIC_TIMER_MODE.PERIODIC)) return 0;
    const tmict = BigInt(this.get(APIC.TMICT));
    if (tmict === 0n) return 0;
    let passed = (now - this.timerStart) / this.tickNs;
    if (mode === APIC_TIMER_MODE.PERIODIC) passed %= tmict;
    return passed < tmict ? Number(tmict - passed) : 0;
  }

  /**
   * Keeps the count going across a divisor or one-shot/periodic change
   * (vlapic_update_timer): the time left in the current period is scaled by
   * new/old divisor and the count carries on in the new mode; a finished
   * one-shot count stays finished (TMCCT 0).
   */
  private recount(now: bigint, oldDivisor: number, oldMode: number): void {
    if (this.timerStart === null) return;
    const mode = this.timerMode;
    if (mode !== APIC_TIMER_MODE.ONESHOT && mode !== APIC_TIMER_MODE.PERIODIC) {
      this.stopTimer();
      return;
    }
    const oldPeriod = BigInt(this.get(APIC.TMICT)) * APIC_BUS_CYCLE_NS * BigInt(oldDivisor);
    let passed = now - this.timerStart;
    if (oldMode === APIC_TIMER_MODE.PERIODIC) passed %= oldPeriod;
    if (passed >= oldPeriod) {
      this.stopTimer();
      return;
    }
    const left = ((oldPeriod - passed) * BigInt(this.divisor)) / BigInt(oldDivisor);
    this.timerDeadline = now + left;
    this.timerStart = this.timerDeadline - this.periodNs;
  }

  private timerMasked(): boolean {
    return !this.enabled || (this.get(APIC.LVTT) & APIC_LVT_MASKED) !== 0;
  }

  /**
   * The system time (ns) at which tick() has something to do, or 0n. A
   * masked timer keeps counting but asks for no wakeups: its expiries have
   * no effect, and any register write that could unmask it settles them first.
   */
  nextDeadline(): bigint {
    if (this.timerDeadline === null || this.timerMasked()) return 0n;
    return this.timerDeadline;
  }

  /**
   * Fires a due timer: accepts the LVTT vector unless masked and re-arms a
   * periodic count at its next period boundary (periods missed while the
   * vCPU was not served collapse into one interrupt: the IRR holds one).
   * True when an interrupt became pending (wake the vCPU).
   */
  tick(now: bigint): boolean {
    const due = this.timerDeadline;
    if (due === null || due > now) return false;
    const period = this.periodNs;
    if (this.timerMode === APIC_TIMER_MODE.PERIODIC && this.timerStart !== null && period !== 0n) {
      const periods = (now - this.timerStart) / period + 1n;
      this.timerDeadline = this.timerStart + periods * period;
    } else {
      this.timerDeadline = null;
      this.tdtMsr = 0n; // a fired TSC deadline reads back as 0
    }
    if (this.timerMasked()) return false;
    return setIrq(this.shared, this.get(APIC.LVTT) & VECTOR_MASK);
  }

  private writeTscDeadline(value: bigint): void {
    if (!this.hardwareEnabled || this.timerMode !== APIC_TIMER_MODE.TSC_DEADLINE) return; // ignored (vlapic_tdt_msr_set)
    const now = this.clock.now();
    this.tick(now);
    const tsc = this.clock.guestTsc();
    if (value > tsc) {
      // Round up: never fire before the guest's TSC reaches the deadline.
      const khz = BigInt(this.clock.tscKhz);
      this.tdtMsr = value;
      this.timerStart = null;
      this.timerDeadline = now + ((value - tsc) * 1_000_000n + khz - 1n) / khz;
    } else {
      this.tdtMsr = 0n;
      this.timerStart = null;
      this.timerDeadline = value > 0n ? now : null; // a deadline already past fires at once
      if (value > 0n) this.tick(now);
    }
  }

  private readTscDeadline(): bigint {
    if (this.timerMode !== APIC_TIMER_MODE.TSC_DEADLINE) return 0n;
    // A masked deadline expires without a tick(): it reads 0 all the same.
    if (this.timerDeadline !== null && this.timerDeadline <= this.clock.now()) return 0n;
    return this.tdtMsr;
  }

  // --- registers --------------------------------------------------------------------

  /** A register read (vlapic_read_aligned): PPR and TMCCT are computed. */
  private readReg(off: number): number {
    switch (off) {
      case APIC.PROCPRI:
        return this.ppr;
      case APIC.TMCCT:
        return this.currentCount(this.clock.now());
      case APIC.TMICT: {
        const m = this.timerMode;
        return m === APIC_TIMER_MODE.ONESHOT || m === APIC_TIMER_MODE.PERIODIC ? this.get(off) : 0;
      }
      default:
        return this.get(off);
    }
  }

  /** A register write (vlapic_reg_write), after the access-mode checks; returns the IPI it sends. */
  private writeReg(off: number, val: number): Ipi | null {
    val >>>= 0;
    switch (off) {
      case APIC.ID:
        this.set(APIC.ID, val & 0xff000000); // xAPIC only (x2APIC #GPs); bits 23:0 are reserved
        return null;
      case APIC.TASKPRI:
        this.set(off, val & 0xff);
        return null;
      case APIC.EOI:
        this.eoi();
        return null;
      case APIC.LDR:
        this.set(off, val & 0xff000000);
        return null;
      case APIC.DFR:
        this.set(off, val | DFR_CLUSTER);
        return null;
      case APIC.SPIV: {
        this.tick(this.clock.now());
        const wasEnabled = (this.get(APIC.SPIV) & APIC_SPIV_APIC_ENABLED) !== 0;
        this.set(off, val & SPIV_WRITABLE);
        // Software-disabling masks every LVT entry; enabling unmasks none.
        if (!(val & APIC_SPIV_APIC_ENABLED)) {
          for (let i = 0; i < LVT_NUM; i++) this.set(APIC.LVTT + 0x10 * i, this.get(APIC.LVTT + 0x10 * i) | APIC_LVT_MASKED);
        } else if (!wasEnabled) {
          const vec = this.upcallOnEnable?.() ?? 0;
          if (vec) this.setIrq(vec);
        }
        return null;
      }
      case APIC.ESR:
        // Any write moves the errors latched since the last write into ESR.
        this.set(APIC.ESR, Atomics.exchange(this.shared, W_PENDING_ESR, 0));
        return null;
      case APIC.ICR: {
        val &= ~SEND_PENDING; // delivery is instantaneous: never busy
        const ipi = this.sendIpi(val, this.get(APIC.ICR2));
        this.set(APIC.ICR, val);
        return ipi;
      }
      case APIC.ICR2:
        this.set(off, val & 0xff000000);
        return null;
      case APIC.LVTT: {
        const now = this.clock.now();
        this.tick(now);
        if (!this.canTdt) val &= ~APIC_TIMER_MODE.TSC_DEADLINE;
        const oldMode = this.timerMode;
        const tdt = (val & APIC_TIMER_MODE.MASK) === APIC_TIMER_MODE.TSC_DEADLINE;
        this.setLvt(off, val);
        if ((oldMode === APIC_TIMER_MODE.TSC_DEADLINE) !== tdt) {
          // Entering or leaving TSC-deadline mode disarms the timer.
          this.set(APIC.TMICT, 0);
          this.tdtMsr = 0n;
          this.stopTimer();
        } else if (!tdt) {
          this.recount(now, this.divisor, oldMode);
        }
        return null;
      }
      case APIC.LVTTHMR:
      case APIC.LVTPC:
      case APIC.LVT0:
      case APIC.LVT1:
      case APIC.LVTERR:
        this.setLvt(off, val);
        return null;
      case APIC.TMICT: {
        const m = this.timerMode;
        if (m !== APIC_TIMER_MODE.ONESHOT && m !== APIC_TIMER_MODE.PERIODIC) return null; // ignored in TSC-deadline mode
        const now = this.clock.now();
        this.tick(now);
        this.set(off, val);
        this.startCount(now);
        return null;
      }
      case APIC.TDCR: {
        const now = this.clock.now();
        this.tick(now);
        const old = this.divisor;
        val &= 0xb;
        this.set(off, val);
        this.divisor = tdcrDivisor(val);
        this.recount(now, old, this.timerMode);
        return null;
      }
      default:
        return null; // read-only and reserved registers: writes vanish
    }
  }

  private setLvt(off: number, val: number): void {
    if (!(this.get(APIC.SPIV) & APIC_SPIV_APIC_ENABLED)) val |= APIC_LVT_MASKED;
    this.set(off, val & LVT_WRITABLE[(off - APIC.LVTT) >> 4]!);
  }

  /** Decodes an ICR write (vlapic_ipi): the IPI for the caller to deliver, or null. */
  private sendIpi(low: number, high: number): Ipi | null {
    const mode = MODES[(low & MODE_MASK) >> 8]!;
    const vector = low & VECTOR_MASK;
    // INIT level de-assert (level-triggered, not asserted) does nothing on this APIC generation.
    if (mode === 'init' && (low & (APIC_INT_LEVELTRIG | APIC_INT_ASSERT)) === APIC_INT_LEVELTRIG) return null;
    if ((mode === 'fixed' || mode === 'lowest') && vector < 16) {
      raiseError(this.shared, APIC_ESR.SENDILL);
      return null;
    }
    return {
      mode,
      vector,
      shorthand: SHORTHANDS[(low & APIC_SHORT.MASK) >>> 18]!,
      logical: (low & APIC_DEST_LOGICAL) !== 0,
      dest: this.x2apicMode ? high >>> 0 : high >>> 24,
      source: this.vcpuId,
      icrLow: low >>> 0,
      icrHigh: high >>> 0,
    };
  }

  // --- xAPIC MMIO ---------------------------------------------------------------------

  /** Offset of `gpa` in this APIC's MMIO window, or -1 when the window is not decoded (vlapic_range). */
  mmioOffset(gpa: bigint): number {
    if (!this.hardwareEnabled || this.x2apicMode) return -1;
    const off = gpa - (this.apicBase & APIC_BASE.ADDR_MASK);
    return off >= 0n && off < 4096n ? Number(off) : -1;
  }

  /**
   * A read of `size` bytes at `offset` in the window. Registers are 32 bits
   * on 16-byte boundaries; an access that fits inside one register's 32 bits
   * reads the bytes it covers, any other access reads 0 (vlapic_mmio_read).
   */
  mmioRead(offset: number, size: number): number {
    const a = offset & 0xf;
    if (a + size > 4 || offset > APIC.TDCR + 3 || offset < 0 || !(size === 1 || size === 2 || size === 4)) return 0;
    const r = this.readReg(offset & ~0xf);
    return size === 4 ? r >>> 0 : (r >>> (a * 8)) & (size === 1 ? 0xff : 0xffff);
  }

  /** A write; partial writes that fit in one register merge into it, others are dropped (vlapic_mmio_write). */
  mmioWrite(offset: number, size: number, value: number): Ipi | null {
    const a = offset & 0xf;
    if (a + size > 4 || offset > APIC.TDCR + 3 || offset < 0 || !(size === 1 || size === 2 || size === 4)) return null;
    const off = offset & ~0xf;
    let val = value >>> 0;
    if (size < 4) {
      const mask = (size === 1 ? 0xff : 0xffff) << (a * 8);
      val = ((this.readReg(off) & ~mask) | ((val << (a * 8)) & mask)) >>> 0;
    }
    return this.writeReg(off, val);
  }

  // --- MSRs -------------------------------------------------------------------------------

  /** MSRs this model answers: the base MSR, TSC deadline and the x2APIC range. */
  static handlesMsr(index: number): boolean {
    return index === MSR_IA32_APICBASE || index === MSR_IA32_TSC_DEADLINE || (index >= MSR_X2APIC_FIRST && index <= MSR_X2APIC_LAST);
  }

  rdmsr(index: number): MsrResult {
    if (index === MSR_IA32_APICBASE) return ok(this.apicBase);
    if (index === MSR_IA32_TSC_DEADLINE) return this.canTdt ? ok(this.readTscDeadline()) : GP;
    if (index < MSR_X2APIC_FIRST || index > MSR_X2APIC_LAST || !this.x2apicMode) return GP;
    const off = (index - MSR_X2APIC_FIRST) << 4;
    if (!X2APIC_READABLE.has(off)) return GP;
    const low = BigInt(this.readReg(off) >>> 0);
    return ok(off === APIC.ICR ? (BigInt(this.get(APIC.ICR2)) << 32n) | low : low);
  }

  wrmsr(index: number, value: bigint): MsrResult {
    value = BigInt.asUintN(64, value);
    if (index === MSR_IA32_APICBASE) return this.writeBase(value) ? ok() : GP;
    if (index === MSR_IA32_TSC_DEADLINE) {
      if (!this.canTdt) return GP;
      this.writeTscDeadline(value);
      return ok();
    }
    if (index < MSR_X2APIC_FIRST || index > MSR_X2APIC_LAST || !this.x2apicMode) return GP;
    let off = (index - MSR_X2APIC_FIRST) << 4;
    if (off !== APIC.ICR && value >> 32n !== 0n) return GP;
    let val = Number(value & 0xffffffffn);
    const reserved = (writable: number) => (val & ~writable) !== 0;
    switch (off) {
      case APIC.TASKPRI:
        if (reserved(0xff)) return GP;
        break;
      case APIC.SPIV:
        if (reserved(SPIV_WRITABLE)) return GP;
        break;
      case APIC.LVTT:
        if (reserved(LVT_MASK | APIC_TIMER_MODE.MASK)) return GP;
        break;
      case APIC.LVTTHMR:
      case APIC.LVTPC:
      case APIC.CMCI:
        if (reserved(LVT_MASK | MODE_MASK)) return GP;
        break;
      case APIC.LVT0:
      case APIC.LVT1:
        if (reserved(LINT_MASK)) return GP;
        break;
      case APIC.LVTERR:
        if (reserved(LVT_MASK)) return GP;
        break;
      case APIC.TMICT:
        break;
      case APIC.TDCR:
        if (reserved(0xb)) return GP;
        break;
      case APIC.ICR:
        if (reserved(ICR_WRITABLE)) return GP;
        this.set(APIC.ICR2, Number(value >> 32n));
        break;
      case APIC.SELF_IPI:
        if (reserved(VECTOR_MASK)) return GP;
        off = APIC.ICR;
        val = APIC_SHORT.SELF | val;
        break;
      case APIC.EOI:
      case APIC.ESR:
        if (val !== 0) return GP;
        break;
      default:
        return GP; // ID, LVR, LDR, PPR, ISR/TMR/IRR, TMCCT are read-only; DFR, ICR2 do not exist
    }
    return ok(0n, this.writeReg(off, val));
  }

  /**
   * IA32_APIC_BASE (guest_wrmsr_apic_base): reserved bits, EXTD without
   * x2APIC, moving the xAPIC window, and the invalid mode transitions
   * (x2APIC -> xAPIC, disabled -> x2APIC, EXTD without ENABLE) are #GP.
   * Re-enabling resets the APIC; entering x2APIC mode sets the x2APIC ID and
   * the read-only cluster LDR.
   */
  private writeBase(value: bigint): boolean {
    if (value & ~this.baseWritable) return false;
    const en = (value & APIC_BASE.ENABLE) !== 0n;
    const extd = (value & APIC_BASE.EXTD) !== 0n;
    if (en && !extd && (value & APIC_BASE.ADDR_MASK) !== APIC_DEFAULT_PHYS_BASE) return false;
    if (en !== this.hardwareEnabled) {
      if (extd) return false;
      if (en) {
        this.reset();
      } else {
        this.tick(this.clock.now());
      }
    } else if (extd !== this.x2apicMode && !(this.hardwareEnabled && !this.x2apicMode)) {
      return false;
    }
    this.setBase(value);
    if (this.x2apicMode) {
      const id = this.vcpuId;
      this.set(APIC.ID, id);
      this.set(APIC.LDR, ((id & ~0xf) << 12) | (1 << (id & 0xf)));
    }
    return true;
  }

  // --- save / restore -------------------------------------------------------------------

  save(now: bigint): VlapicState {
    return {
      regs: Array.from(this.shared.subarray(0, 256), (w) => w >>> 0),
      pendingEsr: Atomics.load(this.shared, W_PENDING_ESR) >>> 0,
      apicBase: this.apicBase,
      tdtMsr: this.tdtMsr,
      timerElapsedNs: this.timerStart === null ? -1n : now - this.timerStart,
      timerDueInNs: this.timerDeadline === null ? null : this.timerDeadline - now,
    };
  }

  /** Loads a saved state; a malformed one is refused with an error and changes nothing. */
  restore(s: VlapicState, now: bigint): void {
    const bad = (why: string): never => { throw new Error(`vCPU ${this.vcpuId} LAPIC state refused: ${why}`); };
    if (!Array.isArray(s.regs) || s.regs.length !== 256 || !s.regs.every((w) => Number.isInteger(w) && w >= 0 && w <= 0xffffffff)) bad('regs must be 256 u32 words');
    if (!Number.isInteger(s.pendingEsr) || s.pendingEsr < 0 || s.pendingEsr > 0xffffffff) bad('pendingEsr');
    if (typeof s.apicBase !== 'bigint' || typeof s.tdtMsr !== 'bigint' || typeof s.timerElapsedNs !== 'bigint') bad('apicBase/tdtMsr/timerElapsedNs must be bigints');
    if (s.timerDueInNs !== null && typeof s.timerDueInNs !== 'bigint') bad('timerDueInNs');
    const b = s.apicBase;
    if (b & ~this.baseWritable) bad(`APIC base 0x${b.toString(16)} has bits this vCPU does not offer`);
    if ((b & APIC_BASE.EXTD) && !(b & APIC_BASE.ENABLE)) bad('x2APIC mode with the APIC disabled');
    if ((b & (APIC_BASE.ENABLE | APIC_BASE.EXTD)) === APIC_BASE.ENABLE && (b & APIC_BASE.ADDR_MASK) !== APIC_DEFAULT_PHYS_BASE) bad('relocated xAPIC window');
    const tdcr = s.regs[APIC.TDCR >> 2]!;
    if (tdcr & ~0xb) bad(`TDCR 0x${tdcr.toString(16)}`);
    const lvtt = s.regs[APIC.LVTT >> 2]!;
    if (!this.canTdt && (lvtt & APIC_TIMER_MODE.MASK) === APIC_TIMER_MODE.TSC_DEADLINE) bad('TSC-deadline timer mode, which this vCPU does not offer');
    if (s.timerElapsedNs >= 0n && s.regs[APIC.TMICT >> 2] === 0) bad('a running count with TMICT 0');
    for (let i = 0; i < 256; i++) this.shared[i] = s.regs[i]! | 0;
    Atomics.store(this.shared, W_PENDING_ESR, s.pendingEsr | 0);
    this.setBase(b);
    this.divisor = tdcrDivisor(tdcr);
    this.tdtMsr = s.tdtMsr;
    this.timerStart = s.timerElapsedNs < 0n ? null : now - s.timerElapsedNs;
    this.timerDeadline = s.timerDueInNs === null ? null : now + s.timerDueInNs;
  }

  /**
   * Takes over the LAPIC of a vCPU another worker ran (same shared page): the
   * state kept outside that page comes from `s`; the page is left as it is, so
   * an interrupt another thread raised in it meanwhile is not lost.
   */
  takeOver(s: VlapicState, now: bigint): void {
    this.setBase(s.apicBase);
    this.divisor = tdcrDivisor(this.get(APIC.TDCR));
    this.tdtMsr = s.tdtMsr;
    this.timerStart = s.timerElapsedNs < 0n ? null : now - s.timerElapsedNs;
    this.timerDeadline = s.timerDueInNs === null ? null : now + s.timerDueInNs;
  }
}
