// vcpu_op (public/vcpu.h): bringing secondary vCPUs up and down
// (initialise/up/down/is_up), vcpu_info registration, runstate information
// and the per-vCPU timers.

import { registerHypercall, Hcall } from './hypercall.js';
import { GuestFault } from './guest_access.js';
import { HYPERCALL, PAGE_SIZE, VCPU_INFO_SIZE } from './abi/xen.js';
import { struct, abiPair, forAbi } from './abi/layout.js';
import { EBUSY, EEXIST, EINVAL, ENOENT, ENOSYS, XenError } from './errno.js';
import type { VCpu } from './domain.js';
import { timerChanged, schedHooks, SHUTDOWN } from './sched_op.js';
import { hvmContextToEntryState, VcpuHvmContextHeader } from './x86/hvm_vcpu.js';
import { MSR_MTRR_DEF_TYPE } from './x86/pvh.js';

export const VCPUOP = {
  initialise: 0, up: 1, down: 2, is_up: 3, get_runstate_info: 4, register_runstate_memory_area: 5,
  set_periodic_timer: 6, stop_periodic_timer: 7, set_singleshot_timer: 8, stop_singleshot_timer: 9,
  register_vcpu_info: 10, send_nmi: 11, get_physid: 12, register_vcpu_time_memory_area: 13,
} as const;
export const VCPU_SSHOTTMR_future = 1;

export const VcpuRegisterVcpuInfo = struct('vcpu_register_vcpu_info', 16, { mfn: [0, 'u64'], offset: [8, 'u32'], rsvd: [12, 'u32'] });
export const VcpuSetPeriodicTimer = struct('vcpu_set_periodic_timer', 8, { period_ns: [0, 'u64'] });
export const VcpuSetSingleshotTimer = abiPair(
  struct('vcpu_set_singleshot_timer', 16, { timeout_abs_ns: [0, 'u64'], flags: [8, 'u32'] }),
  struct('vcpu_set_singleshot_timer_32', 12, { timeout_abs_ns: [0, 'u64'], flags: [8, 'u32'] }),
);
/** vcpu_runstate_info: state i32, state_entry_time u64, time[4] u64 (48 bytes; 44 packed on i386). */
export const VcpuRunstateInfo = abiPair(
  struct('vcpu_runstate_info', 48, { state: [0, 'i32'], state_entry_time: [8, 'u64'], time0: [16, 'u64'], time1: [24, 'u64'], time2: [32, 'u64'], time3: [40, 'u64'] }),
  struct('vcpu_runstate_info_32', 44, { state: [0, 'i32'], state_entry_time: [4, 'u64'], time0: [12, 'u64'], time1: [20, 'u64'], time2: [28, 'u64'], time3: [36, 'u64'] }),
);

const MILLISECS = 1_000_000n;
/** IA32_MTRR_DEF_TYPE: MTRRs enabled, default write-back (what the builder gives vCPU 0). */
const MTRR_DEF_WB = BigInt((1 << 11) | 6);
const IA32_TSC = 0x10;

export function runstateBytes(v: VCpu, x32: boolean, now: bigint): Uint8Array {
  const t = v.runstateTime.slice();
  t[v.runstateState]! += now - v.runstateEntry;
  return (x32 ? VcpuRunstateInfo.x32 : VcpuRunstateInfo.x64).encode({
    state: v.runstateState, state_entry_time: v.runstateEntry, time0: t[0]!, time1: t[1]!, time2: t[2]!, time3: t[3]!,
  } as never);
}

/**
 * Writes a vCPU's runstate into the area it registered (Xen's
 * update_runstate_area at each switch), through the vCPU's own page tables.
 * An area the guest unmapped is skipped, as Xen does.
 */
export function updateRunstateArea(v: VCpu): void {
  if (v.runstateArea === 0n) return;
  const d = v.dom;
  const hw = v.hw;
  try {
    d.access.setContext({ cr0: hw.cr0, cr3: hw.cr3, cr4: hw.cr4, efer: hw.efer });
    d.access.flush();
    d.access.write(v.runstateArea, runstateBytes(v, d.abi32, v.runstateEntry));
  } catch (e) {
    if (!(e instanceof GuestFault)) throw e;
  }
}

function vcpuOp(h: Hcall): number {
  const cmd = h.int(0);
  const id = h.int(1);
  const arg = h.ptr(2);
  const d = h.dom;
  const v = d.vcpus[id];
  if (id < 0 || !v) throw new XenError(ENOENT);
  const g = h.g;
  switch (cmd) {
    case VCPUOP.initialise: {
      // A vCPU without a vcpu_info (id >= 32 before register_vcpu_info) cannot take events: Xen refuses it.
      if (d.vcpuInfoOffset(v.id) < 0) throw new XenError(EINVAL);
      const ctx = g.read(arg, VcpuHvmContextHeader.size);
      if (v.initialised) throw new XenError(EEXIST);
      const st = hvmContextToEntryState(ctx);
      // The vCPU is down (never started), so no thread runs it: its registers can be set from here.
      v.hw.setInitialState(st);
      v.hw.setMsrs([{ index: MSR_MTRR_DEF_TYPE, value: MTRR_DEF_WB }]);
      v.initialised = true;
      return 0;
    }
    case VCPUOP.up:
      if (!v.initialised) throw new XenError(EINVAL);
      if (!d.vcpuUp(v.id)) schedHooks().vcpuUp(v);
      return 0;
    case VCPUOP.down: {
      // The last vCPU going down powers the domain off (Xen's do_vcpu_op).
      if (!d.vcpus.some((x) => x !== v && d.vcpuUp(x.id))) {
        schedHooks().shutdown(d, SHUTDOWN.poweroff);
        h.deschedule = true;
        return 0;
      }
      if (d.vcpuUp(v.id)) schedHooks().vcpuDown(v);
      if (v === h.vcpu) h.deschedule = true;
      return 0;
    }
    case VCPUOP.is_up:
      return d.vcpuUp(v.id) ? 1 : 0;
    case VCPUOP.get_runstate_info:
      g.write(arg, runstateBytes(v, h.x32, d.now()));
      return 0;
    case VCPUOP.register_runstate_memory_area: {
      const va = h.x32 ? BigInt(g.readU32(arg)) : g.readU64(arg);
      v.runstateArea = va;
      // Xen copies the record as it stands (the current state's time so far is not added).
      if (va !== 0n && v === h.vcpu) g.write(va, runstateBytes(v, h.x32, v.runstateEntry));
      return 0;
    }
    case VCPUOP.register_vcpu_info: {
      const a = g.readStruct(VcpuRegisterVcpuInfo, arg);
      if (a.offset > PAGE_SIZE - VCPU_INFO_SIZE) throw new XenError(EINVAL);
      if (v.vcpuInfoRegistered) throw new XenError(EBUSY);
      // Another vCPU only while it is down (wherever it runs: `online` is only this worker's view).
      if (v !== h.vcpu && d.vcpuUp(v.id)) throw new XenError(EINVAL);
      const gfn = Number(a.mfn);
      const hp = d.physmap.hostPageOf(gfn);
      if (hp < 0 || d.physmap.kindOfHostPage(hp) !== 'ram' && d.physmap.kindOfHostPage(hp) !== 'pool') throw new XenError(EINVAL);
      const newOff = hp * PAGE_SIZE + a.offset;
      const oldOff = d.vcpuInfoOffset(v.id);
      const bytes = d.mem.bytes;
      if (oldOff >= 0) bytes.copyWithin(newOff, oldOff, oldOff + VCPU_INFO_SIZE);
      else bytes.fill(0, newOff, newOff + VCPU_INFO_SIZE);
      d.shared.setVcpu(v.id, 'vcpuInfoOffset', newOff);
      // Mark everything pending so nothing raised during the move is lost (as Xen does).
      const selOff = h.x32 ? 4 : 8;
      bytes.fill(0xff, newOff + selOff, newOff + selOff + (h.x32 ? 4 : 8));
      Atomics.store(bytes, newOff, 1);
      return 0;
    }
    case VCPUOP.set_periodic_timer: {
      const { period_ns } = g.readStruct(VcpuSetPeriodicTimer, arg);
      // Xen: at least 1 ms, at most STIME_DELTA_MAX (2^62 - 1).
      if (period_ns < MILLISECS || period_ns > (1n << 62n) - 1n) throw new XenError(EINVAL);
      v.timer.period = period_ns;
      // The first tick is due at once (Xen's last periodic event starts at 0).
      v.timer.periodicNext = d.now();
      timerChanged(v);
      return 0;
    }
    case VCPUOP.stop_periodic_timer:
      v.timer.period = 0n;
      timerChanged(v);
      return 0;
    case VCPUOP.set_singleshot_timer: {
      if (v !== h.vcpu) throw new XenError(EINVAL);
      const S = forAbi(VcpuSetSingleshotTimer, h.x32);
      const a = S.decode(g.read(arg, S.size));
      // VCPU_SSHOTTMR_future is accepted and ignored, as Xen's code does: past deadlines fire at once.
      const t = BigInt(a.timeout_abs_ns!);
      v.timer.singleshot = t === 0n ? 1n : t;
      timerChanged(v);
      return 0;
    }
    case VCPUOP.stop_singleshot_timer:
      if (v !== h.vcpu) throw new XenError(EINVAL);
      v.timer.singleshot = 0n;
      timerChanged(v);
      return 0;
    case VCPUOP.get_physid:
      throw new XenError(EINVAL);
    case VCPUOP.register_vcpu_time_memory_area: {
      // A second copy of the vCPU's vcpu_time_info, kept up to date with the first (Linux maps vCPU 0's into its vDSO).
      const va = h.x32 ? BigInt(g.readU32(arg)) : g.readU64(arg);
      d.shared.setTimeArea(v.id, va);
      // force_update_vcpu_system_time: written at once for the calling vCPU, else when that vCPU next runs.
      if (va !== 0n && v === h.vcpu) d.updatePvclock(v, () => v.hw.getMsr(IA32_TSC));
      return 0;
    }
    default:
      // send_nmi is not offered.
      throw new XenError(ENOSYS);
  }
}

registerHypercall(HYPERCALL.vcpu_op, vcpuOp);
