// Hypercall dispatch (Xen's hypercall_table / hvm_hypercall): decode the
// arguments for the caller's ABI, refuse callers above CPL0, run the family's
// handler, and turn XenError / GuestFault into -errno in RAX.

import { REG } from '../kvm/abi.js';
import type { Domain, VCpu } from './domain.js';
import { GuestAccess, GuestFault } from './guest_access.js';
import { EFAULT, ENOSYS, EPERM, ESRCH, XenError } from './errno.js';
import { Abi, DOMID_SELF } from './abi/xen.js';

/** What a handler sees of the call. */
export class Hcall {
  abi: Abi = 'x64';
  nr = 0;
  readonly args: bigint[] = [0n, 0n, 0n, 0n, 0n, 0n];
  /** Set by handlers that stop the vCPU's slice (block, poll, yield, shutdown). */
  deschedule = false;
  /** Set by preempt(): argument registers to rewrite before the call is re-executed. */
  continuation: Map<number, bigint> | null = null;
  /** Made by VMCALL/VMMCALL (RIP past it), not through the hypercall page's port: a continuation re-executes that instruction. */
  viaInsn = false;
  /** The caller's paging state, for guest pointers. */
  context: CallerContext = { cr0: 0, cr3: 0n, cr4: 0, efer: 0 };

  constructor(readonly dom: Domain, readonly vcpu: VCpu) {}

  get g(): GuestAccess {
    return this.dom.access;
  }

  /**
   * The domain a sub-op names: the caller itself for DOMID_SELF or its own id.
   * Xen looks the domain up before the permission check, so a domain that
   * does not exist is -ESRCH and another domain is -EPERM for a domU. (A
   * privileged guest acting on other domains is not supported yet: -ESRCH.)
   */
  target(domid: number): Domain {
    if (domid === DOMID_SELF || domid === this.dom.domid) return this.dom;
    if (!this.dom.host.domainExists(domid) || this.dom.privileged) throw new XenError(ESRCH);
    throw new XenError(EPERM);
  }

  get x32(): boolean {
    return this.abi === 'x32';
  }

  /** Argument i as an unsigned machine word (a guest pointer, an unsigned long). */
  ptr(i: number): bigint {
    return this.args[i]!;
  }

  /** Argument i as a C int (sub-op numbers, counts). */
  int(i: number): number {
    return Number(BigInt.asIntN(32, this.args[i]!));
  }

  /** Argument i as an unsigned int. */
  uint(i: number): number {
    return Number(BigInt.asUintN(32, this.args[i]!));
  }

  /** Argument i as a signed long of the caller's ABI. */
  long(i: number): bigint {
    return this.x32 ? BigInt.asIntN(32, this.args[i]!) : BigInt.asIntN(64, this.args[i]!);
  }

  /**
   * Xen's hypercall_create_continuation: the call stops here and the guest
   * re-executes it (with the given arguments changed), so a long operation
   * driven by guest-chosen counts never holds the pCPU for long.
   */
  preempt(args: Record<number, bigint> = {}): number {
    this.continuation = new Map(Object.entries(args).map(([k, v]) => [Number(k), v]));
    return 0;
  }

  /** Argument i as a u64 scalar (split lo/hi over two registers in the 32-bit ABI). */
  u64(i: number): bigint {
    return this.x32 ? (this.args[i]! & 0xffffffffn) | ((this.args[i + 1]! & 0xffffffffn) << 32n) : this.args[i]!;
  }
}

export type HypercallHandler = (h: Hcall) => number | bigint;

const table: (HypercallHandler | undefined)[] = new Array(64);

const ARG_REGS_64 = [REG.rdi, REG.rsi, REG.rdx, REG.r10, REG.r8, REG.r9];
const ARG_REGS_32 = [REG.rbx, REG.rcx, REG.rdx, REG.rsi, REG.rdi, REG.rbp];
/** VMCALL (0f 01 c1) and VMMCALL (0f 01 d9): what a continuation steps back over, as Xen leaves RIP at them. */
const HYPERCALL_INSN_LEN = 3n;
/**
 * Stubs are 32-byte aligned in the hypercall page. A continuation restarts
 * the whole stub (mov $nr,%eax; out): KVM may report RIP at the `out` (fast
 * PIO, skipped on re-entry unless RIP changed) or after it (emulated), and
 * the stub's start is right in both cases.
 */
const STUB_ALIGN_MASK = ~31n;

/** Registers a hypercall family (each family module calls this once). */
export function registerHypercall(nr: number, fn: HypercallHandler): void {
  table[nr] = fn;
}

/** Debug hook: set XENODE_TRACE_HYPERCALLS=1 to log every call and its result. */
const trace = process.env.XENODE_TRACE_HYPERCALLS === '1';


/** The paging context of the vCPU that made a call (to translate its pointers elsewhere). */
export interface CallerContext {
  cr0: number;
  cr3: bigint;
  cr4: number;
  efer: number;
}

/**
 * Reads the trapped call's ABI and arguments from the vCPU's registers; false
 * when the caller may not make hypercalls at all (CPL > 0: -EPERM).
 */
export function beginHypercall(h: Hcall, nr: number): boolean {
  const hw = h.vcpu.hw;
  const long = hw.longMode64;
  h.abi = long ? 'x64' : 'x32';
  h.nr = nr;
  h.deschedule = false;
  h.continuation = null;
  if (hw.cpl !== 0) return false;
  const a = h.args;
  const regs = long ? ARG_REGS_64 : ARG_REGS_32;
  const mask = long ? 0xffffffffffffffffn : 0xffffffffn;
  for (let i = 0; i < 6; i++) a[i] = hw.reg(regs[i]!) & mask;
  // Filled in place (no object per call): a forwarded call's copy is made when its message is posted.
  const c = h.context;
  c.cr0 = hw.cr0;
  c.cr3 = hw.cr3;
  c.cr4 = hw.cr4;
  c.efer = hw.efer;
  return true;
}

/** Runs the family handler for a decoded call; XenError and GuestFault become -errno. */
export function runHypercall(h: Hcall): bigint {
  h.dom.access.setContext(h.context);
  // The guest may have changed its page tables since the last call (same CR3): walk afresh.
  h.dom.access.flush();
  const fn = h.nr < table.length ? table[h.nr] : undefined;
  try {
    return fn ? BigInt(fn(h)) : -BigInt(ENOSYS);
  } catch (e) {
    if (e instanceof XenError) return -BigInt(e.errno);
    if (e instanceof GuestFault) return -BigInt(EFAULT);
    throw e; // a bug of ours: the caller crashes the domain with the stack
  }
}

/** Writes the outcome back: the result in RAX, or the continuation (the stub re-executes). */
export function endHypercall(h: Hcall, result: bigint): boolean {
  const hw = h.vcpu.hw;
  const long = h.abi === 'x64';
  const cont = h.continuation as Map<number, bigint> | null; // set by the handler, if at all
  if (cont) {
    const regs = long ? ARG_REGS_64 : ARG_REGS_32;
    for (const [i, v] of cont) hw.setReg(regs[i]!, v);
    hw.setReg(REG.rax, BigInt(h.nr));
    hw.rip = h.viaInsn ? hw.rip - HYPERCALL_INSN_LEN : hw.rip & STUB_ALIGN_MASK;
    if (trace) process.stderr.write(`d${h.dom.domid}v${h.vcpu.id} hypercall ${h.nr} preempted (continuation)\n`);
    return h.deschedule;
  }
  if (trace) process.stderr.write(`d${h.dom.domid}v${h.vcpu.id} hypercall ${h.nr}(${h.args.slice(0, 3).map((x) => '0x' + x.toString(16)).join(', ')}) = ${result}\n`);
  hw.setReg(REG.rax, long ? result : BigInt.asUintN(32, result));
  return h.deschedule;
}

/**
 * Performs the hypercall the vCPU just trapped with (number `nr`), reading
 * arguments from the sync-regs area and writing the result to RAX. True when
 * the vCPU should leave the pCPU.
 */
export function doHypercall(h: Hcall, nr: number, viaInsn = false): boolean {
  h.viaInsn = viaInsn;
  const result = beginHypercall(h, nr) ? runHypercall(h) : -BigInt(EPERM);
  return endHypercall(h, result);
}
