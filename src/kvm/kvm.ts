// /dev/kvm, VMs and vCPUs over koffi. This is the hardware boundary: it knows
// x86 and KVM, nothing of Xen. A vCPU's kvm_run page is viewed zero-copy, and
// registers travel through its sync-regs area so an exit costs one ioctl.

import fs from 'node:fs';
import * as libc from './libc.js';
import {
  CAP, CapName, CPUID_ENTRY, ENABLE_CAP_SIZE, EXIT, KVM_API_VERSION, KVM_CHECK_EXTENSION, KVM_CREATE_VCPU,
  KVM_CREATE_VM, KVM_ENABLE_CAP, KVM_GET_API_VERSION, KVM_GET_REGS, KVM_GET_SREGS, KVM_GET_SUPPORTED_CPUID,
  KVM_GET_TSC_KHZ, KVM_GET_VCPU_MMAP_SIZE, KVM_INTERRUPT, KVM_NMI, KVM_XEN_HVM_CONFIG_IOCTL, XEN_HVM_CONFIG_SIZE, RUN_XEN, KVM_EXIT_XEN_HCALL, KVM_REGS_SIZE, KVM_RUN, KVM_SET_CPUID2,
  KVM_SET_MSRS, KVM_SET_REGS, KVM_SET_SIGNAL_MASK, KVM_SET_SREGS, KVM_SET_USER_MEMORY_REGION,
  KVM_SREGS_SIZE, KVM_SYNC_X86_REGS, KVM_SYNC_X86_SREGS, KVM_X86_SET_MSR_FILTER, MEMREGION_SIZE,
  MSR_ENTRY_SIZE, MSR_FILTER_SIZE, KVM_MSR_FILTER_MAX_RANGES, REG, RUN, SEG, SegName, SREGS, SYNC,
  KVM_GET_MSRS, RUN_IO, RUN_MSR, RUN_INTERNAL, RUN_EMULATION_FAILURE, KVM_EXIT_IO_OUT, KVM_INTERNAL_ERROR_EMULATION,
  EXIT_NAMES, KVM_GET_XSAVE, KVM_SET_XSAVE, KVM_GET_XCRS, KVM_SET_XCRS, KVM_GET_FPU, KVM_SET_FPU, KVM_GET_DEBUGREGS,
  KVM_SET_DEBUGREGS, KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS, KVM_XSAVE_SIZE, KVM_XCRS_SIZE, KVM_DEBUGREGS_SIZE, FPU,
  VCPU_EVENTS_SIZE, EVENTS, KVM_SET_GUEST_DEBUG, KVM_GUEST_DEBUG_SIZE, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_USE_HW_BP, KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_SHADOW, KVM_X86_SHADOW_INT_MOV_SS, KVM_X86_SHADOW_INT_STI,
} from './abi.js';
import { XSAVE, XFEATURE, CPU_MSR_LIST, SEG_NAMES, type FpuState, type SegmentState, type VcpuState } from '../accel/state.js';
import { VcpuExit, type AccelVcpu, type CpuidEntry, type GuestMemorySlots, type InitialState, type Segment } from '../accel/vcpu.js';

export type { CpuidEntry, Segment };

export class KvmError extends Error {}

/** Writes `s` as a struct kvm_segment (asm/kvm.h) at byte `o` of a kvm_sregs; a segment not present is unusable. */
export function writeKvmSegment(d: DataView, o: number, s: Segment): void {
  d.setBigUint64(o + SEG.base, BigInt(s.base), true);
  d.setUint32(o + SEG.limit, s.limit >>> 0, true);
  d.setUint16(o + SEG.selector, s.selector, true);
  d.setUint8(o + SEG.type, s.type);
  d.setUint8(o + SEG.present, s.present);
  d.setUint8(o + SEG.dpl, s.dpl);
  d.setUint8(o + SEG.db, s.db);
  d.setUint8(o + SEG.s, s.s);
  d.setUint8(o + SEG.l, s.l);
  d.setUint8(o + SEG.g, s.g);
  d.setUint8(o + SEG.avl, 0);
  d.setUint8(o + SEG.unusable, s.present ? 0 : 1);
}

const EINTR = 4;
const IA32_TSC = 0x10;
const EAGAIN = 11;

/** Capabilities every xenode VM needs; probing names the ones a host lacks. */
export const REQUIRED_CAPS: CapName[] = ['USER_MEMORY', 'SYNC_REGS', 'X86_USER_SPACE_MSR', 'X86_MSR_FILTER', 'EXT_CPUID', 'IMMEDIATE_EXIT', 'GET_TSC_KHZ'];

/** The KVM system handle (/dev/kvm). One per thread that creates VMs. */
export class Kvm {
  readonly vcpuMmapSize: number;
  /** This host's KVM is PVM ("pagetable-based virtual machine", no VMX/SVM): it emulates guest CPL 0 code. */
  readonly emulatesCpl0 = fs.existsSync('/sys/module/kvm_pvm');
  private cpuidCache: CpuidEntry[] | null = null;

  private constructor(readonly fd: number) {
    const v = libc.ioctlInt(fd, KVM_GET_API_VERSION, 0);
    if (v !== KVM_API_VERSION) throw new KvmError(`/dev/kvm speaks API version ${v}, expected ${KVM_API_VERSION}`);
    this.vcpuMmapSize = libc.check(libc.ioctlInt(fd, KVM_GET_VCPU_MMAP_SIZE, 0), 'KVM_GET_VCPU_MMAP_SIZE');
  }

  /** Opens /dev/kvm; a clear KvmError says why it cannot be used. */
  static open(path = '/dev/kvm'): Kvm {
    const fd = libc.open(path, libc.O_RDWR | libc.O_CLOEXEC, 0);
    if (fd < 0) {
      const e = libc.errno();
      const why = e === 2 ? 'does not exist (is the kvm module loaded? is this a VM without nested virtualisation?)'
        : e === 13 ? 'is not accessible (add your user to the kvm group, or run as root)'
        : libc.strerror(e);
      throw new KvmError(`${path} ${why}`);
    }
    return new Kvm(fd);
  }

  checkExtension(cap: CapName | number): number {
    const n = typeof cap === 'number' ? cap : CAP[cap];
    return Math.max(0, libc.ioctlInt(this.fd, KVM_CHECK_EXTENSION, n));
  }

  /** Names of required capabilities this host lacks (empty when usable). */
  missingCapabilities(): CapName[] {
    return REQUIRED_CAPS.filter((c) => this.checkExtension(c) <= 0);
  }

  requireCapabilities(): void {
    const missing = this.missingCapabilities();
    if (missing.length) throw new KvmError(`this host's KVM lacks required capabilities: ${missing.map((c) => `KVM_CAP_${c}`).join(', ')}`);
  }

  supportedCpuid(): CpuidEntry[] {
    if (this.cpuidCache) return this.cpuidCache.map((e) => ({ ...e }));
    for (let n = 64; n <= 4096; n *= 2) {
      const buf = new Uint8Array(8 + n * CPUID_ENTRY.size);
      new DataView(buf.buffer).setUint32(0, n, true);
      const r = libc.ioctlPtr(this.fd, KVM_GET_SUPPORTED_CPUID, buf);
      if (r < 0 && libc.errno() === 7 /* E2BIG */) continue;
      libc.check(r, 'KVM_GET_SUPPORTED_CPUID');
      this.cpuidCache = decodeCpuid(buf);
      return this.cpuidCache.map((e) => ({ ...e }));
    }
    throw new KvmError('KVM_GET_SUPPORTED_CPUID: too many entries');
  }

  createVm(): Vm {
    // Creating a VM takes long enough for a signal (a profiler's, SIGCHLD) to interrupt it: retry.
    const fd = libc.retryEintr(() => libc.ioctlInt(this.fd, KVM_CREATE_VM, 0), 'KVM_CREATE_VM');
    return new Vm(this, fd);
  }

  close(): void {
    libc.close(this.fd);
  }
}

function decodeCpuid(buf: Uint8Array): CpuidEntry[] {
  const dv = new DataView(buf.buffer, buf.byteOffset);
  const n = dv.getUint32(0, true);
  const out: CpuidEntry[] = [];
  for (let i = 0; i < n; i++) {
    const o = 8 + i * CPUID_ENTRY.size;
    out.push({
      function: dv.getUint32(o + CPUID_ENTRY.function, true),
      index: dv.getUint32(o + CPUID_ENTRY.index, true),
      flags: dv.getUint32(o + CPUID_ENTRY.flags, true),
      eax: dv.getUint32(o + CPUID_ENTRY.eax, true),
      ebx: dv.getUint32(o + CPUID_ENTRY.ebx, true),
      ecx: dv.getUint32(o + CPUID_ENTRY.ecx, true),
      edx: dv.getUint32(o + CPUID_ENTRY.edx, true),
    });
  }
  return out;
}

export interface MsrFilterRange {
  flags: number; // KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE
  base: number;
  nmsrs: number;
  /** one bit per MSR: 1 = allow (KVM handles it), 0 = deny (exit to user space) */
  bitmap: Uint8Array;
}

export class Vm implements GuestMemorySlots {
  private closed = false;

  /** Forgets the fd without closing it (another thread owns it now). */
  release(): void {
    this.closed = true;
  }

  constructor(readonly kvm: Kvm, readonly fd: number) {}

  setUserMemoryRegion(slot: number, guestPhys: number, size: number, hostAddr: bigint, flags = 0): void {
    const b = new Uint8Array(MEMREGION_SIZE);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, slot, true);
    dv.setUint32(4, flags, true);
    dv.setBigUint64(8, BigInt(guestPhys), true);
    dv.setBigUint64(16, BigInt(size), true);
    dv.setBigUint64(24, hostAddr, true);
    libc.check(libc.ioctlPtr(this.fd, KVM_SET_USER_MEMORY_REGION, b), `KVM_SET_USER_MEMORY_REGION(slot ${slot}, gpa 0x${guestPhys.toString(16)}, size 0x${size.toString(16)})`);
  }

  deleteMemoryRegion(slot: number): void {
    this.setUserMemoryRegion(slot, 0, 0, 0n);
  }

  enableCap(cap: CapName | number, args: number[] = [], flags = 0): void {
    const b = new Uint8Array(ENABLE_CAP_SIZE);
    const dv = new DataView(b.buffer);
    const n = typeof cap === 'number' ? cap : CAP[cap];
    dv.setUint32(0, n, true);
    dv.setUint32(4, flags, true);
    args.forEach((a, i) => dv.setBigUint64(8 + 8 * i, BigInt(a), true));
    libc.check(libc.ioctlPtr(this.fd, KVM_ENABLE_CAP, b), `KVM_ENABLE_CAP(${typeof cap === 'number' ? cap : 'KVM_CAP_' + cap})`);
  }


  /**
   * KVM_XEN_HVM_CONFIG with `flags` (KVM_XEN_HVM_CONFIG_*): with INTERCEPT_HCALL, the guest's
   * VMCALL/VMMCALL come to user space as KVM_EXIT_XEN instead of being KVM's own hypercalls. No
   * hypercall MSR (0) and no blobs: the hypercall page is served through the MSR filter.
   */
  setXenHvmConfig(flags: number): void {
    const b = new Uint8Array(XEN_HVM_CONFIG_SIZE);
    new DataView(b.buffer).setUint32(0, flags, true);
    libc.check(libc.ioctlPtr(this.fd, KVM_XEN_HVM_CONFIG_IOCTL, b), 'KVM_XEN_HVM_CONFIG');
  }

  /** Default-allow filter with the given deny ranges (bitmap bit 0 = deny → exit to user space). */
  setMsrFilter(ranges: MsrFilterRange[]): void {
    if (ranges.length > KVM_MSR_FILTER_MAX_RANGES) throw new RangeError('too many MSR filter ranges');
    const b = new Uint8Array(MSR_FILTER_SIZE);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, 0, true); // KVM_MSR_FILTER_DEFAULT_ALLOW
    ranges.forEach((r, i) => {
      const o = 8 + i * 24;
      dv.setUint32(o, r.flags, true);
      dv.setUint32(o + 4, r.nmsrs, true);
      dv.setUint32(o + 8, r.base, true);
      dv.setBigUint64(o + 16, libc.address(r.bitmap), true);
    });
    // KVM copies the bitmaps during the ioctl; the Uint8Arrays only need to live until it returns.
    libc.check(libc.ioctlPtr(this.fd, KVM_X86_SET_MSR_FILTER, b), 'KVM_X86_SET_MSR_FILTER');
  }

  createVcpu(id: number): Vcpu {
    const fd = libc.check(libc.ioctlInt(this.fd, KVM_CREATE_VCPU, id), `KVM_CREATE_VCPU(${id})`);
    return new Vcpu(this, fd, id);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    libc.close(this.fd);
  }
}

export interface RunResult {
  /** KVM exit reason, or EXIT_INTERRUPTED when a kick (signal) or immediate_exit stopped KVM_RUN. */
  reason: number;
}

/** Pseudo exit reason: KVM_RUN returned EINTR/EAGAIN (kicked). */
export const EXIT_INTERRUPTED = -1;

/**
 * A vCPU. Its kvm_run page is mapped once and viewed zero-copy; after each exit
 * the general and special registers are in the sync-regs area, and writes made
 * through setReg/sregs setters are handed back to KVM on the next entry.
 */
export class Vcpu implements AccelVcpu {
  readonly accel = 'kvm' as const;
  readonly exit = new VcpuExit();
  private mapping: unknown;
  /** The kvm_run page. */
  readonly runPage: DataView;
  readonly runBytes: Uint8Array;
  /** kvm_sync_regs.regs as 18 u64 (REG order). */
  private readonly regs: BigUint64Array;
  private readonly sregsBase = RUN.sync_regs + SYNC.sregs;
  private dirty = 0;
  private closed = false;

  constructor(readonly vm: Vm, readonly fd: number, readonly id: number) {
    const size = vm.kvm.vcpuMmapSize;
    const p = libc.mmap(null, size, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, fd, 0);
    if (libc.isMapFailed(p)) {
      libc.close(fd);
      throw new libc.OsError('mmap(kvm_run)', libc.errno());
    }
    this.mapping = p;
    const ab = libc.view(p, size);
    this.runPage = new DataView(ab);
    this.runBytes = new Uint8Array(ab);
    this.regs = new BigUint64Array(ab, RUN.sync_regs + SYNC.regs, 18);
    this.runPage.setBigUint64(RUN.kvm_valid_regs, BigInt(KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS), true);
    // Port I/O data lives in the kvm_run page; an MMIO exit's data at mmio.data (linux/kvm.h).
    this.exit.io.data = this.runBytes;
    this.exit.mmio.data = this.runBytes.subarray(RUN.exit + 8, RUN.exit + 16);
  }


  /**
   * Enters the guest until the next exit. Returns the exit reason, or
   * EXIT_INTERRUPTED if a kick signal or immediate_exit made KVM_RUN return
   * EINTR. Registers read/written through this object are synced around it.
   */
  enter(): number {
    const run = this.runPage;
    this.synced = true;
    this.known = null;
    if (this.dirty) {
      run.setBigUint64(RUN.kvm_dirty_regs, BigInt(this.dirty), true);
      this.dirty = 0;
    }
    const r = libc.ioctlInt(this.fd, KVM_RUN, 0);
    if (r < 0) {
      const e = libc.errno();
      if (e === EINTR || e === EAGAIN) return EXIT_INTERRUPTED;
      throw new libc.OsError('KVM_RUN', e);
    }
    return run.getUint32(RUN.exit_reason, true);
  }

  /** Runs until the next exit, completing the last one first (an MSR's answer), and decodes it. */
  run(): VcpuExit {
    const x = this.exit;
    const run = this.runPage;
    this.answerMsr();
    const reason = this.enter();
    x.detail = '';
    x.insnBytes = null;
    x.hostLimitation = false;
    switch (reason) {
      case EXIT_INTERRUPTED: x.kind = 'interrupted'; break;
      case EXIT.IO: {
        const io = x.io;
        io.port = run.getUint16(RUN.exit + RUN_IO.port, true);
        io.size = run.getUint8(RUN.exit + RUN_IO.size);
        io.count = run.getUint32(RUN.exit + RUN_IO.count, true);
        io.out = run.getUint8(RUN.exit + RUN_IO.direction) === KVM_EXIT_IO_OUT;
        io.offset = Number(run.getBigUint64(RUN.exit + RUN_IO.data_offset, true));
        x.kind = 'io';
        break;
      }
      case EXIT.MMIO: {
        // struct kvm_run.mmio: phys_addr u64, data[8], len u32, is_write u8 (linux/kvm.h)
        const m = x.mmio;
        m.gpa = run.getBigUint64(RUN.exit, true);
        m.len = run.getUint32(RUN.exit + 16, true);
        m.write = run.getUint8(RUN.exit + 20) !== 0;
        x.kind = 'mmio';
        break;
      }
      case EXIT.X86_RDMSR:
      case EXIT.X86_WRMSR:
        x.kind = reason === EXIT.X86_RDMSR ? 'rdmsr' : 'wrmsr';
        x.msr.index = run.getUint32(RUN.exit + RUN_MSR.index, true);
        x.msr.value = reason === EXIT.X86_WRMSR ? run.getBigUint64(RUN.exit + RUN_MSR.data, true) : 0n;
        x.msr.error = false;
        break;
      case EXIT.XEN:
        if (run.getUint32(RUN.exit + RUN_XEN.type, true) !== KVM_EXIT_XEN_HCALL) {
          x.kind = 'failure';
          x.detail = `KVM_EXIT_XEN of unknown type ${run.getUint32(RUN.exit + RUN_XEN.type, true)}`;
          break;
        }
        this.completeXenHypercall();
        x.kind = 'hypercall';
        break;
      case EXIT.HLT: x.kind = 'hlt'; break;
      case EXIT.DEBUG: x.kind = 'debug'; break;
      case EXIT.IRQ_WINDOW_OPEN: x.kind = 'irq-window'; break;
      case EXIT.SHUTDOWN: x.kind = 'shutdown'; break;
      case EXIT.INTERNAL_ERROR: {
        x.kind = 'failure';
        const sub = run.getUint32(RUN.exit + RUN_INTERNAL.suberror, true);
        if (sub === KVM_INTERNAL_ERROR_EMULATION) {
          x.detail = "KVM could not emulate an instruction (a limitation of this host's KVM)";
          x.hostLimitation = true;
          if (run.getBigUint64(RUN.exit + RUN_EMULATION_FAILURE.flags, true) & 1n) {
            const n = Math.min(15, run.getUint8(RUN.exit + RUN_EMULATION_FAILURE.insn_size));
            const at = RUN.exit + RUN_EMULATION_FAILURE.insn_bytes;
            x.insnBytes = this.runBytes.slice(at, at + n);
          }
        } else x.detail = `KVM internal error, suberror ${sub}`;
        break;
      }
      case EXIT.FAIL_ENTRY:
        x.kind = 'failure';
        x.detail = `KVM could not enter the vCPU (hardware reason 0x${run.getBigUint64(RUN.exit, true).toString(16)})`;
        break;
      default:
        x.kind = 'failure';
        x.detail = `unexpected KVM exit ${EXIT_NAMES[reason] ?? reason}`;
    }
    return x;
  }

  /**
   * KVM finishes a KVM_EXIT_XEN hypercall at the next KVM_RUN: RAX from hcall.result, RIP past the
   * VMCALL. Done at once, without running the guest (immediate_exit), with RAX left as it is, so the
   * exit looks as the software CPU's does (RIP past the instruction, RAX the call number) and the
   * hypervisor's result, or its continuation's RIP, goes in through the registers like any other.
   */
  private completeXenHypercall(): void {
    this.runPage.setBigUint64(RUN.exit + RUN_XEN.result, this.reg(REG.rax), true);
    const r = this.enterImmediate();
    if (r !== EXIT_INTERRUPTED) throw new KvmError(`KVM_RUN with immediate_exit after KVM_EXIT_XEN returned exit ${EXIT_NAMES[r] ?? r}`);
  }

  /** The hypervisor's answer to an MSR exit goes into kvm_run before the next KVM_RUN. */
  private answerMsr(): void {
    const x = this.exit;
    if (x.kind === 'rdmsr' || x.kind === 'wrmsr') {
      this.runPage.setUint8(RUN.exit + RUN_MSR.error, x.msr.error ? 1 : 0);
      if (x.kind === 'rdmsr') this.runPage.setBigUint64(RUN.exit + RUN_MSR.data, x.msr.value, true);
    }
  }

  /**
   * Completes the last exit (an IN's data, an MMIO read, an MSR) and hands KVM
   * the registers changed here, without running guest code: KVM_RUN with
   * immediate_exit (linux/kvm.h). Afterwards the sync area is KVM's state.
   */
  settle(): void {
    // Only an exit KVM completes at its next entry needs it (the sync area is otherwise KVM's state, as
    // of the last exit, plus what was written into it here), and a sync area KVM never filled.
    const k = this.exit.kind;
    if (this.synced && k !== 'io' && k !== 'mmio' && k !== 'rdmsr' && k !== 'wrmsr') return;
    this.answerMsr();
    this.enterImmediate();
    this.exit.kind = 'interrupted';
  }

  /** KVM_RUN with immediate_exit: KVM completes the last exit and applies the registers, running no guest code. */
  private enterImmediate(): number {
    this.runPage.setUint8(RUN.immediate_exit, 1);
    try {
      return this.enter();
    } finally {
      this.runPage.setUint8(RUN.immediate_exit, 0);
    }
  }

  /** The sync area holds KVM's registers (a KVM_RUN has filled it since setInitialState). */
  private synced = false;
  /** The state last read or written by getState/setState, while KVM has not run since (to skip unchanged parts). */
  private known: VcpuState | null = null;
  private caps: { xsave: boolean; xcrs: boolean; debugregs: boolean } | null = null;
  private get hostCaps(): { xsave: boolean; xcrs: boolean; debugregs: boolean } {
    return (this.caps ??= { xsave: this.vm.kvm.checkExtension('XSAVE') > 0, xcrs: this.vm.kvm.checkExtension('XCRS') > 0, debugregs: this.vm.kvm.checkExtension('DEBUGREGS') > 0 });
  }

  /** KVM_GET_XSAVE and KVM_GET_XCRS (KVM_GET_FPU where the host has no XSAVE: x87 and SSE only). */
  getFpu(): FpuState {
    const xsave = new Uint8Array(XSAVE.size);
    let xcr0 = XFEATURE.x87 | XFEATURE.sse;
    if (this.hostCaps.xsave) {
      const b = new Uint8Array(KVM_XSAVE_SIZE);
      libc.check(libc.ioctlPtr(this.fd, KVM_GET_XSAVE, b), 'KVM_GET_XSAVE');
      xsave.set(b.subarray(0, XSAVE.size));
    } else {
      const b = new Uint8Array(FPU.size);
      libc.check(libc.ioctlPtr(this.fd, KVM_GET_FPU, b), 'KVM_GET_FPU');
      const f = new DataView(b.buffer);
      const d = new DataView(xsave.buffer);
      d.setUint16(XSAVE.fcw, f.getUint16(FPU.fcw, true), true);
      d.setUint16(XSAVE.fsw, f.getUint16(FPU.fsw, true), true);
      d.setUint8(XSAVE.ftw, f.getUint8(FPU.ftwx));
      d.setUint16(XSAVE.fop, f.getUint16(FPU.opcode, true), true);
      d.setBigUint64(XSAVE.fip, f.getBigUint64(FPU.ip, true), true);
      d.setBigUint64(XSAVE.fdp, f.getBigUint64(FPU.dp, true), true);
      d.setUint32(XSAVE.mxcsr, f.getUint32(FPU.mxcsr, true), true);
      d.setUint32(XSAVE.mxcsrMask, 0xffff, true);
      xsave.set(b.subarray(FPU.fpr, FPU.fpr + 128), XSAVE.st);
      xsave.set(b.subarray(FPU.xmm, FPU.xmm + 256), XSAVE.xmm);
      d.setBigUint64(XSAVE.xstateBv, XFEATURE.x87 | XFEATURE.sse, true);
    }
    if (this.hostCaps.xcrs) {
      const b = new Uint8Array(KVM_XCRS_SIZE);
      libc.check(libc.ioctlPtr(this.fd, KVM_GET_XCRS, b), 'KVM_GET_XCRS');
      const d = new DataView(b.buffer);
      for (let i = 0; i < d.getUint32(0, true); i++) if (d.getUint32(8 + 16 * i, true) === 0) xcr0 = d.getBigUint64(16 + 16 * i, true);
    }
    return { xsave, xcr0 };
  }

  setFpu(f: FpuState): void {
    if (this.hostCaps.xcrs) {
      const b = new Uint8Array(KVM_XCRS_SIZE);
      const d = new DataView(b.buffer);
      d.setUint32(0, 1, true);
      d.setUint32(8, 0, true);
      d.setBigUint64(16, f.xcr0, true);
      libc.check(libc.ioctlPtr(this.fd, KVM_SET_XCRS, b), 'KVM_SET_XCRS');
    }
    if (this.hostCaps.xsave) {
      // Components beyond AVX are not carried: they keep KVM's values.
      const b = new Uint8Array(KVM_XSAVE_SIZE);
      libc.check(libc.ioctlPtr(this.fd, KVM_GET_XSAVE, b), 'KVM_GET_XSAVE');
      const d = new DataView(b.buffer);
      const others = d.getBigUint64(XSAVE.xstateBv, true) & ~(XFEATURE.x87 | XFEATURE.sse | XFEATURE.avx);
      b.set(f.xsave.subarray(0, XSAVE.size));
      const mine = new DataView(f.xsave.buffer, f.xsave.byteOffset).getBigUint64(XSAVE.xstateBv, true) & (XFEATURE.x87 | XFEATURE.sse | XFEATURE.avx);
      d.setBigUint64(XSAVE.xstateBv, others | mine, true);
      d.setBigUint64(XSAVE.xcompBv, 0n, true);
      libc.check(libc.ioctlPtr(this.fd, KVM_SET_XSAVE, b), 'KVM_SET_XSAVE');
      return;
    }
    const b = new Uint8Array(FPU.size);
    const d = new DataView(b.buffer);
    const s = new DataView(f.xsave.buffer, f.xsave.byteOffset);
    d.setUint16(FPU.fcw, s.getUint16(XSAVE.fcw, true), true);
    d.setUint16(FPU.fsw, s.getUint16(XSAVE.fsw, true), true);
    d.setUint8(FPU.ftwx, s.getUint8(XSAVE.ftw));
    d.setUint16(FPU.opcode, s.getUint16(XSAVE.fop, true), true);
    d.setBigUint64(FPU.ip, s.getBigUint64(XSAVE.fip, true), true);
    d.setBigUint64(FPU.dp, s.getBigUint64(XSAVE.fdp, true), true);
    d.setUint32(FPU.mxcsr, s.getUint32(XSAVE.mxcsr, true), true);
    b.set(f.xsave.subarray(XSAVE.st, XSAVE.st + 128), FPU.fpr);
    b.set(f.xsave.subarray(XSAVE.xmm, XSAVE.xmm + 256), FPU.xmm);
    libc.check(libc.ioctlPtr(this.fd, KVM_SET_FPU, b), 'KVM_SET_FPU');
  }

  getState(): VcpuState {
    this.settle();
    const regs = Array.from(this.regs);
    const segs = {} as Record<SegName, SegmentState>;
    const d = this.runPage;
    for (const n of SEG_NAMES) {
      const o = this.sregsBase + SREGS[n];
      segs[n] = { ...this.segment(n), avl: d.getUint8(o + SEG.avl), unusable: d.getUint8(o + SEG.unusable) };
    }
    const dt = (w: 'gdt' | 'idt') => this.descriptorTable(w);
    const dbg = new Uint8Array(KVM_DEBUGREGS_SIZE);
    const dd = new DataView(dbg.buffer);
    if (this.hostCaps.debugregs) libc.check(libc.ioctlPtr(this.fd, KVM_GET_DEBUGREGS, dbg), 'KVM_GET_DEBUGREGS');
    else { dd.setBigUint64(32, 0xffff0ff0n, true); dd.setBigUint64(40, 0x400n, true); }
    const ev = new Uint8Array(VCPU_EVENTS_SIZE);
    libc.check(libc.ioctlPtr(this.fd, KVM_GET_VCPU_EVENTS, ev), 'KVM_GET_VCPU_EVENTS');
    const msrs = this.getMsrList([...CPU_MSR_LIST, IA32_TSC]);
    const tscNs = process.hrtime.bigint();
    const tsc = msrs.get(IA32_TSC)!;
    msrs.delete(IA32_TSC);
    return (this.known = {
      regs, segs, gdt: dt('gdt'), idt: dt('idt'),
      cr0: this.sreg64(SREGS.cr0), cr2: this.cr2, cr3: this.cr3, cr4: this.sreg64(SREGS.cr4), cr8: this.sreg64(SREGS.cr8), efer: this.sreg64(SREGS.efer),
      dr: [0, 1, 2, 3].map((i) => dd.getBigUint64(8 * i, true)), dr6: dd.getBigUint64(32, true), dr7: dd.getBigUint64(40, true),
      msrs, tsc, tscNs, fpu: this.getFpu(),
      events: {
        pendingInterrupt: ev[EVENTS.interrupt]! && !ev[EVENTS.interrupt + 2] ? ev[EVENTS.interrupt + 1]! : -1,
        interruptShadow: (ev[EVENTS.interrupt + 3]! & (KVM_X86_SHADOW_INT_MOV_SS | KVM_X86_SHADOW_INT_STI)) !== 0,
        nmiMasked: ev[EVENTS.nmi + 2] !== 0,
        // injected (delivery under way, not completed) and pending both mean the guest still has it to take
        nmiPending: ev[EVENTS.nmi] !== 0 || ev[EVENTS.nmi + 1] !== 0,
      },
    });
  }

  setState(s: VcpuState, o: { keepTsc?: boolean } = {}): void {
    // Registers through the sync area (KVM loads them at the next entry; reads here see them at once).
    s.regs.forEach((v, i) => { this.regs[i] = BigInt.asUintN(64, v); });
    const d = this.runPage;
    for (const n of SEG_NAMES) {
      const o = this.sregsBase + SREGS[n];
      writeKvmSegment(d, o, s.segs[n]);
      d.setUint8(o + SEG.avl, s.segs[n].avl);
      d.setUint8(o + SEG.unusable, s.segs[n].unusable);
    }
    for (const t of ['gdt', 'idt'] as const) {
      d.setBigUint64(this.sregsBase + SREGS[t], s[t].base, true);
      d.setUint16(this.sregsBase + SREGS[t] + 8, s[t].limit, true);
    }
    for (const k of ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer'] as const) d.setBigUint64(this.sregsBase + SREGS[k], s[k], true);
    // A pending interrupt goes in through the events, not the bitmap.
    for (let i = 0; i < 32; i++) d.setUint8(this.sregsBase + SREGS.interrupt_bitmap + i, 0);
    this.dirty |= KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
    // What KVM already has (read by getState, KVM not run since) is not written again: each ioctl costs.
    const k = this.known;
    const same = (a: bigint[], b: bigint[]) => a.length === b.length && a.every((v, i) => v === b[i]);
    if (this.hostCaps.debugregs && !(k && same(k.dr, s.dr) && k.dr6 === s.dr6 && k.dr7 === s.dr7)) {
      const dbg = new Uint8Array(KVM_DEBUGREGS_SIZE);
      const dd = new DataView(dbg.buffer);
      s.dr.forEach((v, i) => dd.setBigUint64(8 * i, v, true));
      dd.setBigUint64(32, s.dr6, true);
      dd.setBigUint64(40, s.dr7, true);
      libc.check(libc.ioctlPtr(this.fd, KVM_SET_DEBUGREGS, dbg), 'KVM_SET_DEBUGREGS');
    }
    const ev = new Uint8Array(VCPU_EVENTS_SIZE);
    const evd = new DataView(ev.buffer);
    if (s.events.pendingInterrupt >= 0) {
      ev[EVENTS.interrupt] = 1;
      ev[EVENTS.interrupt + 1] = s.events.pendingInterrupt;
    }
    ev[EVENTS.interrupt + 3] = s.events.interruptShadow ? KVM_X86_SHADOW_INT_STI : 0;
    ev[EVENTS.nmi + 1] = s.events.nmiPending ? 1 : 0;
    ev[EVENTS.nmi + 2] = s.events.nmiMasked ? 1 : 0;
    evd.setUint32(EVENTS.flags, KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_NMI_PENDING, true);
    const e = s.events;
    if (!(k && k.events.pendingInterrupt === e.pendingInterrupt && k.events.interruptShadow === e.interruptShadow && k.events.nmiMasked === e.nmiMasked && k.events.nmiPending === e.nmiPending)) {
      libc.check(libc.ioctlPtr(this.fd, KVM_SET_VCPU_EVENTS, ev), 'KVM_SET_VCPU_EVENTS');
    }
    const msrs = [...s.msrs].filter(([index, value]) => k?.msrs.get(index) !== value).map(([index, value]) => ({ index, value }));
    if (!o.keepTsc) msrs.push({ index: IA32_TSC, value: s.tsc + ((process.hrtime.bigint() - s.tscNs) * BigInt(this.tscKhz)) / 1_000_000n });
    if (msrs.length) this.setMsrs(msrs);
    const f = s.fpu;
    if (!(k && k.fpu.xcr0 === f.xcr0 && k.fpu.xsave.length === f.xsave.length && k.fpu.xsave.every((b, i) => b === f.xsave[i]))) this.setFpu(f);
    this.known = s;
    this.exit.kind = 'interrupted';
  }

  /**
   * KVM_SET_GUEST_DEBUG with hardware instruction breakpoints (DR0-DR3 as the
   * host's, DR7 local-enable, execute, length 1): KVM exits with
   * KVM_EXIT_DEBUG before the instruction runs. The guest's own debug
   * registers are kept apart by KVM meanwhile.
   */
  setGuestBreakpoints(addrs: bigint[]): void {
    if (addrs.length > 4) throw new RangeError('at most 4 hardware breakpoints');
    const b = new Uint8Array(KVM_GUEST_DEBUG_SIZE);
    const d = new DataView(b.buffer);
    let dr7 = 0x400n; // bit 10 reads as 1
    addrs.forEach((a, i) => {
      d.setBigUint64(8 + 8 * i, a, true);
      dr7 |= 1n << BigInt(2 * i);
    });
    d.setUint32(0, addrs.length ? KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP : 0, true);
    d.setBigUint64(8 + 7 * 8, dr7, true);
    libc.check(libc.ioctlPtr(this.fd, KVM_SET_GUEST_DEBUG, b), 'KVM_SET_GUEST_DEBUG');
  }

  /** Reads several MSRs in one KVM_GET_MSRS. */
  getMsrList(indices: number[]): Map<number, bigint> {
    const b = new Uint8Array(8 + indices.length * MSR_ENTRY_SIZE);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, indices.length, true);
    indices.forEach((idx, i) => dv.setUint32(8 + i * MSR_ENTRY_SIZE, idx, true));
    const n = libc.check(libc.ioctlPtr(this.fd, KVM_GET_MSRS, b), 'KVM_GET_MSRS');
    if (n !== indices.length) throw new KvmError(`KVM_GET_MSRS: MSR 0x${indices[n]!.toString(16)} refused`);
    const out = new Map<number, bigint>();
    indices.forEach((idx, i) => out.set(idx, dv.getBigUint64(8 + i * MSR_ENTRY_SIZE + 8, true)));
    return out;
  }

  get exitReason(): number {
    return this.runPage.getUint32(RUN.exit_reason, true);
  }

  get readyForInterruptInjection(): boolean {
    return this.runPage.getUint8(RUN.ready_for_interrupt_injection) !== 0;
  }

  get ifFlag(): boolean {
    return this.runPage.getUint8(RUN.if_flag) !== 0;
  }

  set requestInterruptWindow(v: boolean) {
    this.runPage.setUint8(RUN.request_interrupt_window, v ? 1 : 0);
  }

  // --- general registers, through the sync area ---
  reg(i: number): bigint {
    return this.regs[i]!;
  }

  setReg(i: number, v: bigint): void {
    this.regs[i] = BigInt.asUintN(64, v);
    this.dirty |= KVM_SYNC_X86_REGS;
  }

  get rip(): bigint {
    return this.regs[REG.rip]!;
  }

  set rip(v: bigint) {
    this.setReg(REG.rip, v);
  }

  // --- special registers, through the sync area ---
  sreg64(off: number): bigint {
    return this.runPage.getBigUint64(this.sregsBase + off, true);
  }

  setSreg64(off: number, v: bigint): void {
    this.runPage.setBigUint64(this.sregsBase + off, v, true);
    this.dirty |= KVM_SYNC_X86_SREGS;
  }

  get cr0(): number {
    return Number(this.sreg64(SREGS.cr0) & 0xffffffffn);
  }

  get cr3(): bigint {
    return this.sreg64(SREGS.cr3);
  }

  get cr2(): bigint {
    return this.sreg64(SREGS.cr2);
  }

  descriptorTable(which: 'gdt' | 'idt'): { base: bigint; limit: number } {
    const o = this.sregsBase + SREGS[which];
    return { base: this.runPage.getBigUint64(o, true), limit: this.runPage.getUint16(o + 8, true) };
  }

  get cr4(): number {
    return Number(this.sreg64(SREGS.cr4) & 0xffffffffn);
  }

  get efer(): number {
    return Number(this.sreg64(SREGS.efer) & 0xffffffffn);
  }

  segment(name: SegName): Segment {
    const o = this.sregsBase + SREGS[name];
    const d = this.runPage;
    return {
      base: Number(d.getBigUint64(o + SEG.base, true)),
      limit: d.getUint32(o + SEG.limit, true),
      selector: d.getUint16(o + SEG.selector, true),
      type: d.getUint8(o + SEG.type),
      present: d.getUint8(o + SEG.present),
      dpl: d.getUint8(o + SEG.dpl),
      db: d.getUint8(o + SEG.db),
      s: d.getUint8(o + SEG.s),
      l: d.getUint8(o + SEG.l),
      g: d.getUint8(o + SEG.g),
    };
  }

  /** Current privilege level (from SS.DPL, which is the CPL on x86; CS.DPL differs for conforming code). */
  get cpl(): number {
    return this.runPage.getUint8(this.sregsBase + SREGS.ss + SEG.dpl);
  }

  /** True when CS is a 64-bit code segment (long mode active). */
  get longMode64(): boolean {
    return this.runPage.getUint8(this.sregsBase + SREGS.cs + SEG.l) !== 0;
  }

  // --- ioctl-based accessors (outside the exit path) ---
  getRegs(): Uint8Array {
    const b = new Uint8Array(KVM_REGS_SIZE);
    libc.check(libc.ioctlPtr(this.fd, KVM_GET_REGS, b), 'KVM_GET_REGS');
    return b;
  }

  setRegs(b: Uint8Array): void {
    libc.check(libc.ioctlPtr(this.fd, KVM_SET_REGS, b), 'KVM_SET_REGS');
  }

  getSregs(): Uint8Array {
    const b = new Uint8Array(KVM_SREGS_SIZE);
    libc.check(libc.ioctlPtr(this.fd, KVM_GET_SREGS, b), 'KVM_GET_SREGS');
    return b;
  }

  setSregs(b: Uint8Array): void {
    libc.check(libc.ioctlPtr(this.fd, KVM_SET_SREGS, b), 'KVM_SET_SREGS');
  }


  /**
   * Writes the full initial state: general registers and special registers
   * with the given segments and control registers. Clears the sync-area dirty
   * bits so a stale sync area is not written back over it.
   */
  setInitialState(st: InitialState): void {
    const sb = this.getSregs();
    const sd = new DataView(sb.buffer);
    for (const [name, s] of Object.entries(st.segs) as [SegName, Segment][]) writeKvmSegment(sd, SREGS[name], s);
    const dt = (o: number, t?: { base: number; limit: number }) => {
      sd.setBigUint64(o, BigInt(t?.base ?? 0), true);
      sd.setUint16(o + 8, t?.limit ?? 0xffff, true);
    };
    dt(SREGS.gdt, st.gdt);
    dt(SREGS.idt, st.idt);
    sd.setBigUint64(SREGS.cr0, BigInt(st.cr0), true);
    sd.setBigUint64(SREGS.cr3, BigInt(st.cr3 ?? 0), true);
    sd.setBigUint64(SREGS.cr4, BigInt(st.cr4), true);
    sd.setBigUint64(SREGS.efer, BigInt(st.efer), true);
    // A start from reset (also after INIT of a vCPU that ran): no CR2 and no interrupt left from before.
    sd.setBigUint64(SREGS.cr2, 0n, true);
    for (let i = 0; i < 32; i++) sd.setUint8(SREGS.interrupt_bitmap + i, 0);
    this.setSregs(sb);
    const ev = new Uint8Array(VCPU_EVENTS_SIZE);
    new DataView(ev.buffer).setUint32(EVENTS.flags, KVM_VCPUEVENT_VALID_SHADOW, true);
    libc.check(libc.ioctlPtr(this.fd, KVM_SET_VCPU_EVENTS, ev), 'KVM_SET_VCPU_EVENTS');
    this.synced = false;
    this.known = null;
    const rb = new Uint8Array(KVM_REGS_SIZE);
    const rd = new DataView(rb.buffer);
    rd.setBigUint64(REG.rflags * 8, 2n, true);
    for (const [k, v] of Object.entries(st.regs)) rd.setBigUint64(REG[k as keyof typeof REG] * 8, BigInt.asUintN(64, v!), true);
    this.setRegs(rb);
    this.dirty = 0;
    this.runPage.setBigUint64(RUN.kvm_dirty_regs, 0n, true);
  }

  setCpuid(entries: CpuidEntry[]): void {
    const buf = new Uint8Array(8 + entries.length * CPUID_ENTRY.size);
    const dv = new DataView(buf.buffer);
    dv.setUint32(0, entries.length, true);
    entries.forEach((e, i) => {
      const o = 8 + i * CPUID_ENTRY.size;
      dv.setUint32(o + CPUID_ENTRY.function, e.function, true);
      dv.setUint32(o + CPUID_ENTRY.index, e.index, true);
      dv.setUint32(o + CPUID_ENTRY.flags, e.flags, true);
      dv.setUint32(o + CPUID_ENTRY.eax, e.eax >>> 0, true);
      dv.setUint32(o + CPUID_ENTRY.ebx, e.ebx >>> 0, true);
      dv.setUint32(o + CPUID_ENTRY.ecx, e.ecx >>> 0, true);
      dv.setUint32(o + CPUID_ENTRY.edx, e.edx >>> 0, true);
    });
    libc.check(libc.ioctlPtr(this.fd, KVM_SET_CPUID2, buf), 'KVM_SET_CPUID2');
  }

  setMsrs(msrs: { index: number; value: bigint }[]): void {
    const b = new Uint8Array(8 + msrs.length * MSR_ENTRY_SIZE);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, msrs.length, true);
    msrs.forEach((m, i) => {
      dv.setUint32(8 + i * 16, m.index, true);
      dv.setBigUint64(8 + i * 16 + 8, m.value, true);
    });
    const n = libc.check(libc.ioctlPtr(this.fd, KVM_SET_MSRS, b), 'KVM_SET_MSRS');
    if (n !== msrs.length) throw new KvmError(`KVM_SET_MSRS: MSR 0x${msrs[n]!.index.toString(16)} refused`);
  }

  /** Reads one MSR (e.g. IA32_TSC, the guest's TSC now). */
  getMsr(index: number): bigint {
    const b = this.msrBuf;
    const dv = new DataView(b.buffer);
    dv.setUint32(0, 1, true);
    dv.setUint32(8, index, true);
    const n = libc.check(libc.ioctlPtr(this.fd, KVM_GET_MSRS, b), 'KVM_GET_MSRS');
    if (n !== 1) throw new KvmError(`KVM_GET_MSRS: MSR 0x${index.toString(16)} refused`);
    return dv.getBigUint64(16, true);
  }

  private readonly msrBuf = new Uint8Array(8 + MSR_ENTRY_SIZE);

  /** Queues an external interrupt (no in-kernel irqchip): delivered at the next entry with IF open. */
  interrupt(vector: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, vector, true);
    libc.check(libc.ioctlPtr(this.fd, KVM_INTERRUPT, b), 'KVM_INTERRUPT');
  }

  /**
   * Leaves the vCPU to another thread's Vcpu on the same fd: the last exit
   * completed, and the registers written here marked dirty in kvm_run (the
   * page both map), so that object's first KVM_RUN loads them.
   */
  handOff(): void {
    this.settle();
    if (this.dirty) {
      const run = this.runPage;
      run.setBigUint64(RUN.kvm_dirty_regs, run.getBigUint64(RUN.kvm_dirty_regs, true) | BigInt(this.dirty), true);
      this.dirty = 0;
    }
    this.known = null;
  }

  /** Takes the vCPU over from another thread's Vcpu (its handOff): what this object remembered of KVM's state may be old. */
  takeOver(): void {
    this.known = null;
    this.exit.kind = 'interrupted';
  }

  /** Queues an NMI (KVM_NMI): KVM delivers it at the next entry where NMIs are not blocked. */
  nmi(): void {
    libc.check(libc.ioctlInt(this.fd, KVM_NMI, 0), 'KVM_NMI');
    this.known = null; // KVM's events changed under the copy setState compares with
  }

  /**
   * Sets the signal mask in force while this vCPU is inside KVM_RUN. Pass the
   * thread's mask minus the kick signal, so a kick interrupts KVM_RUN and
   * stays pending (blocked) outside it: no JS signal handler runs.
   */
  setSignalMask(kernelSigset: Uint8Array): void {
    const b = new Uint8Array(4 + kernelSigset.length);
    new DataView(b.buffer).setUint32(0, kernelSigset.length, true);
    b.set(kernelSigset, 4);
    libc.check(libc.ioctlPtr(this.fd, KVM_SET_SIGNAL_MASK, b), 'KVM_SET_SIGNAL_MASK');
  }

  get tscKhz(): number {
    return libc.check(libc.ioctlInt(this.fd, KVM_GET_TSC_KHZ, 0), 'KVM_GET_TSC_KHZ');
  }

  /** Unmaps kvm_run here but keeps the fd open (another thread will run the vCPU). */
  release(): void {
    if (this.closed) return;
    this.closed = true;
    libc.munmap(this.mapping, this.vm.kvm.vcpuMmapSize);
  }

  close(): void {
    if (this.closed) return;
    this.release();
    libc.close(this.fd);
  }
}

export { EXIT };
