// Core guest-visible structures and numbers from public/xen.h and
// public/arch-x86/xen.h, in both the 64-bit and 32-bit (compat) ABIs.

import { struct, abiPair } from './layout.js';

/** Hypercall numbers (public/xen.h __HYPERVISOR_*). */
export const HYPERCALL = {
  set_trap_table: 0, mmu_update: 1, set_gdt: 2, stack_switch: 3, set_callbacks: 4, fpu_taskswitch: 5,
  sched_op_compat: 6, platform_op: 7, set_debugreg: 8, get_debugreg: 9, update_descriptor: 10,
  memory_op: 12, multicall: 13, update_va_mapping: 14, set_timer_op: 15, event_channel_op_compat: 16,
  xen_version: 17, console_io: 18, physdev_op_compat: 19, grant_table_op: 20, vm_assist: 21,
  update_va_mapping_otherdomain: 22, iret: 23, vcpu_op: 24, set_segment_base: 25, mmuext_op: 26,
  xsm_op: 27, nmi_op: 28, sched_op: 29, callback_op: 30, xenoprof_op: 31, event_channel_op: 32,
  physdev_op: 33, hvm_op: 34, sysctl: 35, domctl: 36, kexec_op: 37, tmem_op: 38, argo_op: 39,
  xenpmu_op: 40, dm_op: 41, hypfs_op: 42,
} as const;

export const HYPERCALL_NAMES: Record<number, string> = Object.fromEntries(Object.entries(HYPERCALL).map(([k, v]) => [v, k]));

/** Special domain ids (public/xen.h). */
export const DOMID_FIRST_RESERVED = 0x7ff0;
export const DOMID_SELF = 0x7ff0;
export const DOMID_IO = 0x7ff1;
export const DOMID_XEN = 0x7ff2;
export const DOMID_COW = 0x7ff3;
export const DOMID_INVALID = 0x7ff4;
export const DOMID_ANY = 0x7ff5;
export const DOMID_IDLE = 0x7fff;

/** Xen version we present (4.17, the interface of Debian's headers). */
export const XEN_MAJOR = 4;
export const XEN_MINOR = 17;

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 4096;

/** Legacy vcpu_info slots in shared_info (public/xen.h XEN_LEGACY_MAX_VCPUS). */
export const XEN_LEGACY_MAX_VCPUS = 32;

/** struct vcpu_time_info (public/xen.h): 32 bytes in both ABIs. */
export const VcpuTimeInfo = struct('vcpu_time_info', 32, {
  version: [0, 'u32'],
  tsc_timestamp: [8, 'u64'],
  system_time: [16, 'u64'],
  tsc_to_system_mul: [24, 'u32'],
  tsc_shift: [28, 'i8'],
  flags: [29, 'u8'],
});
export const XEN_PVCLOCK_TSC_STABLE_BIT = 1;

/** struct vcpu_info (public/xen.h + arch_vcpu_info): 64 bytes [64 bytes]. */
export const VcpuInfo = abiPair(
  struct('vcpu_info', 64, {
    evtchn_upcall_pending: [0, 'u8'],
    evtchn_upcall_mask: [1, 'u8'],
    evtchn_pending_sel: [8, 'u64'],
    cr2: [16, 'u64'],
    time: [32, 'u8'], // start of vcpu_time_info
  }),
  struct('vcpu_info_32', 64, {
    evtchn_upcall_pending: [0, 'u8'],
    evtchn_upcall_mask: [1, 'u8'],
    evtchn_pending_sel: [4, 'u32'],
    cr2: [8, 'u32'], // arch_vcpu_info {cr2, pad[5]}: 24 bytes on i386
    time: [32, 'u8'],
  }),
);
export const VCPU_INFO_SIZE = 64;

/** struct shared_info (public/xen.h): 3136 bytes on x86-64, 2344 on i386. */
export const SharedInfo = abiPair(
  struct('shared_info', 3136, {
    vcpu_info: [0, 'u8'], // vcpu_info[32]
    evtchn_pending: [2048, 'u64'], // u64[64]
    evtchn_mask: [2560, 'u64'], // u64[64]
    wc_version: [3072, 'u32'],
    wc_sec: [3076, 'u32'],
    wc_nsec: [3080, 'u32'],
    wc_sec_hi: [3084, 'u32'],
  }),
  struct('shared_info_32', 2344, {
    vcpu_info: [0, 'u8'],
    evtchn_pending: [2048, 'u32'], // u32[32]
    evtchn_mask: [2176, 'u32'], // u32[32]
    wc_version: [2304, 'u32'],
    wc_sec: [2308, 'u32'],
    wc_nsec: [2312, 'u32'],
    wc_sec_hi: [2340, 'u32'], // arch_shared_info (@2316).wc_sec_hi on i386, after max_pfn, frame list, nmi_reason, p2m_cr3/vaddr/generation
  }),
);

/** Guest ABI width: decides hypercall argument registers and shared-structure layouts. */
export type Abi = 'x64' | 'x32';
