// What Xen's vif-bridge hotplug script (tools/hotplug/Linux/vif-bridge and
// vif-common.sh) does when a vif's backend comes online, for the vif's tap:
// the MTU the toolstack wrote, the bridge named by `bridge=`, the device up.
// The rule for which vifs get one: a vif whose bridge is an interface of the
// daemon's network namespace gets a tap on it (and that interface must be a
// bridge); one whose bridge is not there stays on xenode's in-process switch
// of that name, as does every vif of a daemon without CAP_NET_ADMIN or
// /dev/net/tun. A vif that names the script (`script=vif-bridge`) asks for
// the host's bridge: there, a missing bridge or missing privilege is the
// error vif-bridge would give, not a fall back to the switch.

import { bridgeMissing, ifIndex, TapDevice, TapError, VIF_HWADDR, type TapOptions } from './backends/tap.js';

export class VifBridgeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VifBridgeError';
  }
}

/** Linux's netback's name for a vif's interface (xenvif_alloc: "vif%u.%u"). */
export function vifName(domid: number, devid: number): string {
  return `vif${domid}.${devid}`;
}

export interface VifBridgeOptions extends Omit<TapOptions, 'name'> {
  /** the interface's name, vifName(domid, devid) */
  name: string;
  bridge: string;
  mtu: number;
  /** the vif named vif-bridge as its script: no fall back to the in-process switch */
  required?: boolean;
}

const EPERM = 1, ENOENT = 2, EACCES = 13, ENXIO = 6, ENODEV = 19;

/**
 * The vif's tap, on its bridge and up; or null (with the reason, for the log) when the vif belongs on
 * the in-process switch. Throws VifBridgeError when the host's bridge cannot take it.
 */
export function vifBridgeOnline(o: VifBridgeOptions): { tap: TapDevice | null; line: string } {
  const { name, bridge } = o;
  if (ifIndex(bridge) === null) {
    if (o.required) throw new VifBridgeError(`${name}: ${bridgeMissing(bridge)}`);
    return { tap: null, line: `${name}: no host bridge ${bridge}: on the in-process switch ${bridge}` };
  }
  let tap: TapDevice;
  try {
    tap = TapDevice.open(o);
  } catch (e) {
    const errno = e instanceof TapError ? e.errno : undefined;
    const unprivileged = errno === EPERM || errno === EACCES || errno === ENOENT || errno === ENXIO || errno === ENODEV;
    if (!unprivileged || o.required) throw new VifBridgeError(`${name}: ${(e as Error).message}`);
    return { tap: null, line: `${name}: host bridge ${bridge} exists but no tap can be made (${(e as Error).message}): on the in-process switch ${bridge}` };
  }
  try {
    tap.setHwaddr(VIF_HWADDR);
    tap.setMtu(o.mtu);
    tap.joinBridge(bridge);
    tap.up();
  } catch (e) {
    tap.close();
    throw new VifBridgeError(`${name}: ${(e as Error).message}`);
  }
  return { tap, line: `${name}: tap ${name} on host bridge ${bridge}` };
}
