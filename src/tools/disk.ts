// A domain's virtual disks as libxl adds them (libxl_disk.c,
// libxl__device_disk_setdefault and the generic device code): the frontend
// directory in the guest's home and the backend directory in the backend
// domain's, written in one transaction before the guest runs, then the
// backend started on them: in the control domain, or in the driver domain
// a disk's backend= names (driver_domains.ts), whose own xenbus finds the
// directory and serves it.

import path from 'node:path';
import type { XsClientBase } from './xenstored/client.js';
import type { DiskSpec } from './xl/config.js';
import { DEFAULT_DISK_BACKEND } from './xl/disk.js';
import type { XenDevices } from './libs/devices.js';
import { VbdBackend } from './backends/vbd.js';
import type { ImageFormat } from './backends/image.js';
import { XenbusState, vbdDevid } from './backends/xenbus.js';
import { awaitDriverDevices, driverNameProblem } from './driver_domains.js';

/** A disk that cannot be added: the message names it. */
export class DiskError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DiskError';
  }
}

export interface VbdSpec {
  /** a raw image file or a block device */
  target: string;
  /** raw (default: read directly) or a format qemu-nbd serves (qcow2, qcow, vhd, qed) */
  format?: ImageFormat;
  /** the guest's name for it (xvda, hdc, sdb, d0p1) */
  vdev: string;
  readOnly?: boolean;
  cdrom?: boolean;
  /** xl's discard / no-discard; unset: on for a writable disk (libxl__device_disk_setdefault) */
  discard?: boolean;
  /** the driver domain that serves it, by name (xl's backend=); unset: the control domain */
  backend?: string;
}

export interface VbdDevice {
  devid: number;
  vdev: string;
  backendPath: string;
  frontendPath: string;
  backend: VbdBackend;
}

/**
 * A `disk=` entry as blkback serves it, in the control domain or in the
 * driver domain its backend= names: an image file (raw, or a format
 * qemu-nbd reads for it) or a block device, without a hotplug script.
 * Anything else is refused, naming the disk and why.
 */
export function vbdSpecOf(d: DiskSpec): VbdSpec {
  const refuse = (why: string) => new DiskError(`disk ${d.vdev}: ${why}`);
  const control = d.backend === DEFAULT_DISK_BACKEND || d.backend === 'Domain-0';
  const bad = control ? null : driverNameProblem(d.backend);
  if (bad) throw refuse(bad);
  if (d.script !== undefined) throw refuse(`script ${d.script}: block hotplug scripts are not run; give the image or device itself`);
  if (d.target === '') throw refuse('no target (an empty CD-ROM drive is not supported)');
  if (!path.isAbsolute(d.target)) throw refuse(`target '${d.target}' must be an absolute path: the daemon opens it, not xl`);
  return { target: d.target, format: d.format, vdev: d.vdev, readOnly: d.access === 'r', cdrom: d.devtype === 'cdrom', discard: d.discard, ...(control ? {} : { backend: d.backend }) };
}

/** The device number of each spec, refusing a bad or repeated vdev before anything is written. */
export function vbdDevids(specs: VbdSpec[]): number[] {
  const seen = new Map<number, string>();
  return specs.map((s) => {
    const id = vbdDevid(s.vdev);
    if (id === null) throw new DiskError(`disk ${s.target}: '${s.vdev}' is not a virtual device name (xen-vbd-interface(7))`);
    const other = seen.get(id);
    if (other !== undefined) throw new DiskError(`disk ${s.target}: vdev '${s.vdev}' is the same device as '${other}'`);
    seen.set(id, s.vdev);
    return id;
  });
}

/** Writes the frontend and backend nodes of every disk of `domid` (libxl__device_disk_add's xenstore part). */
export async function writeVbdNodes(c: XsClientBase, domid: number, backendDomid: number, specs: VbdSpec[]): Promise<{ devid: number; backendPath: string; frontendPath: string }[]> {
  const ids = vbdDevids(specs);
  const out = specs.map((_, i) => ({
    devid: ids[i]!,
    frontendPath: `/local/domain/${domid}/device/vbd/${ids[i]}`,
    backendPath: `/local/domain/${backendDomid}/backend/vbd/${domid}/${ids[i]}`,
  }));
  if (!specs.length) return out;
  await c.transaction(async (tx) => {
    const pending: Promise<void>[] = [];
    const w = (p: string, v: string) => pending.push(c.write(p, v, tx));
    // the frontend's directory is the guest's, readable by its backend; the backend's the other way round
    const fePerms = [`n${domid}`, `r${backendDomid}`], bePerms = [`n${backendDomid}`, `r${domid}`];
    specs.forEach((s, i) => {
      const { devid, frontendPath: fe, backendPath: be } = out[i]!;
      w(be, '');
      pending.push(c.setPerms(be, bePerms, tx));
      w(`${be}/frontend`, fe);
      w(`${be}/frontend-id`, String(domid));
      w(`${be}/online`, '1');
      w(`${be}/removable`, '0');
      w(`${be}/bootable`, '1');
      w(`${be}/state`, String(XenbusState.Initialising));
      w(`${be}/dev`, s.vdev);
      // a format but raw is qemu-nbd's to read: libxl's qdisk spelling, <format>:<target>
      const format = s.format ?? 'raw';
      w(`${be}/type`, format === 'raw' ? 'phy' : 'qdisk');
      w(`${be}/mode`, s.readOnly || s.cdrom ? 'r' : 'w');
      w(`${be}/device-type`, s.cdrom ? 'cdrom' : 'disk');
      w(`${be}/params`, format === 'raw' ? s.target : `${format}:${s.target}`);
      w(`${be}/discard-enable`, (s.discard ?? !(s.readOnly || s.cdrom)) ? '1' : '0');
      w(fe, '');
      pending.push(c.setPerms(fe, fePerms, tx));
      w(`${fe}/backend`, be);
      w(`${fe}/backend-id`, String(backendDomid));
      w(`${fe}/state`, String(XenbusState.Initialising));
      w(`${fe}/virtual-device`, String(devid));
      w(`${fe}/device-type`, s.cdrom ? 'cdrom' : 'disk');
    });
    await Promise.all(pending);
  });
  return out;
}

/**
 * Adds `specs` to `domid`: nodes written, a backend on each in `devices`'
 * domain. On a failure the backends already started are stopped and the
 * error says which disk.
 */
export async function addVbds(devices: XenDevices, domid: number, specs: VbdSpec[], log?: (line: string) => void): Promise<VbdDevice[]> {
  const nodes = await writeVbdNodes(devices.xenstore, domid, devices.domid, specs);
  const started: VbdDevice[] = [];
  try {
    for (const [i, n] of nodes.entries()) {
      let backend: VbdBackend;
      try {
        backend = await VbdBackend.start({ devices, path: n.backendPath, log });
      } catch (e) {
        throw new DiskError(`disk ${specs[i]!.vdev} (${specs[i]!.target}): ${(e as Error).message}`);
      }
      started.push({ ...n, vdev: specs[i]!.vdev, backend });
    }
  } catch (e) {
    for (const d of started) await d.backend.close();
    throw e;
  }
  return started;
}

/** A disk a driver domain serves: its nodes, written by the control domain; the backend is the driver domain's. */
export interface DriverVbd {
  devid: number;
  vdev: string;
  backendPath: string;
  frontendPath: string;
  /** the driver domain's name and domid */
  driver: string;
  driverDomid: number;
}

/**
 * Adds `specs` (all served by driver domain `driverDomid`) to `domid`: the
 * nodes written, then each device waited for until its backend says
 * hotplug-status connected, or error (its hotplug-error is the message).
 * A failure removes every directory it wrote.
 */
export async function addDriverVbds(c: XsClientBase, domid: number, driver: { name: string; domid: number }, specs: VbdSpec[], timeoutMs?: number): Promise<DriverVbd[]> {
  const nodes = await writeVbdNodes(c, domid, driver.domid, specs);
  await awaitDriverDevices(c, nodes, driver.name, (i, why) => new DiskError(`disk ${specs[i]!.vdev} (${specs[i]!.target}): ${why}`), timeoutMs);
  return nodes.map((n, i) => ({ ...n, vdev: specs[i]!.vdev, driver: driver.name, driverDomid: driver.domid }));
}
