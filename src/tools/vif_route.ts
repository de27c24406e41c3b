// What Xen's vif-route hotplug script (tools/hotplug/Linux/vif-route with
// vif-common.sh) does when a vif's backend comes online: the vif's tap is
// not bridged but routed. It gets the host's address on the gateway
// interface (`gatewaydev=`; the interface of the host's default route when
// absent, where the script would take eth0) as a /32, proxy ARP, and one
// host route per IPv4 address of the vif's `ip=` through it, with that
// address as the source. The routes go with the tap (the kernel drops a
// route whose device is gone), as the script's offline step removes them.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { TapDevice, VIF_HWADDR, type TapOptions } from './backends/tap.js';
import { allowedNets } from './backends/antispoof.js';
import { VifBridgeError } from './vif_bridge.js';

export interface VifRouteOptions extends Omit<TapOptions, 'name'> {
  name: string;
  mtu: number;
  /** the backend's `ip` node: the addresses routed to the guest */
  ip: string | undefined;
  /** the backend's `gatewaydev` node */
  gatewaydev: string | undefined;
}

/** Runs ip(8) as the script does; its complaint is the error. */
function ipCmd(args: string[]): string {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.error) throw new VifBridgeError(`ip ${args.join(' ')}: ${r.error.message} (install iproute2)`);
  if (r.status !== 0) throw new VifBridgeError(`ip ${args.join(' ')}: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

/** vif-common.sh's dom0_ip: the first IPv4 address of the gateway interface. */
function gatewayAddress(gatewaydev: string | undefined): { dev: string; addr: string } {
  let dev = gatewaydev;
  if (!dev) {
    const def = /\bdev (\S+)/.exec(ipCmd(['-4', 'route', 'show', 'default']));
    if (!def) throw new VifBridgeError('vif-route: no gatewaydev= and no default route to take the host\'s address from');
    dev = def[1]!;
  }
  const m = /\binet (\d+\.\d+\.\d+\.\d+)/.exec(ipCmd(['-4', 'addr', 'show', 'dev', dev]));
  if (!m) throw new VifBridgeError(`vif-route: ${dev} has no IPv4 address (the script's "${dev} is not up")`);
  return { dev, addr: m[1]! };
}

/** The vif's tap, routed: up, with the host's address, proxy ARP and a route to each of the guest's addresses. */
export function vifRouteOnline(o: VifRouteOptions): { tap: TapDevice; line: string } {
  const nets = allowedNets(o.ip).filter((n) => n.bits === 32);
  if (!nets.length) throw new VifBridgeError(`${o.name}: vif-route needs ip= with the guest's IPv4 address(es), which it routes to it`);
  const gw = gatewayAddress(o.gatewaydev);
  const tap = TapDevice.open(o);
  try {
    tap.setHwaddr(VIF_HWADDR);
    tap.setMtu(o.mtu);
    ipCmd(['addr', 'add', `${gw.addr}/32`, 'dev', o.name]);
    fs.writeFileSync(`/proc/sys/net/ipv4/conf/${o.name}/proxy_arp`, '1');
    tap.up();
    const addrs = nets.map((n) => [n.addr >>> 24, (n.addr >>> 16) & 255, (n.addr >>> 8) & 255, n.addr & 255].join('.'));
    for (const a of addrs) ipCmd(['route', 'add', a, 'dev', o.name, 'src', gw.addr]);
    return { tap, line: `${o.name}: tap ${o.name} routed: ${addrs.join(', ')} via ${gw.addr} (${gw.dev})` };
  } catch (e) {
    tap.close();
    throw e instanceof VifBridgeError ? new VifBridgeError(`${o.name}: ${e.message}`) : e;
  }
}
