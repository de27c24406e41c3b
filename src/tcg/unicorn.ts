// Unicorn (QEMU's TCG as a library) over koffi: the few entry points and
// numbers the software CPU uses. Numbers come from unicorn/unicorn.h and
// unicorn/x86.h of Unicorn 2.1 (checked against those headers by
// unicorn.test.ts). Nothing here knows Xen.

import koffi, { type TypeObject, type LibraryHandle } from 'koffi';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export class UnicornError extends Error {}

// uc_arch / uc_mode (unicorn.h)
export const UC_ARCH_X86 = 4;
export const UC_MODE_64 = 8;
// uc_prot
export const UC_PROT_READ = 1;
export const UC_PROT_WRITE = 2;
export const UC_PROT_ALL = 7;
// uc_hook_type
export const UC_HOOK_INTR = 1 << 0;
export const UC_HOOK_INSN = 1 << 1;
export const UC_HOOK_CODE = 1 << 2;
export const UC_HOOK_BLOCK = 1 << 3;
// uc_err
export const UC_ERR_OK = 0;
export const UC_ERR_READ_UNMAPPED = 6;
export const UC_ERR_WRITE_UNMAPPED = 7;
export const UC_ERR_FETCH_UNMAPPED = 8;
export const UC_ERR_INSN_INVALID = 10;
export const UC_ERR_EXCEPTION = 21;
// uc_ctl: UC_CTL_WRITE(UC_CTL_CPU_MODEL, 1) and UC_CTL_WRITE(UC_CTL_TLB_FLUSH, 0)
export const UC_CTL_CPU_MODEL_WRITE = 0x44000007;
export const UC_CTL_TLB_FLUSH_WRITE = 0x4000000b;
/** UC_CPU_X86_EPYC: a model whose features QEMU's TCG filters to what it can run. */
export const UC_CPU_X86_EPYC = 35;

// uc_x86_insn (x86.h) for UC_HOOK_INSN
export const UC_X86_INS_IN = 218;
export const UC_X86_INS_OUT = 500;
export const UC_X86_INS_CPUID = 113;
export const UC_X86_INS_RDMSR = 604;
export const UC_X86_INS_WRMSR = 1305;
export const UC_X86_INS_RDTSC = 608;
export const UC_X86_INS_RDTSCP = 609;
export const UC_X86_INS_SYSCALL = 699;
export const UC_X86_INS_SYSENTER = 700;

// uc_x86_reg (x86.h)
export const UC_X86_REG = {
  RAX: 35, RBX: 37, RCX: 38, RDX: 40, RSI: 43, RDI: 39, RBP: 36, RSP: 44,
  R8: 106, R9: 107, R10: 108, R11: 109, R12: 110, R13: 111, R14: 112, R15: 113,
  RIP: 41, RFLAGS: 253, EFLAGS: 25,
  CR0: 50, CR2: 52, CR3: 53, CR4: 54, DR0: 66, DR1: 67, DR2: 68, DR3: 69,
  GDTR: 243, IDTR: 242, LDTR: 244, TR: 245, MSR: 248, MXCSR: 249, FPCW: 246,
  CR8: 58, DR6: 72, DR7: 73,
  // x87 and SSE: FP0-FP7 are the physical registers R0-R7 (80 bits each), XMM/YMM 0-15 follow their first
  FPSW: 31, FPTAG: 247, FIP: 254, FCS: 255, FDP: 256, FDS: 257, FOP: 258, FP0: 82, XMM0: 122, YMM0: 154,
} as const;

/** The library: $XENODE_UNICORN, else the copy scripts/setup.sh installs, else the system's. */
export function unicornLibraryPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.XENODE_UNICORN) return env.XENODE_UNICORN;
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const up of ['../..', '../../..']) {
    const p = path.resolve(here, up, '.cache', 'unicorn', 'unicorn', 'lib', 'libunicorn.so.2');
    if (fs.existsSync(p)) return p;
  }
  return 'libunicorn.so.2';
}

/** The pseudo-exception the native shim raises at RDMSR/WRMSR (below EXCP_INTERRUPT, above every x86 vector). */
export const XENODE_MSR_EXIT = 0xfe00;
/** The pseudo-exception the native shim raises at port I/O to a port that exits (error code: port | size << 16 | IN << 20). */
export const XENODE_IO_EXIT = 0xfe01;
/** Bits of the native run's result above the uc_err (msr_exit.c). */
export const RUN_KICKED = 0x100;
export const RUN_WINDOW = 0x200;

/** The native shim (src/tcg/native/msr_exit.c), built next to the compiled code. */
export function shimLibraryPath(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return path.resolve(here, '..', '..', 'native', 'libxenode_tcg.so');
}

export interface UnicornLib {
  readonly path: string;
  /** MSR accesses go to QEMU itself while on (for the MSRs QEMU implements). */
  passthrough(on: number): void;
  readonly version: string;
  open(arch: number, mode: number, out: unknown[]): number;
  close(uc: unknown): number;
  strerror(e: number): string;
  ctl(uc: unknown, ctl: number, ...args: unknown[]): number;
  memMapPtr(uc: unknown, addr: bigint, size: number, perms: number, host: bigint): number;
  memUnmap(uc: unknown, addr: bigint, size: number): number;
  mmioMap(uc: unknown, addr: bigint, size: number, read: unknown, readUd: bigint, write: unknown, writeUd: bigint): number;
  regRead(uc: unknown, id: number, out: Uint8Array): number;
  regWrite(uc: unknown, id: number, value: Uint8Array): number;
  vmemRead(uc: unknown, addr: bigint, prot: number, out: Uint8Array, size: number): number;
  vmemWrite(uc: unknown, addr: bigint, prot: number, data: Uint8Array, size: number): number;
  emuStart(uc: unknown, begin: bigint, until: bigint, timeout: number, count: number): number;
  emuStop(uc: unknown): number;

  contextAlloc(uc: unknown, out: unknown[]): number;
  contextSave(uc: unknown, ctx: unknown): number;
  contextRestore(uc: unknown, ctx: unknown): number;
  contextSize(uc: unknown): number;
  contextFree(ctx: unknown): number;
  hookAdd(uc: unknown, out: bigint[], type: number, cb: unknown, ud: unknown, begin: bigint, end: bigint, ...extra: number[]): number;
  hookAddRaw(uc: unknown, out: bigint[], type: number, cb: unknown, ud: unknown, begin: bigint, end: bigint): number;
  /**
   * One run of an engine until a stop (msr_exit.c): the uc_err, with
   * RUN_KICKED when a stop was asked for and RUN_WINDOW when the guest can
   * take the interrupt it waits for (`window`).
   */
  /** `count`: at most that many instructions (0: no limit). */
  run(flag: unknown, uc: unknown, begin: bigint, until: bigint, window: number, ports: Uint8Array | null, count: number): number;
  /** From a hook inside a run: end the run at the next block boundary (not reported as a kick). */
  stopHere(): void;
  /** The shim forgets an engine (before uc_close, on its thread). */
  engineForget(uc: unknown): void;
  /** The next access to a port that exits is done during the access instead (in the next run). */
  ioPass(): void;
  /** A vCPU's TSC parameters (native: base_ns, khz, offset, all int64) for the RDTSC hooks. */
  tscNew(): unknown;
  readonly rdtscHook: unknown;
  readonly rdtscpHook: unknown;
  /** A new stop flag (native memory) for one pCPU's engines. */
  stopFlagNew(): unknown;
  /** Asks the run in progress, or the next one, to stop (any thread). */
  stopFlagRequest(flag: bigint): void;
  /** The shim's block hook (msr_exit.c): ends the run before the first block outside CPL 0 while asked (stopFlagAtUser). */
  readonly blockHook: unknown;
  stopFlagAtUser(flag: unknown, on: number): void;
  stopFlagUserTaken(flag: unknown): number;
  readonly protos: {
    out: TypeObject;
    in: TypeObject;
    insn: TypeObject;
    intr: TypeObject;
    syscall: TypeObject;
    mmioRead: TypeObject;
    mmioWrite: TypeObject;
    memFault: TypeObject;
  };
}

let loaded: UnicornLib | null = null;
let loadError: Error | null = null;

/** Loads libunicorn once per thread; a clear UnicornError when it is missing or older than 2.1. */
export function unicorn(): UnicornLib {
  if (loaded) return loaded;
  if (loadError) throw loadError;
  const p = unicornLibraryPath();
  let lib: LibraryHandle;
  let shim: LibraryHandle;
  try {
    // The shim first and global: its symbols must win libunicorn's own PLT references (msr_exit.c).
    shim = koffi.load(shimLibraryPath(), { global: true });
  } catch (e) {
    loadError = new UnicornError(`the software CPU's native shim is missing (${shimLibraryPath()}: ${(e as Error).message}); run npm run build`);
    throw loadError;
  }
  try {
    lib = koffi.load(p);
  } catch (e) {
    loadError = new UnicornError(`the software CPU needs Unicorn 2.1 (libunicorn.so.2), not found at ${p}: ${(e as Error).message}; run scripts/setup.sh, or set XENODE_UNICORN`);
    throw loadError;
  }
  const ver = (lib.func('unsigned int uc_version(void *major, void *minor)') as (a: null, b: null) => number)(null, null);
  const major = ver >>> 24;
  const minor = (ver >>> 16) & 0xff;
  const patch = (ver >>> 8) & 0xff;
  // 2.0 does not walk guest page tables (its TLB maps virtual to physical 1:1).
  if (major < 2 || (major === 2 && minor < 1)) {
    loadError = new UnicornError(`${p} is Unicorn ${major}.${minor}.${patch}; the software CPU needs 2.1 or later (2.0 does not translate through guest page tables)`);
    throw loadError;
  }
  const OutCb = koffi.proto('void xenode_uc_out(void *uc, uint32_t port, int size, uint32_t value, void *ud)');
  const InCb = koffi.proto('uint32_t xenode_uc_in(void *uc, uint32_t port, int size, void *ud)');
  const InsnCb = koffi.proto('int xenode_uc_insn(void *uc, void *ud)');
  const IntrCb = koffi.proto('void xenode_uc_intr(void *uc, uint32_t intno, void *ud)');
  const SyscallCb = koffi.proto('void xenode_uc_syscall(void *uc, void *ud)');
  const MmioRead = koffi.proto('uint64_t xenode_uc_mmio_read(void *uc, uint64_t offset, unsigned int size, uint64_t ud)');
  const MmioWrite = koffi.proto('void xenode_uc_mmio_write(void *uc, uint64_t offset, unsigned int size, uint64_t value, uint64_t ud)');
  const MemFault = koffi.proto('bool xenode_uc_mem_fault(void *uc, int type, uint64_t address, int size, int64_t value, void *ud)');
  const hookAdd = lib.func('uc_hook_add', 'int', ['void *', '_Out_ uint64_t *', 'int', 'void *', 'void *', 'uint64_t', 'uint64_t', '...']);
  const libc = koffi.load('libc.so.6');
  const f = <T>(decl: string) => lib.func(decl) as T;
  const handle = (libc.func('void *dlopen(const char *path, int flags)') as (p: string, f: number) => unknown)(p, 2 /* RTLD_NOW */ | 4 /* RTLD_NOLOAD */);
  const raise = dlsymIn(libc, handle, 'raise_exception_err_ra_x86_64');
  if (!raise) {
    loadError = new UnicornError(`${p} has no raise_exception_err_ra_x86_64: not a Unicorn 2.1 x86 build xenode knows`);
    throw loadError;
  }
  const shimHandle = (libc.func('void *dlopen(const char *path, int flags)') as (p: string, f: number) => unknown)(shimLibraryPath(), 2 | 4);
  const own = (name: string) => {
    const sym = dlsymIn(libc, handle, name);
    if (!sym) throw new UnicornError(`${p} has no ${name}: not a Unicorn 2.1 x86 build xenode knows`);
    return sym;
  };
  try {
    // QEMU's port I/O helpers (outb, outw, outl, inb, inw, inl) and what code_pages.c builds on (the shim's take their place)
    const helpers = new BigUint64Array([
      ...['outb', 'outw', 'outl', 'inb', 'inw', 'inl'].map((n) => `helper_${n}_x86_64`),
      'tlb_protect_code_x86_64', 'tlb_unprotect_code_x86_64', 'tlb_set_page_with_attrs_x86_64', 'address_space_translate_for_iotlb_x86_64',
      'memory_region_get_ram_addr_x86_64', 'qemu_map_ram_ptr_x86_64', 'tlb_reset_dirty_x86_64', 'tlb_set_dirty_x86_64', 'uc_ctl',
    ].map((n) => koffi.address(own(n))));
    (shim.func('void xenode_tcg_init(void *raise, void *stop, void *start, void *cpu_exit, void *cpu_exec, void *handler, void *reset, void *hardirq, void *helpers, void *reg_read, void *reg_write, int vector, int io_vector)') as (...a: unknown[]) => void)(
      raise, own('uc_emu_stop'), own('uc_emu_start'), own('cpu_exit'), own('cpu_exec_x86_64'), own('cpu_interrupt_handler'), own('cpu_reset_interrupt'),
      own('do_interrupt_x86_hardirq_x86_64'), helpers, own('uc_reg_read'), own('uc_reg_write'), XENODE_MSR_EXIT, XENODE_IO_EXIT);
    // QEMU's atomic and fence generators (atomics.c calls them for parallel CPUs)
    const rmw = ['fetch_add', 'fetch_and', 'fetch_or', 'fetch_xor', 'fetch_smin', 'fetch_umin', 'fetch_smax', 'fetch_umax',
      'add_fetch', 'and_fetch', 'or_fetch', 'xor_fetch', 'smin_fetch', 'umin_fetch', 'smax_fetch', 'umax_fetch', 'xchg'];
    const generators = new BigUint64Array([
      'tcg_gen_mb_x86_64', 'tcg_gen_atomic_cmpxchg_i32_x86_64', 'tcg_gen_atomic_cmpxchg_i64_x86_64',
      ...rmw.flatMap((op) => [`tcg_gen_atomic_${op}_i32_x86_64`, `tcg_gen_atomic_${op}_i64_x86_64`]),
      'tb_gen_code_x86_64', 'cpu_exec_x86_64',
    ].map((n) => koffi.address(own(n))));
    const atomics = (shim.func('int xenode_atomics_init(void *fns)') as (f: BigUint64Array) => number)(generators);
    if (atomics !== 0) {
      throw new UnicornError(`${p}: ${atomics === -1 ? 'tcg_gen_mb does not test CF_PARALLEL' : 'cpu_exec does not reset cflags_next_tb'} where Unicorn 2.1's x86 build does; guest atomics and fences cannot be made to hold between threads with this build`);
    }
  } catch (e) {
    loadError = e as Error;
    throw e;
  }
  loaded = {
    path: p,
    passthrough: shim.func('void xenode_tcg_passthrough(int on)') as (on: number) => void,
    version: `${major}.${minor}.${patch}`,
    open: f('int uc_open(int arch, int mode, _Out_ void **uc)'),
    close: f('int uc_close(void *uc)'),
    strerror: f('const char *uc_strerror(int code)'),
    ctl: f('int uc_ctl(void *uc, int control, ...)'),
    memMapPtr: lib.func('uc_mem_map_ptr', 'int', ['void *', 'uint64_t', 'size_t', 'uint32_t', 'uint64_t']) as UnicornLib['memMapPtr'],
    memUnmap: f('int uc_mem_unmap(void *uc, uint64_t address, size_t size)'),
    mmioMap: lib.func('uc_mmio_map', 'int', ['void *', 'uint64_t', 'uint64_t', koffi.pointer(MmioRead), 'uint64_t', koffi.pointer(MmioWrite), 'uint64_t']) as UnicornLib['mmioMap'],
    regRead: f('int uc_reg_read(void *uc, int regid, _Out_ void *value)'),
    regWrite: f('int uc_reg_write(void *uc, int regid, const void *value)'),
    vmemRead: f('int uc_vmem_read(void *uc, uint64_t address, int prot, _Out_ void *bytes, size_t size)'),
    vmemWrite: f('int uc_vmem_write(void *uc, uint64_t address, int prot, const void *bytes, size_t size)'),
    emuStart: f('int uc_emu_start(void *uc, uint64_t begin, uint64_t until, uint64_t timeout, size_t count)'),
    emuStop: f('int uc_emu_stop(void *uc)'),
    contextAlloc: f('int uc_context_alloc(void *uc, _Out_ void **context)'),
    contextSave: f('int uc_context_save(void *uc, void *context)'),
    contextRestore: f('int uc_context_restore(void *uc, void *context)'),
    contextSize: f('size_t uc_context_size(void *uc)'),
    contextFree: f('int uc_context_free(void *context)'),
    hookAdd: ((uc: unknown, out: bigint[], type: number, cb: unknown, ud: unknown, begin: bigint, end: bigint, ...extra: number[]) =>
      hookAdd(uc, out, type, cb, ud, begin, end, ...extra.flatMap((x) => ['int', x]))) as UnicornLib['hookAdd'],
    hookAddRaw: ((uc: unknown, out: bigint[], type: number, cb: unknown, ud: unknown, begin: bigint, end: bigint) =>
      hookAdd(uc, out, type, cb, ud, begin, end)) as UnicornLib['hookAddRaw'],
    run: shim.func('int xenode_run(void *flag, void *uc, uint64_t begin, uint64_t until, int window, const uint8_t *ports, size_t count)') as UnicornLib['run'],
    stopHere: shim.func('void xenode_stop_here(void)') as () => void,
    engineForget: shim.func('void xenode_engine_forget(void *uc)') as (uc: unknown) => void,
    ioPass: shim.func('void xenode_io_pass(void)') as () => void,
    tscNew: shim.func('void *xenode_tsc_new(void)') as () => unknown,
    rdtscHook: dlsymIn(libc, shimHandle, 'xenode_rdtsc_hook'),
    rdtscpHook: dlsymIn(libc, shimHandle, 'xenode_rdtscp_hook'),
    stopFlagNew: shim.func('void *xenode_stop_flag_new(void)') as () => unknown,
    stopFlagRequest: shim.func('xenode_stop_request', 'void', ['uint64']) as (f: bigint) => void,
    blockHook: dlsymIn(libc, shimHandle, 'xenode_block_hook'),
    stopFlagAtUser: shim.func('void xenode_stop_at_user(void *flag, int on)') as (f: unknown, on: number) => void,
    stopFlagUserTaken: shim.func('int xenode_stop_user_taken(void *flag)') as (f: unknown) => number,
    protos: { out: OutCb, in: InCb, insn: InsnCb, intr: IntrCb, syscall: SyscallCb, mmioRead: MmioRead, mmioWrite: MmioWrite, memFault: MemFault },
  };
  return loaded;
}

function dlsymIn(libc: LibraryHandle, handle: unknown, name: string): unknown {
  return handle ? (libc.func('void *dlsym(void *handle, const char *name)') as (h: unknown, n: string) => unknown)(handle, name) : null;
}

/** Whether the software CPU can run here, and why not. */
export function unicornAvailable(): { ok: true; version: string; path: string } | { ok: false; why: string } {
  try {
    const u = unicorn();
    return { ok: true, version: u.version, path: u.path };
  } catch (e) {
    return { ok: false, why: (e as Error).message };
  }
}

export function check(u: UnicornLib, err: number, what: string): void {
  if (err !== UC_ERR_OK) throw new UnicornError(`${what}: ${u.strerror(err)}`);
}
