// Domains that are host processes rather than guests: the control domain
// itself and the process domains beside it (driver domains, later the
// xenstore domain). Each is a domid with its own event-channel port table,
// laid out as a guest's shared_info is (2-level, 64-bit: the same core code
// raises its ports from any thread), and a grant device acting as that
// domid, so grant checks name the process domain exactly as a guest's
// grant entry names its backend. Their "upcall" is the main thread's event
// loop: workers ring the doorbell in the control domain's page, and
// dispatch() calls the handler of every port found pending and unmasked.

import { DomainShared, DOMSTATE } from './shared.js';
import { SharedInfo, VcpuInfo, PAGE_SIZE } from './abi/xen.js';
import { Gntdev, type GrantTable } from './grant_table.js';
import * as core from './evtchn_core.js';

/** Ports of a process domain's table (the 2-level ABI's 4096, less port 0's word slot Xen never hands out). */
export const PROCESS_DOMAIN_PORTS = 4095;

/** Where dispatch looks, in the shared_info-shaped page (64-bit layout, vcpu_info[0]). */
const LAYOUT = {
  selOff: VcpuInfo.x64.offsetOf('evtchn_pending_sel'),
  pendingOff: SharedInfo.x64.offsetOf('evtchn_pending'),
  maskOff: SharedInfo.x64.offsetOf('evtchn_mask'),
};

export type PortHandler = (port: number) => void;

/**
 * Calls `handler(port)` for each pending, unmasked port of a 2-level
 * page, clearing each as it goes (what a guest's upcall does with
 * evtchn_pending_sel and the bitmaps). Returns nothing: handlers' errors go
 * to `onError`, the scan goes on.
 */
export function dispatch2l(m: Uint8Array, handlers: Map<number, PortHandler>, onError: (port: number, e: unknown) => void): void {
  Atomics.store(m, 0, 0); // vcpu_info[0].evtchn_upcall_pending
  const { selOff, pendingOff, maskOff } = LAYOUT;
  for (let byte = 0; byte < 8; byte++) {
    let sel = Atomics.exchange(m, selOff + byte, 0);
    while (sel) {
      const bit = 31 - Math.clz32(sel & -sel);
      sel &= sel - 1;
      const word = byte * 8 + bit; // 64-port word index
      for (let b = 0; b < 8; b++) {
        const pOff = pendingOff + word * 8 + b;
        const pend = Atomics.load(m, pOff) & ~Atomics.load(m, maskOff + word * 8 + b);
        if (!pend) continue;
        Atomics.and(m, pOff, ~pend & 0xff);
        for (let k = 0; k < 8; k++) {
          if (!(pend & (1 << k))) continue;
          const port = word * 64 + b * 8 + k;
          const h = handlers.get(port);
          if (h) {
            try { h(port); } catch (e) { onError(port, e); }
          }
        }
      }
    }
  }
}

export interface ProcessDomainInfo {
  domid: number;
  name: string;
  privileged: boolean;
}

/**
 * One process domain as the hypervisor keeps it. Its ports are bound,
 * sent on and closed only through this object (the privileged interface's
 * calls for that process); a dead process's domain is destroyed, which
 * closes its ports (each peer's end goes back to unbound toward this domid,
 * as Xen's evtchn_destroy leaves it, so a restarted process given the same
 * domid can bind them again) and unmaps every grant it held.
 */
export class ProcessDomain {
  readonly shared: DomainShared;
  readonly mem: SharedArrayBuffer = new SharedArrayBuffer(PAGE_SIZE);
  readonly ev: core.EvtchnDomain;
  readonly gntdev: Gntdev;
  private readonly handlers = new Map<number, PortHandler>();
  private dead = false;

  constructor(readonly info: ProcessDomainInfo, private readonly host: core.EvtchnHost, grantTable: (domid: number) => GrantTable | null) {
    this.shared = DomainShared.create(info.domid, 1, PROCESS_DOMAIN_PORTS);
    this.shared.set('sharedInfoOffset', 0);
    this.shared.set('isPrivileged', info.privileged ? 1 : 0);
    this.shared.set('state', DOMSTATE.running);
    this.ev = { shared: this.shared, mem: new Uint8Array(this.mem) };
    this.gntdev = new Gntdev(grantTable, info.domid);
  }

  get domid(): number { return this.info.domid; }

  private alive(): void {
    if (this.dead) throw new Error(`process domain ${this.domid} is gone`);
  }

  /** EVTCHNOP_bind_interdomain to `remotePort` of `rd`; `handler` runs on each event. */
  bindInterdomain(rd: core.EvtchnDomain, remotePort: number, handler: PortHandler): number {
    this.alive();
    const port = core.bindInterdomain(this.host, this.ev, rd, remotePort);
    this.handlers.set(port, handler);
    return port;
  }

  /** EVTCHNOP_alloc_unbound for `remote` to bind. */
  allocUnbound(remote: number, handler: PortHandler): number {
    this.alive();
    const port = core.allocUnbound(this.ev, remote);
    this.handlers.set(port, handler);
    return port;
  }

  /** EVTCHNOP_send on one of its ports. */
  send(port: number): void {
    this.alive();
    core.send(this.host, this.ev, port);
  }

  /** EVTCHNOP_close (a port not in use is refused with the core's error). */
  close(port: number): void {
    this.alive();
    this.handlers.delete(port);
    core.close(this.host, this.ev, port);
  }

  /** Runs the handlers of its pending ports (the main thread's upcall). */
  dispatch(onError: (port: number, e: unknown) => void): void {
    if (!this.dead) dispatch2l(this.ev.mem, this.handlers, onError);
  }

  /** The process is gone: its ports closed toward their peers, its mappings unmapped. */
  destroy(): void {
    if (this.dead) return;
    this.dead = true;
    this.shared.set('state', DOMSTATE.dying);
    this.handlers.clear();
    core.reset(this.host, this.ev);
    this.gntdev.close();
  }
}
