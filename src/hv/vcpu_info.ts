// Where a vCPU's vcpu_info lives (public/xen.h: the legacy slot in
// shared_info, or the page VCPUOP_register_vcpu_info named) and its
// evtchn_upcall_pending flag, which both event-channel ABIs raise.

import type { DomainShared } from './shared.js';
import { XEN_LEGACY_MAX_VCPUS, VCPU_INFO_SIZE } from './abi/xen.js';

/** Byte offset (in the domain memory) of a vCPU's vcpu_info, -1 if it has none. */
export function vcpuInfoOffset(s: DomainShared, vcpu: number): number {
  const reg = s.vcpu(vcpu, 'vcpuInfoOffset');
  if (reg >= 0) return reg;
  if (vcpu < XEN_LEGACY_MAX_VCPUS) return s.get('sharedInfoOffset') + vcpu * VCPU_INFO_SIZE;
  return -1;
}

/** Sets evtchn_upcall_pending (byte 0 of vcpu_info); true if it was clear (Xen's vcpu_mark_events_pending). */
export function markUpcallPending(s: DomainShared, mem: Uint8Array, vcpu: number): boolean {
  const vi = vcpuInfoOffset(s, vcpu);
  return vi >= 0 && (Atomics.or(mem, vi, 1) & 1) === 0;
}
