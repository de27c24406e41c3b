// event_channel_op (public/event_channel.h): argument decoding and permission
// checks around the port machinery in evtchn_core. The same layouts serve
// both ABIs. FIFO event channels are offered: init_control switches the
// calling domain from 2-level to FIFO (evtchn_fifo.ts), as on Xen.

import { registerHypercall, Hcall } from './hypercall.js';
import { HYPERCALL, DOMID_SELF, PAGE_SIZE } from './abi/xen.js';
import {
  EVTCHNOP, EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindVirq, EvtchnBindIpi, EvtchnPort, EvtchnStatus,
  EvtchnBindVcpu, EvtchnReset, EvtchnInitControl, EvtchnExpandArray, EvtchnSetPriority, EVTCHN_FIFO_LINK_BITS,
} from './abi/event_channel.js';
import { EINVAL, ENOSYS, EPERM, ESRCH, XenError } from './errno.js';
import * as core from './evtchn_core.js';
import type { EvtchnHost } from './evtchn_core.js';

let host: EvtchnHost | null = null;
/** The running thread's view of all domains (set by the pCPU worker). */
export function setEvtchnHost(h: EvtchnHost): void {
  host = h;
}
export function evtchnHost(): EvtchnHost {
  if (!host) throw new Error('event-channel host not set');
  return host;
}

function isSelf(h: Hcall, dom: number): boolean {
  return dom === DOMID_SELF || dom === h.dom.domid;
}

/** The port table a sub-op names: own, or (for the privileged) another domain's. */
function domainFor(h: Hcall, H: EvtchnHost, dom: number): core.EvtchnDomain {
  if (isSelf(h, dom)) return h.dom.evtchn;
  if (!h.dom.host.domainExists(dom)) throw new XenError(ESRCH);
  if (!h.dom.privileged) throw new XenError(EPERM);
  return core.checkDomain(H, dom);
}

/**
 * Byte offset in the domain memory of guest frame `gfn` if it is a page the
 * guest may hand to the hypervisor to write (its RAM), else -1 (Xen's
 * map_guest_page fails the same way: -EINVAL).
 */
function writableFrame(h: Hcall, gfn: bigint): number {
  if (gfn > 0xffffffffffn) return -1;
  const pm = h.dom.physmap;
  const hp = pm.hostPageOf(Number(gfn));
  if (hp < 0) return -1;
  const kind = pm.kindOfHostPage(hp);
  return kind === 'ram' || kind === 'pool' ? hp * PAGE_SIZE : -1;
}

function eventChannelOp(h: Hcall): number {
  const cmd = h.uint(0);
  const arg = h.ptr(1);
  const g = h.g;
  const H = evtchnHost();
  const me = h.dom.evtchn;
  switch (cmd) {
    case EVTCHNOP.alloc_unbound: {
      const a = g.readStruct(EvtchnAllocUnbound, arg);
      const d = domainFor(h, H, a.dom);
      const remote = a.remote_dom === DOMID_SELF ? h.dom.domid : a.remote_dom;
      const port = core.allocUnbound(d, remote);
      g.writeFields(EvtchnAllocUnbound, arg, { port });
      return 0;
    }
    case EVTCHNOP.bind_interdomain: {
      const a = g.readStruct(EvtchnBindInterdomain, arg);
      const rd = a.remote_dom === DOMID_SELF ? me : core.checkDomain(H, a.remote_dom);
      const port = core.bindInterdomain(H, me, rd, a.remote_port);
      g.writeFields(EvtchnBindInterdomain, arg, { local_port: port });
      return 0;
    }
    case EVTCHNOP.bind_virq: {
      const a = g.readStruct(EvtchnBindVirq, arg);
      const port = core.bindVirq(me, a.virq, a.vcpu, h.dom.virqs);
      g.writeFields(EvtchnBindVirq, arg, { port });
      return 0;
    }
    case EVTCHNOP.bind_ipi: {
      const a = g.readStruct(EvtchnBindIpi, arg);
      const port = core.bindIpi(me, a.vcpu);
      g.writeFields(EvtchnBindIpi, arg, { port });
      return 0;
    }
    case EVTCHNOP.bind_pirq:
      // PVH domains have no physical IRQs routed to event channels.
      throw new XenError(EINVAL, 'no PIRQs in a PVH domain');
    case EVTCHNOP.close:
      core.close(H, me, g.readStruct(EvtchnPort, arg).port, h.dom.virqs);
      return 0;
    case EVTCHNOP.send:
      core.send(H, me, g.readStruct(EvtchnPort, arg).port);
      return 0;
    case EVTCHNOP.unmask:
      core.unmask(H, me, g.readStruct(EvtchnPort, arg).port);
      return 0;
    case EVTCHNOP.status: {
      const a = g.readStruct(EvtchnStatus, arg);
      const d = domainFor(h, H, a.dom);
      // Port 0 exists (reserved): it reads as closed.
      if (!core.portInRange(d.shared, a.port)) throw new XenError(EINVAL);
      const p = core.portInfo(d.shared, a.port);
      const out = { status: p.state, vcpu: p.vcpu, u_dom: 0, u_port: 0 } as Record<string, number>;
      if (p.state === core.ECS.unbound) out.u_dom = p.remoteDom;
      else if (p.state === core.ECS.interdomain) { out.u_dom = p.remoteDom; out.u_port = p.remotePort; }
      else if (p.state === core.ECS.virq) { delete out.u_dom; delete out.u_port; out.u_virq = p.remoteDom; }
      g.writeFields(EvtchnStatus, arg, out);
      return 0;
    }
    case EVTCHNOP.bind_vcpu: {
      const a = g.readStruct(EvtchnBindVcpu, arg);
      core.bindVcpu(me, a.port, a.vcpu);
      return 0;
    }
    case EVTCHNOP.reset:
    case EVTCHNOP.reset_cont: {
      // reset is not preemptible here, so a continuation has nothing left to do but the same.
      const a = g.readStruct(EvtchnReset, arg);
      const d = domainFor(h, H, a.dom);
      // The target's VIRQ bindings go with its ports (another domain's are in its shared table).
      core.reset(H, d, d === me ? h.dom.virqs : d.shared.virqs);
      return 0;
    }
    case EVTCHNOP.init_control: {
      const a = g.readStruct(EvtchnInitControl, arg);
      core.initControl(me, a.vcpu, a.offset, writableFrame(h, a.control_gfn));
      g.writeFields(EvtchnInitControl, arg, { link_bits: EVTCHN_FIFO_LINK_BITS });
      return 0;
    }
    case EVTCHNOP.expand_array: {
      const a = g.readStruct(EvtchnExpandArray, arg);
      core.expandArray(H, me, writableFrame(h, a.array_gfn));
      return 0;
    }
    case EVTCHNOP.set_priority: {
      const a = g.readStruct(EvtchnSetPriority, arg);
      core.setPriority(me, a.port, a.priority);
      return 0;
    }
    default:
      throw new XenError(ENOSYS);
  }
}

registerHypercall(HYPERCALL.event_channel_op, eventChannelOp);
