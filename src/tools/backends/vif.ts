// One virtual network interface's backend (Linux's
// drivers/net/xen-netback/xenbus.c): the xenbus handshake around the data
// path in netback.ts. The backend directory the toolstack wrote names the
// frontend, the MAC and the bridge; the backend publishes its features,
// waits in InitWait for the frontend's rings and event channel(s), connects
// the vif to its bridge (the host's, through a tap, or the in-process
// switch: vif_bridge.ts says which), and follows the frontend through Closing
// and Closed (and back to InitWait for a new frontend). A frontend that
// writes nonsense gets the device closed with a message in the backend's
// `error` node; nothing it writes throws out of here.

import type { GrantMapping, XenDevices } from '../libs/devices.js';
import { antispoofFilter } from './antispoof.js';
import { NetifRxBackRing, NetifTxBackRing, PAGE_SIZE } from './netif.js';
import { gsoBit, NetifService, newNetifStats, parseRateNode, type NetFrame, type NetifStats } from './netback.js';
import { XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6 } from './gso.js';
import type { NetSwitches, SwitchPort } from './netswitch.js';
import type { TapDevice } from './tap.js';
import { XenbusBackend, XenbusState } from './xenbus.js';
import { vifBridgeOnline, vifName } from '../vif_bridge.js';
import { vifRouteOnline } from '../vif_route.js';

/** An interface name Linux takes: IFNAMSIZ - 1 bytes, no '/', ':' or white space. */
const IFNAME = /^[^\s/:]{1,15}$/;

export interface VifBackendOptions {
  devices: XenDevices;
  /** the backend directory, /local/domain/<backend>/backend/vif/<frontend>/<devid> */
  path: string;
  switches: NetSwitches;
  /** the vif must be on the host's bridge (it named vif-bridge as its script): no fall back to the switch */
  hostBridge?: boolean;
  log?: (line: string) => void;
}

/** One queue of a connected vif: its two rings and the service on them. */
interface Queue {
  tx: GrantMapping;
  rx: GrantMapping;
  /** local ports: one, or the transmit and receive ones of split event channels */
  ports: number[];
  service: NetifService;
}

interface Connection {
  queues: Queue[];
  /** the switch port, when the vif has no tap */
  port: SwitchPort | null;
}

/** Queues offered (multi-queue-max-queues; Linux's netback offers one a CPU): a frontend uses up to one a vCPU. */
export const MAX_QUEUES = 4;

/**
 * The queue a frame to the guest goes on: a hash of its IPv4/IPv6 addresses and, unfragmented, its TCP/UDP
 * ports, so one flow keeps its order on one queue (xenvif_select_queue's skb_get_hash when the frontend set
 * no hash algorithm); anything else goes on queue 0.
 */
export function flowQueue(d: Uint8Array, queues: number): number {
  if (queues <= 1 || d.length < 14) return 0;
  const type = (d[12]! << 8) | d[13]!;
  let from: number, to: number, proto: number, l4: number;
  if (type === 0x0800 && d.length >= 34) {
    [from, to, proto, l4] = [26, 34, d[23]!, 14 + (d[14]! & 15) * 4];
    if ((d[20]! & 0x3f) | d[21]!) proto = -1; // a fragment: only its first has the ports
  } else if (type === 0x86dd && d.length >= 54) {
    [from, to, proto, l4] = [22, 54, d[20]!, 54];
  } else {
    return 0;
  }
  // FNV-1a
  let h = 0x811c9dc5;
  const mix = (b: number) => { h = Math.imul(h ^ b, 0x01000193) >>> 0; };
  for (let i = from; i < to; i++) mix(d[i]!);
  if ((proto === 6 || proto === 17) && d.length >= l4 + 4) for (let i = l4; i < l4 + 4; i++) mix(d[i]!);
  return h % queues;
}

/** The default bridge (xl-network-configuration(5)) */
const DEFAULT_BRIDGE = 'xenbr0';

export class VifBackend extends XenbusBackend {
  private bridge = DEFAULT_BRIDGE;
  /** the `vifname` the toolstack wrote (vif-bridge renames the interface to it), or null */
  private vifname: string | null = null;
  private conn: Connection | null = null;
  /** the vif's interface on the host, made at setup and kept until close (netback's vif netdev) */
  private tapDev: TapDevice | null = null;
  /** what the vif moved, over every connection */
  readonly stats: NetifStats = newNetifStats();
  /** the transport of the last connection */
  lastConnection: { splitEventChannels: boolean; sg: boolean; gsoTcpv4: boolean; gsoTcpv6: boolean; queues: number } | null = null;

  private constructor(private readonly o: VifBackendOptions) {
    super(o.devices, o.path, 'vif', o.log);
  }

  /** Publishes the features and waits in InitWait; throws (hotplug-status error, no watch left) on an unusable directory. */
  static async start(o: VifBackendOptions): Promise<VifBackend> {
    const b = new VifBackend(o);
    await b.setupOrReport(() => b.setup());
    return b;
  }

  private async setup(): Promise<void> {
    await this.readFrontend();
    const xs = this.devices.xenstore;
    this.bridge = (await xs.tryRead(`${this.path}/bridge`)) || DEFAULT_BRIDGE;
    // vif-common.sh: a vifname that is a usable interface name replaces netback's
    const asked = await xs.tryRead(`${this.path}/vifname`);
    this.vifname = asked && IFNAME.test(asked) ? asked : null;
    const mtu = Number((await xs.tryRead(`${this.path}/mtu`)) ?? 1500);
    // the hotplug script's part, before hotplug-status says connected: vif-route's when the toolstack named it, else vif-bridge's
    const script = (await xs.tryRead(`${this.path}/script`)) ?? '';
    const tapOptions = {
      name: this.ifName, mtu: Number.isInteger(mtu) && mtu >= 68 ? mtu : 1500,
      onFrame: (f: NetFrame) => this.toGuest(f),
      // while no frontend is connected, frames are read and dropped, as a carrier-less netdev's would be
      room: () => !this.conn || this.conn.queues.every((q) => q.service.hasRoom),
    };
    const { tap, line } = /(^|\/)vif-route$/.test(script)
      ? vifRouteOnline({ ...tapOptions, ip: await xs.tryRead(`${this.path}/ip`), gatewaydev: await xs.tryRead(`${this.path}/gatewaydev`) })
      : vifBridgeOnline({ ...tapOptions, bridge: this.bridge, required: this.o.hostBridge });
    this.tapDev = tap;
    this.log?.(line);
    // netback_probe: what a frontend reads before it connects. Scatter-gather both ways; checksums passed
    // on as the sender left them (the other end is a netfront too, which fills in a blank one); TCP
    // segmentation offload for IPv4 and IPv6 (a packet of up to 64 KiB with a GSO extra); no multicast
    // control; up to MAX_QUEUES queues.
    await this.offer([
      ['multi-queue-max-queues', String(MAX_QUEUES)],
      ['feature-sg', '1'],
      ['feature-gso-tcpv4', '1'],
      ['feature-gso-tcpv6', '1'],
      ['feature-ipv6-csum-offload', '1'],
      ['feature-rx-copy', '1'],
      ['feature-rx-flip', '0'],
      ['feature-split-event-channels', '1'],
    ]);
  }

  protected get connected(): boolean { return this.conn !== null; }

  /** A frame for the guest, on the queue of its flow. */
  private toGuest(f: NetFrame): void {
    const qs = this.conn?.queues;
    if (qs?.length) qs[flowQueue(f.data, qs.length)]!.service.send(f);
  }

  /** connect and connect_data_rings in xen-netback/xenbus.c: the frontend's features, then each queue's rings. */
  protected async connect(): Promise<void> {
    const xs = this.devices.xenstore, f = this.frontPath;
    const num = async (dir: string, name: string): Promise<number | undefined | null> => {
      const t = await xs.tryRead(`${dir}/${name}`);
      if (t === undefined) return undefined;
      return /^\d{1,10}$/.test(t.trim()) ? Number(t.trim()) : null;
    };
    // one queue (no multi-queue-num-queues, or 1, as Linux's netfront writes it when offered): its nodes in
    // the frontend's directory; several: in queue-<n>/ each (connect_data_rings)
    const nq = (await num(f, 'multi-queue-num-queues')) ?? 1;
    if (nq === null || nq < 1 || nq > MAX_QUEUES) return this.fatal(`guest requested ${nq ?? 'an unreadable number of'} queues, exceeding the maximum of ${MAX_QUEUES}`);
    const dirs = nq === 1 ? [f] : Array.from({ length: nq }, (_, i) => `${f}/queue-${i}`);
    if ((await num(f, 'request-rx-copy')) !== 1) return this.fatal('the frontend does not support rx-copy (request-rx-copy is not 1)');
    if ((await num(f, 'feature-rx-notify')) !== 1) return this.fatal('feature-rx-notify is mandatory');
    const sg = (await num(f, 'feature-sg')) === 1;
    // read_xenbus_vif_flags: the GSO types the frontend takes on its receive ring (Linux's netback reads
    // no -prefix variant since it retired the GSO prefix: such a frontend gets segments)
    const gsoTcpv4 = ((await num(f, 'feature-gso-tcpv4')) ?? 0) > 0, gsoTcpv6 = ((await num(f, 'feature-gso-tcpv6')) ?? 0) > 0;
    const rxGso = (gsoTcpv4 ? gsoBit(XEN_NETIF_GSO_TYPE_TCPV4) : 0) | (gsoTcpv6 ? gsoBit(XEN_NETIF_GSO_TYPE_TCPV6) : 0);
    const tap = this.tapDev;
    let sw: ReturnType<NetSwitches['attach']> | null = null;
    const port: SwitchPort | null = tap ? null : { name: this.ifName, receive: (fr: NetFrame) => this.toGuest(fr) };
    // the toolstack's rate limit, read at each connection as Linux's netback does (xen_net_read_rate)
    const txRate = parseRateNode(await this.devices.xenstore.tryRead(`${this.path}/rate`));
    // vif-bridge's anti-spoofing when the toolstack named the guest's addresses (`ip`)
    const txFilter = antispoofFilter(await this.devices.xenstore.tryRead(`${this.path}/ip`));
    const queues: Queue[] = [];
    for (const dir of dirs) {
      const q = await this.connectQueue(dir, num, {
        sg, rxGso, txRate, txFilter,
        deliver: tap ? (fr) => tap.send(fr) : (fr) => sw?.input(port!, fr),
      });
      if (typeof q === 'string') {
        await this.releaseQueues(queues);
        return this.fatal(q);
      }
      queues.push(q);
    }
    if (port) sw = this.o.switches.attach(this.bridge, port);
    // the host's stack hands the tap 64 KiB TCP frames of the types this frontend takes whole, and cuts the
    // others itself (xenvif_fix_features takes TSO off the vif's netdev for a frontend without them)
    const tsoRefused = tap?.setTso(sg && gsoTcpv4, sg && gsoTcpv6);
    if (tsoRefused) this.log?.(`${tsoRefused}; the host's stack segments what it sends the guest`);
    tap?.setCarrier(true);
    this.conn = { queues, port };
    this.lastConnection = { splitEventChannels: queues[0]!.ports.length === 2, sg, gsoTcpv4, gsoTcpv6, queues: queues.length };
    await this.switchState(XenbusState.Connected);
    // packets and buffers the frontend put there before the ports were bound
    for (const q of queues) {
      q.service.kickTx();
      q.service.kickRx();
    }
  }

  /** One queue's rings and event channels (connect_data_rings), read from `dir`; the reason as a string when they cannot be. */
  private async connectQueue(dir: string, num: (dir: string, name: string) => Promise<number | undefined | null>,
    o: { sg: boolean; rxGso: number; txRate: ReturnType<typeof parseRateNode>; txFilter: ReturnType<typeof antispoofFilter>; deliver: (f: NetFrame) => void }): Promise<Queue | string> {
    const txRef = await num(dir, 'tx-ring-ref'), rxRef = await num(dir, 'rx-ring-ref');
    if (typeof txRef !== 'number' || typeof rxRef !== 'number') return `reading ${dir}/tx-ring-ref and rx-ring-ref: not grant references`;
    const single = await num(dir, 'event-channel');
    let remote: number[];
    if (single !== undefined) {
      if (single === null) return `reading ${dir}/event-channel: not a port`;
      remote = [single];
    } else {
      const txp = await num(dir, 'event-channel-tx'), rxp = await num(dir, 'event-channel-rx');
      if (typeof txp !== 'number' || typeof rxp !== 'number') return `reading ${dir}/event-channel(-tx, -rx): not ports`;
      remote = [txp, rxp];
    }
    const gnttab = this.devices.gnttab;
    const maps: GrantMapping[] = [];
    const unmapAll = async () => { for (const m of maps) await gnttab.unmap(m.handle); };
    for (const ref of [txRef, rxRef]) {
      const m = await gnttab.map(this.frontDomid, ref, false);
      if (typeof m === 'number') {
        await unmapAll();
        return `mapping tx-ring-ref ${txRef} rx-ring-ref ${rxRef}: GNTST ${m}`;
      }
      maps.push(m);
      if (m.page.length < PAGE_SIZE) {
        await unmapAll();
        return `ring-ref ${ref}: short page`;
      }
    }
    let service: NetifService | null = null;
    const ports: number[] = [];
    try {
      if (remote.length === 1) {
        ports.push(await this.devices.evtchn.bindInterdomain(this.frontDomid, remote[0]!, () => { service?.kickTx(); service?.kickRx(); }));
      } else {
        ports.push(await this.devices.evtchn.bindInterdomain(this.frontDomid, remote[0]!, () => service?.kickTx()));
        ports.push(await this.devices.evtchn.bindInterdomain(this.frontDomid, remote[1]!, () => service?.kickRx()));
      }
    } catch (e) {
      for (const p of ports) this.devices.evtchn.unbind(p);
      await unmapAll();
      return `binding event-channel ${remote.join(',')}: ${(e as Error).message}`;
    }
    service = new NetifService({
      devices: this.devices, frontDomid: this.frontDomid, tx: new NetifTxBackRing(maps[0]!.page), rx: new NetifRxBackRing(maps[1]!.page),
      txPort: ports[0]!, rxPort: ports[ports.length - 1]!, rxSg: o.sg, rxGso: o.rxGso, stats: this.stats, log: this.log, txRate: o.txRate, txFilter: o.txFilter,
      deliver: o.deliver,
    });
    return { tx: maps[0]!, rx: maps[1]!, ports, service };
  }

  protected async disconnect(): Promise<void> {
    const c = this.conn;
    if (!c) return;
    this.conn = null;
    if (c.port) this.o.switches.detach(this.bridge, c.port);
    this.tapDev?.setCarrier(false);
    await this.releaseQueues(c.queues);
  }

  /** Each queue's service stopped, its ports unbound, its rings unmapped. */
  private async releaseQueues(queues: Queue[]): Promise<void> {
    for (const q of queues) {
      await q.service.stop();
      for (const p of q.ports) this.devices.evtchn.unbind(p);
      await this.devices.gnttab.unmap(q.tx.handle);
      await this.devices.gnttab.unmap(q.rx.handle);
    }
  }

  protected override async closeDevice(): Promise<void> {
    this.tapDev?.close();
  }

  /** The bridge the vif is (or will be) on. */
  get bridgeName(): string { return this.bridge; }

  /** The interface's name (the vifname asked for, else vif<domid>.<devid>), the tap's when it has one. */
  get ifName(): string { return this.vifname ?? vifName(this.frontDomid, Number(this.o.path.split('/').pop())); }

  /** The vif's tap on the host's bridge, or null when it is on the in-process switch. */
  get tap(): TapDevice | null { return this.tapDev; }
}
