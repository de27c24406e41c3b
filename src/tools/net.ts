// A domain's virtual network interfaces as libxl adds them (libxl_nic.c,
// libxl__device_nic_setdefault and libxl__set_xenstore_nic): the frontend
// directory in the guest's home and the backend directory in the backend
// domain's, written in one transaction before the guest runs, then the
// backend started on them and joined to its bridge: the host's, through a tap
// (vif_bridge.ts does vif-bridge's work), or else xenode's in-process switch
// of that name; or by the driver domain the vif's backend= names, whose
// xenbus finds the directory and does the same there. No hotplug script is run.

import type { XsClientBase } from './xenstored/client.js';
import type { VifSpec } from './xl/config.js';
import { DEFAULT_BRIDGE, DEFAULT_VIF_BACKEND, parseMac, parseVifRate, randomXenMac, type VifRate } from './xl/vif.js';
import type { XenDevices } from './libs/devices.js';
import { VifBackend } from './backends/vif.js';
import type { NetSwitches } from './backends/netswitch.js';
import { XenbusState } from './backends/xenbus.js';
import { awaitDriverDevices, driverNameProblem } from './driver_domains.js';

/** A vif that cannot be added: the message names it. */
export class NicError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NicError';
  }
}

export interface NicSpec {
  /** the guest's MAC; one in Xen's 00:16:3e range is made when absent */
  mac?: string;
  /** the switch it joins (default xenbr0) */
  bridge?: string;
  /** the device number (default: its index in the list) */
  devid?: number;
  /** default 1500 */
  mtu?: number;
  /** whether the guest trusts its backend (default yes); an untrusting netfront bounces what it shares */
  trusted?: boolean;
  /** the vif must go on the host's bridge (it named vif-bridge as its script): no fall back to the in-process switch */
  hostBridge?: boolean;
  /** what the guest may transmit per interval (`rate=`); unlimited when absent */
  rate?: VifRate | null;
  /** the host-side interface's name (`vifname=`); vif<domid>.<devid> when absent */
  vifname?: string | null;
  /** the driver domain that serves it, by name (xl's backend=); unset: the control domain */
  backend?: string;
  /** the guest's addresses (xl's ip=, space-separated): netback drops IPv4 it sends from any other */
  ip?: string | null;
  /** script=vif-route: the tap is routed to the guest's ip= addresses instead of bridged (vif_route.ts) */
  route?: boolean;
  /** the host interface whose address a routed vif's tap takes (xl's gatewaydev=) */
  gatewaydev?: string | null;
}

export interface NicDevice {
  devid: number;
  mac: string;
  bridge: string;
  backendPath: string;
  frontendPath: string;
  backend: VifBackend;
  /** its tap's name when it is on the host's bridge; null on the in-process switch */
  tap: string | null;
}

/** libxl's default vif hotplug script (written for fidelity; vif_bridge.ts does its work) */
const VIF_SCRIPT = '/etc/xen/scripts/vif-bridge';
/** the routing one (vif_route.ts does its work) */
const VIF_ROUTE_SCRIPT = '/etc/xen/scripts/vif-route';
const DEFAULT_MTU = 1500;

/** A `vif=` entry as netback serves it (the control domain's, or a driver domain's); anything else is refused, naming the vif and why. */
export function nicSpecOf(v: VifSpec): NicSpec {
  const refuse = (why: string) => new NicError(`vif ${v.devid ?? ''}: ${why}`);
  const control = v.backend === DEFAULT_VIF_BACKEND || v.backend === 'Domain-0';
  const bad = control ? null : driverNameProblem(v.backend);
  if (bad) throw refuse(bad);
  const route = v.script === 'vif-route' || v.script === VIF_ROUTE_SCRIPT;
  if (!control && v.script !== undefined && !route) throw refuse(`script ${v.script}: a driver domain puts its vifs on the host's bridge when there is one, else on its own switch`);
  if (v.script !== undefined && !route && v.script !== 'vif-bridge' && v.script !== VIF_SCRIPT) {
    throw refuse(`script ${v.script}: vif hotplug scripts are not run; vif-bridge's and vif-route's work is built in (a tap on the host's bridge or routed, or the in-process switch)`);
  }
  if (route && !v.ip) throw refuse('script vif-route: ip= must name the guest\'s addresses, which it routes to the vif');
  return {
    mac: v.mac || undefined, bridge: v.bridge, devid: v.devid, mtu: v.mtu, trusted: v.trusted, hostBridge: v.script !== undefined && !route, rate: v.rate ? parseVifRate(v.rate) : null,
    vifname: v.vifname ?? null, ip: v.ip ?? null, route, gatewaydev: v.gatewaydev ?? null, ...(control ? {} : { backend: v.backend }),
  };
}

/** Each spec with its devid, MAC and bridge settled; a repeated devid or a bad MAC is refused before anything is written. */
export function settleNics(specs: NicSpec[], random?: (n: number) => Uint8Array): (Required<Omit<NicSpec, 'backend'>> & Pick<NicSpec, 'backend'>)[] {
  const seen = new Set<number>();
  return specs.map((s, i) => {
    const devid = s.devid ?? i;
    if (!Number.isInteger(devid) || devid < 0) throw new NicError(`vif ${devid}: not a device number`);
    if (seen.has(devid)) throw new NicError(`vif ${devid}: devid ${devid} is already used`);
    seen.add(devid);
    let mac: string;
    try {
      mac = s.mac ? parseMac(s.mac) : randomXenMac(random);
    } catch (e) {
      throw new NicError(`vif ${devid}: ${(e as Error).message}`);
    }
    return { devid, mac, bridge: s.bridge || DEFAULT_BRIDGE, mtu: s.mtu ?? DEFAULT_MTU, trusted: s.trusted ?? true, hostBridge: s.hostBridge ?? false, rate: s.rate ?? null, vifname: s.vifname ?? null, ip: s.ip ?? null, route: s.route ?? false, gatewaydev: s.gatewaydev ?? null, backend: s.backend };
  });
}

/** Writes the frontend and backend nodes of every vif of `domid` (libxl__device_nic_add's xenstore part). */
export async function writeVifNodes(c: XsClientBase, domid: number, backendDomid: number, nics: ReturnType<typeof settleNics>): Promise<{ backendPath: string; frontendPath: string }[]> {
  const out = nics.map((n) => ({
    frontendPath: `/local/domain/${domid}/device/vif/${n.devid}`,
    backendPath: `/local/domain/${backendDomid}/backend/vif/${domid}/${n.devid}`,
  }));
  if (!nics.length) return out;
  await c.transaction(async (tx) => {
    const pending: Promise<void>[] = [];
    const w = (p: string, v: string) => pending.push(c.write(p, v, tx));
    const fePerms = [`n${domid}`, `r${backendDomid}`], bePerms = [`n${backendDomid}`, `r${domid}`];
    nics.forEach((n, i) => {
      const { frontendPath: fe, backendPath: be } = out[i]!;
      w(be, '');
      pending.push(c.setPerms(be, bePerms, tx));
      w(`${be}/frontend`, fe);
      w(`${be}/frontend-id`, String(domid));
      w(`${be}/online`, '1');
      w(`${be}/state`, String(XenbusState.Initialising));
      w(`${be}/script`, n.route ? VIF_ROUTE_SCRIPT : VIF_SCRIPT);
      w(`${be}/mac`, n.mac);
      w(`${be}/bridge`, n.bridge);
      w(`${be}/handle`, String(n.devid));
      w(`${be}/type`, 'vif');
      w(`${be}/mtu`, String(n.mtu));
      // libxl__device_nic_add's "<bytes>,<usecs>", which netback reads at connect
      if (n.rate) w(`${be}/rate`, `${n.rate.bytes},${n.rate.usec}`);
      if (n.vifname) w(`${be}/vifname`, n.vifname);
      // libxl__device_nic_add writes the addresses for the hotplug script (vif-bridge's anti-spoofing)
      if (n.ip) w(`${be}/ip`, n.ip);
      if (n.gatewaydev) w(`${be}/gatewaydev`, n.gatewaydev);
      w(fe, '');
      pending.push(c.setPerms(fe, fePerms, tx));
      w(`${fe}/backend`, be);
      w(`${fe}/backend-id`, String(backendDomid));
      w(`${fe}/state`, String(XenbusState.Initialising));
      w(`${fe}/handle`, String(n.devid));
      w(`${fe}/mac`, n.mac);
      w(`${fe}/mtu`, String(n.mtu));
      // read by Linux's netfront (5.17 on): an untrusted backend gets only bounce pages, never the guest's own
      w(`${fe}/trusted`, n.trusted ? '1' : '0');
    });
    await Promise.all(pending);
  });
  return out;
}

/** Adds `specs` to `domid`: nodes written, a backend on each; on a failure the backends started are stopped. */
export async function addVifs(devices: XenDevices, switches: NetSwitches, domid: number, specs: NicSpec[], log?: (line: string) => void): Promise<NicDevice[]> {
  const nics = settleNics(specs);
  const nodes = await writeVifNodes(devices.xenstore, domid, devices.domid, nics);
  const started: NicDevice[] = [];
  try {
    for (const [i, n] of nodes.entries()) {
      let backend: VifBackend;
      try {
        backend = await VifBackend.start({ devices, path: n.backendPath, switches, hostBridge: nics[i]!.hostBridge, log });
      } catch (e) {
        throw new NicError(`vif ${nics[i]!.devid}: ${(e as Error).message}`);
      }
      started.push({ ...n, devid: nics[i]!.devid, mac: nics[i]!.mac, bridge: nics[i]!.bridge, backend, tap: backend.tap?.name ?? null });
    }
  } catch (e) {
    for (const d of started) await d.backend.close();
    throw e;
  }
  return started;
}

/** A vif a driver domain serves: its nodes, written by the control domain; the backend (and its tap) are the driver domain's. */
export interface DriverNic {
  devid: number;
  mac: string;
  bridge: string;
  backendPath: string;
  frontendPath: string;
  driver: string;
  driverDomid: number;
}

/**
 * Adds settled `nics` (all served by driver domain `driver`) to `domid`:
 * the nodes written, then each waited for until its backend says
 * hotplug-status connected; a failure removes every directory written.
 */
export async function addDriverVifs(c: XsClientBase, domid: number, driver: { name: string; domid: number }, nics: ReturnType<typeof settleNics>, timeoutMs?: number): Promise<DriverNic[]> {
  const nodes = await writeVifNodes(c, domid, driver.domid, nics);
  await awaitDriverDevices(c, nodes, driver.name, (i, why) => new NicError(`vif ${nics[i]!.devid}: ${why}`), timeoutMs);
  return nodes.map((n, i) => ({ ...n, devid: nics[i]!.devid, mac: nics[i]!.mac, bridge: nics[i]!.bridge, driver: driver.name, driverDomid: driver.domid }));
}
