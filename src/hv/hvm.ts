// hvm_op (public/hvm/hvm_op.h): HVM parameters with Xen's per-index access
// rules for a domain acting on itself, the event-channel upcall vector, and
// the few other sub-ops a PVH guest uses.

import { registerHypercall, Hcall } from './hypercall.js';
import { HYPERCALL } from './abi/xen.js';
import { struct } from './abi/layout.js';
import { EINVAL, ENOENT, ENOSYS, EPERM, EEXIST, XenError } from './errno.js';
import type { Domain } from './domain.js';
import { setIrq } from './x86/vlapic.js';

export const HVMOP = { set_param: 0, get_param: 1, flush_tlbs: 5, pagetable_dying: 9, get_time: 10, get_mem_type: 15, set_evtchn_upcall_vector: 23 } as const;

/** HVM_PARAM_* (public/hvm/params.h). */
export const HVM_PARAM = {
  CALLBACK_IRQ: 0, STORE_PFN: 1, STORE_EVTCHN: 2, PAE_ENABLED: 4, IOREQ_PFN: 5, BUFIOREQ_PFN: 6, VIRIDIAN: 9,
  TIMER_MODE: 10, HPET_ENABLED: 11, IDENT_PT: 12, DM_DOMAIN: 13, ACPI_S_STATE: 14, VM86_TSS: 15, VPT_ALIGN: 16,
  CONSOLE_PFN: 17, CONSOLE_EVTCHN: 18, ACPI_IOPORTS_LOCATION: 19, NESTEDHVM: 24, PAGING_RING_PFN: 27,
  MONITOR_RING_PFN: 28, SHARING_RING_PFN: 29, TRIPLE_FAULT_REASON: 31, IOREQ_SERVER_PFN: 32,
  NR_IOREQ_SERVER_PAGES: 33, VM_GENERATION_ID_ADDR: 34, ALTP2M: 35, X87_FIP_WIDTH: 36, VM86_TSS_SIZED: 37, MCA_CAP: 38,
} as const;
export const HVM_NR_PARAMS = 39;

/** Deprecated indices (params.h): refused whoever asks. */
const DEPRECATED = new Set([4, 13, 20, 21, 22, 23, 24, 25, 26, 30]);
/** What a domain may read / write of its own params (xen-abi.md §3, from Xen's hvm.c). */
const SELF_READ = new Set([0, 1, 2, 15, 17, 18, 19, 34, 35, 36, 37]);
const SELF_WRITE = new Set([0, 2, 15, 18, 19, 34, 36, 37]);

export const CALLBACK_TYPE = { GSI: 0, PCI_INTX: 1, VECTOR: 2 } as const;

/** struct xen_hvm_param: domid u16 @0, index u32 @4, value u64 @8 (16 bytes, both ABIs). */
export const XenHvmParam = struct('xen_hvm_param', 16, { domid: [0, 'u16'], index: [4, 'u32'], value: [8, 'u64'] });
/** struct xen_hvm_evtchn_upcall_vector: vcpu u32 @0, vector u8 @4. */
export const XenHvmUpcallVector = struct('xen_hvm_evtchn_upcall_vector', 8, { vcpu: [0, 'u32'], vector: [4, 'u8'] });
/** struct xen_hvm_get_time: now u64. */
export const XenHvmGetTime = struct('xen_hvm_get_time', 8, { now: [0, 'u64'] });

/**
 * Applies a parameter value (shared by the guest path and the builder).
 * CALLBACK_IRQ latches the shared-info ABI of the caller whatever its type
 * (Xen's hvm_latch_shinfo_size).
 */
export function applyParam(d: Domain, index: number, value: bigint, callerAbi32?: boolean): void {
  if (index === HVM_PARAM.CALLBACK_IRQ) {
    const type = Number(value >> 56n);
    if (value === 0n) {
      // Off. (Xen on PVH would keep a vector set before, since 0 decodes as
      // "GSI none"; a guest that writes 0 means to stop the callback.)
      d.shared.set('callbackVector', 0);
    } else if (type === CALLBACK_TYPE.VECTOR) {
      const vec = Number(value & 0xffn);
      if (vec < 0x10) throw new XenError(EINVAL, `callback vector ${vec}`);
      d.shared.set('callbackVector', vec);
    }
    // Any other type (GSI, PCI INTx, or one Xen does not know) is stored and
    // changes no delivery: Xen's hvm_set_callback_via returns early for a
    // domain without an emulated IOAPIC/PIC, which a PVH domain is. Guests
    // that registered per-vCPU upcall vectors set GSI 1 to say so (Linux's
    // xen_set_callback_via(1)), so a vector callback set before stays.
    if (callerAbi32 !== undefined) d.shared.set('abi', callerAbi32 ? 1 : 0);
  }
  d.params.set(index, value);
}

function hvmOp(h: Hcall): number {
  const op = h.uint(0);
  const arg = h.ptr(1);
  switch (op) {
    case HVMOP.set_param:
    case HVMOP.get_param: {
      const a = h.g.readStruct(XenHvmParam, arg);
      if (a.index >= HVM_NR_PARAMS) throw new XenError(EINVAL);
      const d = h.target(a.domid);
      if (DEPRECATED.has(a.index)) throw new XenError(EINVAL);
      const self = d === h.dom;
      if (op === HVMOP.get_param) {
        if (self && !SELF_READ.has(a.index)) throw new XenError(EPERM);
        h.g.writeFields(XenHvmParam, arg, { value: d.params.get(a.index) ?? 0n });
        return 0;
      }
      if (self && !SELF_WRITE.has(a.index)) throw new XenError(EPERM);
      if (a.index === HVM_PARAM.ALTP2M && (d.params.get(a.index) ?? 0n) !== 0n && a.value !== d.params.get(a.index)) throw new XenError(EEXIST);
      applyParam(d, a.index, a.value, h.x32);
      return 0;
    }
    case HVMOP.set_evtchn_upcall_vector: {
      const a = h.g.readStruct(XenHvmUpcallVector, arg);
      if (a.vector < 0x10) throw new XenError(EINVAL, `upcall vector ${a.vector}`);
      const v = h.dom.vcpus[a.vcpu];
      if (!v) throw new XenError(ENOENT);
      h.dom.shared.setVcpu(a.vcpu, 'upcallVector', a.vector);
      // An upcall already pending is not lost: raise it now (Xen's hvm_assert_evtchn_irq).
      if (h.dom.isUpcallPending(v)) setIrq(h.dom.shared.lapicView(a.vcpu), a.vector);
      return 0;
    }
    case HVMOP.flush_tlbs:
      if (arg !== 0n) throw new XenError(EINVAL);
      h.g.flush();
      return 0;
    case HVMOP.pagetable_dying:
      return 0;
    case HVMOP.get_time:
      h.g.write(arg, XenHvmGetTime.encode({ now: h.dom.now() }));
      return 0;
    default:
      throw new XenError(ENOSYS);
  }
}

registerHypercall(HYPERCALL.hvm_op, hvmOp);
