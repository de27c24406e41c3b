// The control domain's services for a domain the builder made: the console
// backend on its PV console ring and xenstored on its xenstore ring (each
// reached through the ring's grant-seeded special page and an event channel
// bound by the control domain), and libxl's xenstore skeleton for it.

import type { Hypervisor } from '../hv/hypervisor.js';
import type { Xenstored, XsClientBase, DomainRingPort, XenstoredHooks } from './xenstored/index.js';
import type { XenstoredService } from './xenstored_service.js';
import type { BuiltDomain } from './builder.js';
import { specialPageOffset } from './builder.js';
import { ConsoleBackend } from './console.js';

/**
 * xenstored's hooks into the hypervisor: on INTRODUCE, reach the guest's
 * ring page and bind a control-domain port to the guest's store port; on
 * release, unbind it. `ringOffset` says where a domain's ring GFN lives in
 * its memory (null: not a ring we know, INTRODUCE fails with EINVAL).
 */
export class XenstoreRings implements XenstoredHooks {
  xs: Xenstored | null = null;
  private readonly bound = new Map<number, number>(); // domid -> control-domain port

  constructor(private readonly hv: Hypervisor, private readonly ringOffset: (domid: number, gfn: number) => number | null) {}

  // arrow properties: xenstored calls the hooks detached from this object
  readonly mapDomainRing = (domid: number, gfn: number, port: number): DomainRingPort | null => {
    const off = this.ringOffset(domid, gfn);
    if (off === null) return null;
    let mem;
    try { mem = this.hv.memory(domid); } catch { return null; }
    this.unmapDomainRing(domid);
    let local: number;
    try {
      local = this.hv.bindDom0(domid, port, () => this.xs?.ringNotified(domid));
    } catch {
      return null;
    }
    this.bound.set(domid, local);
    return { page: mem.bytes.subarray(off, off + 4096), notify: () => this.hv.notify(local) };
  };

  readonly unmapDomainRing = (domid: number): void => {
    const p = this.bound.get(domid);
    if (p !== undefined) this.hv.closeDom0(p);
    this.bound.delete(domid);
  };
}

export interface DomainServices {
  console: ConsoleBackend;
  close(): void;
}

/**
 * Writes libxl's xenstore skeleton for a domain (xen-abi.md §6): read-only
 * nodes owned by dom0 with read access for the domain, and the writable ones.
 */
export async function writeSkeleton(c: XsClientBase, d: { domid: number; name: string; uuid: string; memoryKiB: number; maxMemKiB?: number; vcpus: number; onlineVcpus?: number; storePort: number; storeGfn: number; consolePort: number; consoleGfn: number }): Promise<void> {
  const D = d.domid;
  const dom = `/local/domain/${D}`;
  const ro = ['n0', `r${D}`];
  const rw = [`n${D}`];
  // retried on EAGAIN: other domains' nodes change while this one is written (libxl loops the same way)
  await c.transaction(async (tx) => {
    // pipelined: the requests go out in order and xenstored answers them in order, so parents precede children
    const pending: Promise<void>[] = [];
    // a node dom0 creates inherits its parent's permissions, so only nodes that differ need SET_PERMS
    const permsOf = new Map<string, string>();
    const w = (p: string, v: string, perms = ro) => {
      const key = perms.join(',');
      pending.push(c.write(p, v, tx));
      if (permsOf.get(p.slice(0, p.lastIndexOf('/'))) !== key) pending.push(c.setPerms(p, perms, tx));
      permsOf.set(p, key);
    };
    w(dom, '');
    w(`/vm/${d.uuid}`, '');
    w(`/vm/${d.uuid}/uuid`, d.uuid);
    w(`/vm/${d.uuid}/name`, d.name);
    w(`/libxl/${D}`, '', ['n0']);
    w(`${dom}/vm`, `/vm/${d.uuid}`);
    w(`${dom}/name`, d.name);
    w(`${dom}/domid`, String(D));
    w(`${dom}/cpu`, '');
    // libxl's cpu/N/availability: the guest brings up the online ones, the rest wait for vcpu-set
    for (let i = 0; i < d.vcpus; i++) w(`${dom}/cpu/${i}/availability`, i < (d.onlineVcpus ?? d.vcpus) ? 'online' : 'offline');
    w(`${dom}/memory`, '');
    w(`${dom}/memory/static-max`, String(d.maxMemKiB ?? d.memoryKiB));
    w(`${dom}/memory/target`, String(d.memoryKiB));
    w(`${dom}/memory/videoram`, '-1');
    w(`${dom}/device`, '');
    w(`${dom}/device/suspend`, '');
    w(`${dom}/device/suspend/event-channel`, '', rw);
    w(`${dom}/control`, '');
    w(`${dom}/control/shutdown`, '', rw);
    w(`${dom}/control/feature-poweroff`, '', rw);
    w(`${dom}/control/feature-reboot`, '', rw);
    w(`${dom}/control/feature-suspend`, '', rw);
    w(`${dom}/control/sysrq`, '', rw);
    w(`${dom}/control/platform-feature-multiprocessor-suspend`, '1');
    w(`${dom}/control/platform-feature-xs_reset_watches`, '1');
    for (const k of ['data', 'drivers', 'feature', 'attr', 'error']) w(`${dom}/${k}`, '', rw);
    w(`${dom}/store`, '');
    w(`${dom}/store/port`, String(d.storePort));
    w(`${dom}/store/ring-ref`, String(d.storeGfn));
    w(`${dom}/console`, '');
    w(`${dom}/console/port`, String(d.consolePort));
    w(`${dom}/console/ring-ref`, String(d.consoleGfn));
    w(`${dom}/console/type`, 'xenconsoled');
    w(`${dom}/console/output`, 'pty');
    w(`${dom}/console/limit`, '1048576');
    await Promise.all(pending);
  });
}

/** Connects the console backend and xenstored to a built (not yet started) domain. */
export async function connectServices(hv: Hypervisor, xs: XenstoredService, client: XsClientBase, d: BuiltDomain, opts: { name: string; uuid: string; vcpus: number; onlineVcpus?: number; memoryKiB: number; maxMemKiB?: number; output: (b: Uint8Array) => void }): Promise<DomainServices> {
  const con = new ConsoleBackend(hv, d.domid, specialPageOffset(d.build, d.consoleGfn), d.consolePort, opts.output);
  try {
    await writeSkeleton(client, { domid: d.domid, name: opts.name, uuid: opts.uuid, memoryKiB: opts.memoryKiB, maxMemKiB: opts.maxMemKiB, vcpus: opts.vcpus, onlineVcpus: opts.onlineVcpus, storePort: d.storePort, storeGfn: d.storeGfn, consolePort: d.consolePort, consoleGfn: d.consoleGfn });
    // a xenstored in another process maps the ring through its grant, which needs the domain's physmap
    if (xs.kind === 'process') await hv.whenSetUp(d.domid);
    await client.introduce(d.domid, d.storeGfn, d.storePort);
  } catch (e) {
    con.close();
    throw e;
  }
  return {
    console: con,
    close: () => {
      con.close();
      xs.release(d.domid);
    },
  };
}

/** libxl's tear-down of a domain's xenstore nodes (libxl__destroy_domid); `uuid` null keeps /vm/<uuid>. */
export async function removeDomainNodes(c: XsClientBase, domid: number, uuid: string | null): Promise<void> {
  const paths = [`/local/domain/${domid}`, `/libxl/${domid}`];
  if (uuid) paths.push(`/vm/${uuid}`);
  // its devices' backend directories in the control domain (backend/<type>/<domid>)
  const types = await c.directory('/local/domain/0/backend').catch(() => [] as string[]);
  for (const t of types) paths.push(`/local/domain/0/backend/${t}/${domid}`);
  for (const p of paths) {
    try { await c.rm(p); } catch { /* already gone */ }
  }
}
