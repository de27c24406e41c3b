// `xenode xenstored [--socket PATH] [--db PATH]`: run the store standalone.
//
// `xenode xenstored --control-domain ...`: the control domain's xenstored,
// a process of its own that the toolstack starts (and starts again when it
// dies). It reaches the hypervisor through fd 3, the privileged interface
// as domain 0 (hv/privcmd.ts): each guest's ring is its grant
// GNTTAB_RESERVED_XENSTORE mapped, as C xenstored maps it, and its store
// port bound as domain 0's. The toolstack's IPC channel brings what Xen's
// xenstored learns from the hypervisor (a domain died: @releaseDomain) and
// the streams of driver domains, each to serve as that domain.

import net from 'node:net';
import { parseArgs } from 'node:util';
import { Xenstored, type DomainRingPort } from './daemon.js';
import { processDevices } from '../libs/process_devices.js';
import type { XenDevices } from '../libs/devices.js';
import { GNTTAB_RESERVED_XENSTORE } from '../../hv/abi/grant_table.js';

/** What the toolstack says over the IPC channel to a xenstored it started. */
export type XenstoredCommand = { op: 'attach'; domid: number } | { op: 'died'; domid: number };
export const CONTROL_PRIVCMD_FD = 3;

export const DEFAULT_SOCKET = '/var/run/xenstored/socket';
export const DEFAULT_DB = '/var/lib/xenstored/xenode.journal';

const USAGE = `usage: xenode xenstored [--socket PATH] [--db PATH|none] [--no-fsync] [--control-domain --domains PATH]
  --socket PATH     Unix socket to serve (default: $XENSTORED_PATH, else ${DEFAULT_SOCKET})
  --db PATH         journal file that makes the store persistent (default ${DEFAULT_DB});
                    "none" keeps the store in memory only
  --no-fsync        do not fdatasync the journal (faster, not crash safe)
  --control-domain  started by the toolstack: fd ${CONTROL_PRIVCMD_FD} is the hypervisor's privileged interface as
                    domain 0, the IPC channel the toolstack's; guests' rings are served
  --domains PATH    the introduced domains' connections, kept for a xenstored started again`;

/** The hooks that reach a guest's ring through the hypervisor's privileged interface, and the rings reached. */
function privcmdRings(dev: () => XenDevices, notified: (domid: number) => void): { mapDomainRing(domid: number, gfn: number, port: number): Promise<DomainRingPort>; unmapDomainRing(domid: number): void } {
  const held = new Map<number, { handle: number; port: number }>();
  const unmap = (domid: number): void => {
    const devices = dev();
    const h = held.get(domid);
    if (!h) return;
    held.delete(domid);
    try { devices.evtchn.unbind(h.port); } catch { /* the stream is gone */ }
    devices.gnttab.unmap(h.handle).catch(() => {});
  };
  return {
    async mapDomainRing(domid, _gfn, port) {
      const devices = dev();
      unmap(domid); // introduced again: the new page and port replace the old
      const m = await devices.gnttab.map(domid, GNTTAB_RESERVED_XENSTORE, false);
      if (typeof m === 'number') throw new Error(`d${domid}'s grant ${GNTTAB_RESERVED_XENSTORE} (its xenstore page) cannot be mapped: GNTST ${m}`);
      let local: number;
      try {
        local = await devices.evtchn.bindInterdomain(domid, port, () => notified(domid));
      } catch (e) {
        await devices.gnttab.unmap(m.handle).catch(() => {});
        throw e;
      }
      held.set(domid, { handle: m.handle, port: local });
      return { page: m.page, notify: () => devices.evtchn.notify(local) };
    },
    unmapDomainRing: unmap,
  };
}

export async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        socket: { type: 'string' },
        db: { type: 'string' },
        'no-fsync': { type: 'boolean' },
        'control-domain': { type: 'boolean' },
        domains: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: false,
      strict: true,
    }));
  } catch (e) {
    console.error(`xenstored: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const socketPath = values.socket ?? (process.env['XENSTORED_PATH'] || DEFAULT_SOCKET);
  const db = values.db ?? DEFAULT_DB;
  const control = values['control-domain'] === true;
  if (control && typeof process.send !== 'function') {
    console.error('xenstored: --control-domain is for a xenstored the toolstack starts (it has no IPC channel)');
    return 2;
  }
  if (values.domains !== undefined && !control) {
    console.error(`xenstored: --domains goes with --control-domain (only there are guests' rings served)\n${USAGE}`);
    return 2;
  }
  let priv: net.Socket | null = null;
  let devices: XenDevices | null = null;
  if (control) {
    try {
      priv = new net.Socket({ fd: CONTROL_PRIVCMD_FD, readable: true, writable: true });
    } catch (e) {
      console.error(`xenstored: fd ${CONTROL_PRIVCMD_FD} is not the privileged stream a toolstack gives its xenstored: ${(e as Error).message}`);
      return 2;
    }
  }
  // the hooks run once start() restores connections, by when the devices are there
  const rings = control ? privcmdRings(() => devices!, (domid) => d.ringNotified(domid)) : undefined;
  const d: Xenstored = new Xenstored({
    socketPath,
    dbPath: db === 'none' || db === '' ? undefined : db,
    domainsPath: values.domains,
    fsync: !values['no-fsync'],
    hooks: rings,
  });
  if (priv) devices = processDevices(0, priv, d.openClient());
  try {
    await d.start();
  } catch (e) {
    console.error(`xenstored: cannot start: ${(e as Error).message}`);
    return 1;
  }
  d.log(`listening on ${socketPath}${db === 'none' ? ' (memory only)' : `, journal ${db}`}${control ? `, pid ${process.pid}` : ''}`);
  const ended = new Promise<string>((resolve) => {
    const done = (why: string) => (): void => resolve(why);
    process.once('SIGINT', done('SIGINT'));
    process.once('SIGTERM', done('SIGTERM'));
    if (control) {
      // without the hypervisor's interface no guest can be served: a new toolstack starts a new xenstored
      priv!.once('close', done('the privileged interface closed'));
      process.once('disconnect', done('the toolstack disconnected'));
      process.on('message', (m: XenstoredCommand, handle?: unknown) => {
        if (m?.op === 'attach' && handle instanceof net.Socket && Number.isInteger(m.domid)) d.attachDomainStream(handle, m.domid);
        else if (m?.op === 'died' && Number.isInteger(m.domid)) d.domainDied(m.domid);
      });
      process.send!({ op: 'up', pid: process.pid });
    }
  });
  const why = await ended;
  if (control) d.log(`stopping: ${why}`);
  await d.stop();
  devices?.close();
  if (control) process.disconnect?.();
  return 0;
}
