// What a domain's device backends reach the hypervisor through: the
// equivalents of the devices a Linux dom0 or driver domain opens and of the
// libraries Xen's tools wrap them in (tools/libs/evtchn: libxenevtchn,
// tools/libs/gnttab: libxengnttab, libxenstore). Backends are written against
// these interfaces only, so the same backend runs inside the control
// domain's process (localDevices below: the hypervisor's own objects) or in a
// process domain of its own, where each call crosses the privileged socket.
// Nothing here can reach a guest page except through a grant the guest gave.

import type { Hypervisor } from '../../hv/hypervisor.js';
import { GNTST } from '../../hv/abi/grant_table.js';
import type { XsClientBase } from '../xenstored/client.js';

/**
 * One side of a grant copy: a grant of another domain, or bytes of the
 * caller's own taken from `gnttab.allocBuffer` (only those are memory the
 * hypervisor can reach for a process domain).
 */
export type GrantCopySide = { domid: number; ref: number; offset: number } | { buf: Uint8Array; offset: number };

export interface GrantCopyOp {
  source: GrantCopySide;
  dest: GrantCopySide;
  /** bytes; source.offset + len and dest.offset + len stay within one page */
  len: number;
}

/** A grant mapped into the backend (xengnttab_map_grant_ref). */
export interface GrantMapping {
  handle: number;
  domid: number;
  ref: number;
  readonly: boolean;
  /** the granted page; valid until unmapped, even after the granter dies */
  page: Uint8Array;
}

/** libxenevtchn: interdomain ports of the backend's own domain. */
export interface XenEvtchn {
  /** EVTCHNOP_bind_interdomain to `remotePort` of `domid`: the local port; `onEvent` runs on each event */
  bindInterdomain(domid: number, remotePort: number, onEvent: () => void): Promise<number>;
  /** EVTCHNOP_alloc_unbound: a new local port `remoteDomid` may bind to (xenevtchn_bind_unbound_port); `onEvent` runs on each event */
  allocUnbound(remoteDomid: number, onEvent: () => void): Promise<number>;
  /** EVTCHNOP_send on a local port */
  notify(port: number): void;
  /** EVTCHNOP_close */
  unbind(port: number): void;
}

/** libxengnttab: the backend's grant device. */
export interface XenGnttab {
  /** GNTTABOP_copy in one batch: one GNTST_ code per op, the batch going on after a failure */
  copy(ops: GrantCopyOp[]): Promise<number[]>;
  /** maps a grant (trusted backends only): the mapping, or a GNTST_ code */
  map(domid: number, ref: number, readonly: boolean): Promise<GrantMapping | number>;
  /** GNTST_okay, or bad_handle */
  unmap(handle: number): Promise<number>;
  /** `bytes` of the backend's own memory that grant copies may use as a local side */
  allocBuffer(bytes: number): Uint8Array;
}

/** The devices of one domain that runs backends (the control domain or a driver domain). */
export interface XenDevices {
  /** the backend's own domid: what frontends write as `backend-id` */
  readonly domid: number;
  readonly evtchn: XenEvtchn;
  readonly gnttab: XenGnttab;
  /** the domain's xenstore connection */
  readonly xenstore: XsClientBase;
  close(): void;
}

/**
 * The control domain's devices inside the hypervisor's own process: the
 * hypervisor's gntdev and control-domain event channels, and a xenstore
 * client the caller owns.
 */
export function localDevices(hv: Hypervisor, xenstore: XsClientBase): XenDevices {
  const ports = new Set<number>();
  const handles = new Set<number>();
  return {
    domid: 0,
    xenstore,
    evtchn: {
      bindInterdomain: async (domid, remotePort, onEvent) => {
        const p = hv.bindDom0(domid, remotePort, () => onEvent());
        ports.add(p);
        return p;
      },
      allocUnbound: async (remote, onEvent) => {
        const p = hv.allocDom0(remote, () => onEvent());
        ports.add(p);
        return p;
      },
      notify: (port) => hv.notify(port),
      unbind: (port) => {
        ports.delete(port);
        hv.closeDom0(port);
      },
    },
    gnttab: {
      copy: async (ops) => hv.gntdev.copy(ops),
      map: async (domid, ref, readonly) => {
        const m = hv.gntdev.map(domid, ref, readonly);
        if (typeof m !== 'number') handles.add(m.handle);
        return m;
      },
      unmap: async (handle) => {
        // only this backend's own mappings: another's handle is as unknown to it as an unused one
        if (!handles.delete(handle)) return GNTST.bad_handle;
        return hv.gntdev.unmap(handle);
      },
      allocBuffer: (bytes) => new Uint8Array(bytes),
    },
    close: () => {
      for (const p of ports) hv.closeDom0(p);
      ports.clear();
      for (const h of handles) hv.gntdev.unmap(h);
      handles.clear();
    },
  };
}
