// KVM's user-space ABI for x86-64: ioctl numbers, exit reasons and structure
// offsets. Every number here comes from <linux/kvm.h> and <asm/kvm.h> (x86-64),
// checked by compiling those headers (see the note in docs/kvm.md).

// ioctls (linux/kvm.h, _IO/_IOR/_IOW encodings already applied)
export const KVM_GET_API_VERSION = 0xae00;
export const KVM_CREATE_VM = 0xae01;
export const KVM_CHECK_EXTENSION = 0xae03;
export const KVM_GET_VCPU_MMAP_SIZE = 0xae04;
export const KVM_GET_SUPPORTED_CPUID = 0xc008ae05;
export const KVM_CREATE_VCPU = 0xae41;
export const KVM_SET_USER_MEMORY_REGION = 0x4020ae46;
export const KVM_SET_TSS_ADDR = 0xae47;
export const KVM_RUN = 0xae80;
export const KVM_GET_REGS = 0x8090ae81;
export const KVM_SET_REGS = 0x4090ae82;
export const KVM_GET_SREGS = 0x8138ae83;
export const KVM_SET_SREGS = 0x4138ae84;
export const KVM_INTERRUPT = 0x4004ae86;
/** _IO(KVMIO, 0x9a): queue an NMI (userspace irqchip only) */
export const KVM_NMI = 0xae9a;
/** _IOW(KVMIO, 0x7a, struct kvm_xen_hvm_config) */
export const KVM_XEN_HVM_CONFIG_IOCTL = 0x4038ae7a;
/** struct kvm_xen_hvm_config: flags u32, msr u32, blob_addr_32 u64, blob_addr_64 u64, blob_size_32 u8, blob_size_64 u8, pad2[30] */
export const XEN_HVM_CONFIG_SIZE = 56;
export const KVM_GET_MSRS = 0xc008ae88;
export const KVM_SET_MSRS = 0x4008ae89;
export const KVM_SET_SIGNAL_MASK = 0x4004ae8b;
export const KVM_SET_CPUID2 = 0x4008ae90;
export const KVM_GET_VCPU_EVENTS = 0x8040ae9f;
export const KVM_SET_VCPU_EVENTS = 0x4040aea0;
export const KVM_ENABLE_CAP = 0x4068aea3;
export const KVM_GET_TSC_KHZ = 0xaea3;
export const KVM_GET_FPU = 0x81a0ae8c;
export const KVM_SET_FPU = 0x41a0ae8d;
export const KVM_SET_GUEST_DEBUG = 0x4048ae9b;
export const KVM_GET_DEBUGREGS = 0x8080aea1;
export const KVM_SET_DEBUGREGS = 0x4080aea2;
export const KVM_GET_XSAVE = 0x9000aea4;
export const KVM_SET_XSAVE = 0x5000aea5;
export const KVM_GET_XCRS = 0x8188aea6;
export const KVM_SET_XCRS = 0x4188aea7;
export const KVM_X86_SET_MSR_FILTER = 0x4188aec6;

export const KVM_API_VERSION = 12;

// capabilities (linux/kvm.h KVM_CAP_*)
export const CAP = {
  USER_MEMORY: 3,
  SET_TSS_ADDR: 4,
  EXT_CPUID: 7,
  SET_GUEST_DEBUG: 23,
  DEBUGREGS: 50,
  XSAVE: 55,
  XCRS: 56,
  NR_MEMSLOTS: 10,
  ADJUST_CLOCK: 39,
  XEN_HVM: 38,
  INTERNAL_ERROR_DATA: 40,
  VCPU_EVENTS: 41,
  GET_TSC_KHZ: 61,
  SYNC_REGS: 74,
  READONLY_MEM: 81,
  IMMEDIATE_EXIT: 136,
  X86_DISABLE_EXITS: 143,
  X86_USER_SPACE_MSR: 188,
  X86_MSR_FILTER: 189,
  X86_TRIPLE_FAULT_EVENT: 218,
} as const;
export type CapName = keyof typeof CAP;

/** What KVM_CAP_XEN_HVM reports KVM does for a Xen guest (linux/kvm.h KVM_XEN_HVM_CONFIG_*). */
export const KVM_XEN_HVM_CONFIG = {
  HYPERCALL_MSR: 1 << 0,
  /** VMCALL/VMMCALL exit to user space as KVM_EXIT_XEN (KVM_XEN_EXIT_HCALL) instead of being KVM's own hypercalls. */
  INTERCEPT_HCALL: 1 << 1,
  SHARED_INFO: 1 << 2,
  RUNSTATE: 1 << 3,
  EVTCHN_2LEVEL: 1 << 4,
  EVTCHN_SEND: 1 << 5,
} as const;

// exit reasons (linux/kvm.h KVM_EXIT_*)
export const EXIT = {
  UNKNOWN: 0,
  EXCEPTION: 1,
  IO: 2,
  HYPERCALL: 3,
  DEBUG: 4,
  HLT: 5,
  MMIO: 6,
  IRQ_WINDOW_OPEN: 7,
  SHUTDOWN: 8,
  FAIL_ENTRY: 9,
  INTR: 10,
  NMI: 16,
  INTERNAL_ERROR: 17,
  SYSTEM_EVENT: 24,
  X86_RDMSR: 29,
  X86_WRMSR: 30,
  XEN: 34,
  NOTIFY: 37,
} as const;

export const EXIT_NAMES: Record<number, string> = Object.fromEntries(Object.entries(EXIT).map(([k, v]) => [v, k]));

export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;
export const KVM_INTERNAL_ERROR_EMULATION = 1;
export const KVM_INTERNAL_ERROR_SIMUL_EX = 2;
export const KVM_INTERNAL_ERROR_DELIVERY_EV = 3;
export const KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES = 1;

// KVM_CAP_X86_USER_SPACE_MSR reasons and KVM_X86_SET_MSR_FILTER flags
export const KVM_MSR_EXIT_REASON_INVAL = 1;
export const KVM_MSR_EXIT_REASON_UNKNOWN = 2;
export const KVM_MSR_EXIT_REASON_FILTER = 4;
export const KVM_MSR_FILTER_READ = 1;
export const KVM_MSR_FILTER_WRITE = 2;
export const KVM_MSR_FILTER_DEFAULT_ALLOW = 0;
export const KVM_MSR_FILTER_MAX_RANGES = 16;

// kvm_run.kvm_valid_regs / kvm_dirty_regs bits
export const KVM_SYNC_X86_REGS = 1;
export const KVM_SYNC_X86_SREGS = 2;
export const KVM_SYNC_X86_EVENTS = 4;

export const KVM_MEM_READONLY = 2;

/** struct kvm_run (linux/kvm.h), offsets on x86-64. */
export const RUN = {
  request_interrupt_window: 0, // u8
  immediate_exit: 1, // u8
  exit_reason: 8, // u32
  ready_for_interrupt_injection: 12, // u8
  if_flag: 13, // u8
  flags: 14, // u16
  cr8: 16,
  apic_base: 24,
  exit: 32, // start of the exit-information union
  kvm_valid_regs: 288, // u64
  kvm_dirty_regs: 296, // u64
  sync_regs: 304, // struct kvm_sync_regs
} as const;

/** Members of the kvm_run exit union, relative to RUN.exit. */
export const RUN_IO = { direction: 0, size: 1, port: 2, count: 4, data_offset: 8 } as const; // u8 u8 u16 u32 u64
export const RUN_MMIO = { phys_addr: 0, data: 8, len: 16, is_write: 20 } as const; // u64 u8[8] u32 u8
export const RUN_MSR = { error: 0, reason: 8, index: 12, data: 16 } as const; // u8 u32 u32 u64
/** struct kvm_xen_exit: type u32, then (8-aligned) hcall {longmode u32, cpl u32, input u64, result u64, params u64[6]} */
export const RUN_XEN = { type: 0, longmode: 8, cpl: 12, input: 16, result: 24, params: 32 } as const;
export const KVM_EXIT_XEN_HCALL = 1;
export const RUN_INTERNAL = { suberror: 0, ndata: 4, data: 8 } as const; // u32 u32 u64[16]
export const RUN_EMULATION_FAILURE = { suberror: 0, ndata: 4, flags: 8, insn_size: 16, insn_bytes: 17 } as const;
export const RUN_FAIL_ENTRY = { reason: 0, cpu: 8 } as const;
export const RUN_SYSTEM_EVENT = { type: 0, ndata: 4, data: 8 } as const;

/** struct kvm_sync_regs (asm/kvm.h): regs @0 (kvm_regs), sregs @144 (kvm_sregs), events @456. */
export const SYNC = { regs: 0, sregs: 144, events: 456 } as const;

/** struct kvm_regs (asm/kvm.h): 18 u64 in this order, 144 bytes. */
// struct kvm_regs order (asm/kvm.h): the accelerator interface uses the same indices.
export { REG, type RegName } from '../accel/vcpu.js';
export const KVM_REGS_SIZE = 144;

/** struct kvm_sregs (asm/kvm.h), 312 bytes. */
export const SREGS = {
  cs: 0, ds: 24, es: 48, fs: 72, gs: 96, ss: 120, tr: 144, ldt: 168,
  gdt: 192, idt: 208, // struct kvm_dtable {u64 base; u16 limit; u16 pad[3]}
  cr0: 224, cr2: 232, cr3: 240, cr4: 248, cr8: 256, efer: 264, apic_base: 272,
  interrupt_bitmap: 280,
} as const;
export const KVM_SREGS_SIZE = 312;
export type { SegName } from '../accel/vcpu.js';

/** struct kvm_segment (asm/kvm.h), 24 bytes. */
export const SEG = {
  base: 0, limit: 8, selector: 12, type: 14, present: 15, dpl: 16, db: 17, s: 18, l: 19, g: 20, avl: 21, unusable: 22,
} as const;

/** struct kvm_cpuid_entry2 (asm/kvm.h), 40 bytes; struct kvm_cpuid2 header is {u32 nent; u32 padding}. */
export const CPUID_ENTRY = { function: 0, index: 4, flags: 8, eax: 12, ebx: 16, ecx: 20, edx: 24, size: 40 } as const;
export const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1;

/** struct kvm_userspace_memory_region: slot u32, flags u32, gpa u64, size u64, uaddr u64 (32 bytes). */
export const MEMREGION_SIZE = 32;
/** struct kvm_enable_cap: cap u32, flags u32, args u64[4], pad u8[64] (104 bytes). */
export const ENABLE_CAP_SIZE = 104;
/** struct kvm_msr_filter: flags u32 @0, ranges[16] @8 of {flags u32, nmsrs u32, base u32, pad, bitmap* u64} (24 bytes each). */
export const MSR_FILTER_SIZE = 392;
/** struct kvm_msrs header {u32 nmsrs; u32 pad} then kvm_msr_entry {u32 index; u32 reserved; u64 data}. */
export const MSR_ENTRY_SIZE = 16;
/** struct kvm_vcpu_events, 64 bytes: exception {injected nr has_error_code pending u8, error_code u32}, interrupt {injected nr soft shadow u8}, nmi {injected pending masked pad u8}, sipi_vector u32, flags u32, ... */
export const VCPU_EVENTS_SIZE = 64;
export const EVENTS = { interrupt: 8, nmi: 12, flags: 20 } as const;
export const KVM_VCPUEVENT_VALID_NMI_PENDING = 1;
export const KVM_VCPUEVENT_VALID_SHADOW = 4;
export const KVM_X86_SHADOW_INT_MOV_SS = 1;
export const KVM_X86_SHADOW_INT_STI = 2;
/** struct kvm_xsave: u32 region[1024] (the XSAVE image; larger states need KVM_GET_XSAVE2). */
export const KVM_XSAVE_SIZE = 4096;
/** struct kvm_xcrs: nr_xcrs u32, flags u32, xcrs[16] of {xcr u32, reserved u32, value u64}, padding u64[16] (392 bytes). */
export const KVM_XCRS_SIZE = 392;
/** struct kvm_debugregs: db[4] u64, dr6 u64 @32, dr7 u64 @40, flags u64, reserved u64[9] (128 bytes). */
export const KVM_DEBUGREGS_SIZE = 128;
/** struct kvm_fpu: fpr[8][16] @0, fcw u16 @128, fsw @130, ftwx u8 @132, last_opcode u16 @134, last_ip u64 @136, last_dp u64 @144, xmm[16][16] @152, mxcsr u32 @408 (416 bytes). */
export const FPU = { fpr: 0, fcw: 128, fsw: 130, ftwx: 132, opcode: 134, ip: 136, dp: 144, xmm: 152, mxcsr: 408, size: 416 } as const;
/** struct kvm_guest_debug: control u32, pad u32, arch {debugreg u64[8]} (72 bytes). */
export const KVM_GUEST_DEBUG_SIZE = 72;
export const KVM_GUESTDBG_ENABLE = 0x1;
export const KVM_GUESTDBG_USE_HW_BP = 0x20000;
