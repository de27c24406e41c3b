// sched_op (public/sched.h) and the legacy set_timer_op: how a vCPU yields,
// blocks, polls, and how a domain shuts itself down or arms a watchdog. The
// handlers record what the vCPU asked for; the pCPU worker's scheduler acts on
// it when the hypercall returns.

import { registerHypercall, Hcall } from './hypercall.js';
import { HYPERCALL } from './abi/xen.js';
import { struct, abiPair, forAbi } from './abi/layout.js';
import { EINVAL, ENOSPC, ENOSYS, EPERM, ESRCH, XenError } from './errno.js';
import * as core from './evtchn_core.js';
import type { Domain, VCpu } from './domain.js';
import { VCPU_FLAG_WAKE } from './shared.js';
import { exclusiveOp } from './sched/exclusive.js';
import { SCHEDOP_xenode_exclusive } from './abi/xenode_sched.js';

export const SCHEDOP = { yield: 0, block: 1, shutdown: 2, poll: 3, remote_shutdown: 4, shutdown_code: 5, watchdog: 6, pin_override: 7 } as const;
export const SHUTDOWN = { poweroff: 0, reboot: 1, suspend: 2, crash: 3, watchdog: 4, soft_reset: 5 } as const;
export const SHUTDOWN_NAMES = ['poweroff', 'reboot', 'suspend', 'crash', 'watchdog', 'soft_reset'];
/** Domain watchdog timers per domain (Xen's NR_DOMAIN_WATCHDOG_TIMERS). */
export const NR_DOMAIN_WATCHDOG_TIMERS = 2;
export const SCHEDOP_POLL_MAX_PORTS = 128;

export const SchedShutdown = struct('sched_shutdown', 4, { reason: [0, 'u32'] });
export const SchedPoll = abiPair(
  struct('sched_poll', 24, { ports: [0, 'u64'], nr_ports: [8, 'u32'], timeout: [16, 'u64'] }),
  struct('sched_poll_32', 16, { ports: [0, 'u32'], nr_ports: [4, 'u32'], timeout: [8, 'u64'] }),
);
export const SchedRemoteShutdown = struct('sched_remote_shutdown', 8, { domain_id: [0, 'u16'], reason: [4, 'u32'] });
export const SchedWatchdog = struct('sched_watchdog', 8, { id: [0, 'u32'], timeout: [4, 'u32'] });

/** What the scheduler must provide for these hypercalls. */
export interface SchedHooks {
  /** The domain shuts down with `reason` (latched shutdown_code wins). */
  shutdown(d: Domain, reason: number): void;
  /** The vCPU's single-shot timer changed (re-arm the pCPU's timer). */
  timerChanged(v: VCpu): void;
  /** VCPUOP_up of an initialised, down vCPU: make it runnable. */
  vcpuUp(v: VCpu): void;
  /** VCPUOP_down (or HLT with interrupts off): take the vCPU off its pCPU. */
  vcpuDown(v: VCpu): void;
}

let hooks: SchedHooks | null = null;
export function setSchedHooks(h: SchedHooks): void {
  hooks = h;
}

export function schedHooks(): SchedHooks {
  if (!hooks) throw new Error('scheduler hooks not set');
  return hooks;
}

/** A vCPU's timers changed (any family that sets them calls this). */
export function timerChanged(v: VCpu): void {
  schedHooks().timerChanged(v);
}

/** Blocks the vCPU unless an event is already pending for it (SCHEDOP_block, HLT). */
export function blockVcpu(h: Hcall): void {
  const d = h.dom;
  const v = h.vcpu;
  // Xen re-enables event delivery (evtchn_upcall_mask = 0) before blocking.
  const vi = d.vcpuInfoOffset(v.id);
  if (vi >= 0) d.mem.bytes[vi + 1] = 0;
  // Xen's local_events_need_delivery: a pending upcall counts only where it can be delivered (a callback vector is set).
  d.shared.clearVcpuFlag(v.id, VCPU_FLAG_WAKE);
  if (!d.upcallDeliverable(v) && !v.lapicPending && !v.nmiPending) v.blocked = true;
  h.deschedule = true;
}

function schedOp(h: Hcall): number {
  const cmd = h.int(0);
  const arg = h.ptr(1);
  const g = h.g;
  const d = h.dom;
  switch (cmd) {
    case SCHEDOP.yield:
      h.vcpu.yielded = true;
      h.deschedule = true;
      return 0;
    case SCHEDOP.block:
      blockVcpu(h);
      return 0;
    case SCHEDOP.shutdown: {
      const { reason } = g.readStruct(SchedShutdown, arg);
      schedHooks().shutdown(d, reason & 0xff);
      h.deschedule = true;
      return 0;
    }
    case SCHEDOP.shutdown_code: {
      const { reason } = g.readStruct(SchedShutdown, arg);
      d.shared.cas('shutdownCode', -1, reason & 0xff);
      return 0;
    }
    case SCHEDOP.poll: {
      const P = forAbi(SchedPoll, h.x32);
      const p = P.decode(g.read(arg, P.size)) as { ports: bigint | number; nr_ports: number; timeout: bigint };
      if (p.nr_ports > SCHEDOP_POLL_MAX_PORTS) throw new XenError(EINVAL);
      const ports = new Array<number>(p.nr_ports);
      for (let i = 0; i < p.nr_ports; i++) {
        const port = g.readU32(BigInt(p.ports) + BigInt(i * 4));
        // Only ports in use may be polled (Xen's evtchn_port_poll).
        if (!core.portValid(d.shared, port) || core.portInfo(d.shared, port).state === core.ECS.closed) throw new XenError(EINVAL);
        ports[i] = port;
      }
      // Xen re-enables delivery, then returns at once if any polled port is pending.
      const vi = d.vcpuInfoOffset(h.vcpu.id);
      if (vi >= 0) d.mem.bytes[vi + 1] = 0;
      if (ports.some((port) => core.isPending(d.evtchn, port))) return 0;
      if (p.timeout !== 0n && p.timeout <= d.now()) return 0;
      h.vcpu.pollPorts = ports;
      h.vcpu.pollTimeout = p.timeout;
      h.vcpu.blocked = true;
      d.shared.setVcpu(h.vcpu.id, 'pollMask', 1);
      h.deschedule = true;
      timerChanged(h.vcpu);
      return 0;
    }
    case SCHEDOP.remote_shutdown: {
      const r = g.readStruct(SchedRemoteShutdown, arg);
      if (r.domain_id !== d.domid && !d.host.domainExists(r.domain_id)) throw new XenError(ESRCH);
      // Device-model / control-domain privilege; the toolstack acts on other domains itself.
      if (!d.privileged) throw new XenError(EPERM);
      throw new XenError(ENOSYS, 'remote_shutdown from a guest control domain is not supported yet');
    }
    case SCHEDOP.watchdog: {
      const { id, timeout } = g.readStruct(SchedWatchdog, arg);
      const now = d.now();
      if (id === 0) {
        for (let i = 1; i <= NR_DOMAIN_WATCHDOG_TIMERS; i++) {
          if (!d.watchdogs.has(i)) {
            d.watchdogs.set(i, now + BigInt(timeout) * 1_000_000_000n);
            timerChanged(h.vcpu);
            return i;
          }
        }
        throw new XenError(ENOSPC);
      }
      if (id > NR_DOMAIN_WATCHDOG_TIMERS || !d.watchdogs.has(id)) throw new XenError(EINVAL);
      if (timeout === 0) d.watchdogs.delete(id);
      else d.watchdogs.set(id, now + BigInt(timeout) * 1_000_000_000n);
      timerChanged(h.vcpu);
      return 0;
    }
    case SCHEDOP.pin_override:
      throw new XenError(EPERM);
    case SCHEDOP_xenode_exclusive:
      return exclusiveOp(h, arg);
    default:
      throw new XenError(ENOSYS);
  }
}

/** set_timer_op(u64 timeout): one-shot VIRQ_TIMER at an absolute system time; 0 cancels. */
function setTimerOp(h: Hcall): number {
  const t = h.u64(0);
  const now = h.dom.now();
  // Xen's do_set_timer_op: a deadline wrapped negative or more than 2^50 ns (~13 days) ahead is a
  // guest's "no timer" (old Linux): fire in 100 ms rather than never or at once.
  const wrapped = t !== 0n && (BigInt.asIntN(64, t) < 0n || t - now > 1n << 50n);
  h.vcpu.timer.singleshot = wrapped ? now + 100_000_000n : t;
  // A deadline already past fires at once (Xen sends the event immediately).
  timerChanged(h.vcpu);
  return 0;
}

registerHypercall(HYPERCALL.sched_op, schedOp);
registerHypercall(HYPERCALL.set_timer_op, setTimerOp);
