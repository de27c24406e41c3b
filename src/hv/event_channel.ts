// event_channel_op (public/event_channel.h): argument decoding and permission
// checks around the port machinery in evtchn_core. The same layouts serve
// both ABIs. FIFO event channels are not offered (init_control & co answer
// -ENOSYS, and guests fall back to 2-level, as with a Xen built without FIFO).

import { registerHypercall, Hcall } from './hypercall.js';
import { HYPERCALL, DOMID_SELF } from './abi/xen.js';
import { struct } from './abi/layout.js';
import { EINVAL, ENOSYS, EPERM, ESRCH, XenError } from './errno.js';
import * as core from './evtchn_core.js';
import type { EvtchnHost } from './evtchn_core.js';

export const EVTCHNOP = {
  bind_interdomain: 0, bind_virq: 1, bind_pirq: 2, close: 3, send: 4, status: 5, alloc_unbound: 6, bind_ipi: 7,
  bind_vcpu: 8, unmask: 9, reset: 10, init_control: 11, expand_array: 12, set_priority: 13, reset_cont: 14,
} as const;

export const EvtchnAllocUnbound = struct('evtchn_alloc_unbound', 8, { dom: [0, 'u16'], remote_dom: [2, 'u16'], port: [4, 'u32'] });
export const EvtchnBindInterdomain = struct('evtchn_bind_interdomain', 12, { remote_dom: [0, 'u16'], remote_port: [4, 'u32'], local_port: [8, 'u32'] });
export const EvtchnBindVirq = struct('evtchn_bind_virq', 12, { virq: [0, 'u32'], vcpu: [4, 'u32'], port: [8, 'u32'] });
export const EvtchnBindIpi = struct('evtchn_bind_ipi', 8, { vcpu: [0, 'u32'], port: [4, 'u32'] });
export const EvtchnPort = struct('evtchn_port', 4, { port: [0, 'u32'] }); // close, send, unmask
export const EvtchnStatus = struct('evtchn_status', 24, {
  dom: [0, 'u16'], port: [4, 'u32'], status: [8, 'u32'], vcpu: [12, 'u32'],
  u_dom: [16, 'u16'], u_port: [20, 'u32'], u_virq: [16, 'u32'],
});
export const EvtchnBindVcpu = struct('evtchn_bind_vcpu', 8, { port: [0, 'u32'], vcpu: [4, 'u32'] });
export const EvtchnReset = struct('evtchn_reset', 2, { dom: [0, 'u16'] });

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
    case EVTCHNOP.reset: {
      const a = g.readStruct(EvtchnReset, arg);
      const d = domainFor(h, H, a.dom);
      // The target's VIRQ bindings go with its ports (another domain's are in its shared table).
      core.reset(H, d, d === me ? h.dom.virqs : d.shared.virqs);
      return 0;
    }
    default:
      // init_control / expand_array / set_priority / reset_cont: FIFO is not offered.
      throw new XenError(ENOSYS);
  }
}

registerHypercall(HYPERCALL.event_channel_op, eventChannelOp);
