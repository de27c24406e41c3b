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
import { NetifRxBackRing, NetifTxBackRing, PAGE_SIZE } from './netif.js';
import { gsoBit, NetifService, newNetifStats, parseRateNode, type NetFrame, type NetifStats } from './netback.js';
import { XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6 } from './gso.js';
import type { NetSwitches, SwitchPort } from './netswitch.js';
import type { TapDevice } from './tap.js';
import { XenbusBackend, XenbusState } from './xenbus.js';
import { vifBridgeOnline, vifName } from '../vif_bridge.js';

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

interface Connection {
  tx: GrantMapping;
  rx: GrantMapping;
  /** local ports: one, or the transmit and receive ones of split event channels */
  ports: number[];
  service: NetifService;
  /** the switch port, when the vif has no tap */
  port: SwitchPort | null;
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
  lastConnection: { splitEventChannels: boolean; sg: boolean; gsoTcpv4: boolean; gsoTcpv6: boolean } | null = null;

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
    // the hotplug script's part, before hotplug-status says connected
    const { tap, line } = vifBridgeOnline({
      name: this.ifName, bridge: this.bridge, mtu: Number.isInteger(mtu) && mtu >= 68 ? mtu : 1500, required: this.o.hostBridge,
      onFrame: (f) => this.conn?.service.send(f),
      // while no frontend is connected, frames are read and dropped, as a carrier-less netdev's would be
      room: () => !this.conn || this.conn.service.hasRoom,
    });
    this.tapDev = tap;
    this.log?.(line);
    // netback_probe: what a frontend reads before it connects. Scatter-gather both ways; checksums passed
    // on as the sender left them (the other end is a netfront too, which fills in a blank one); TCP
    // segmentation offload for IPv4 and IPv6 (a packet of up to 64 KiB with a GSO extra); no multicast
    // control, one queue.
    await this.offer([
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

  /** connect and connect_data_rings in xen-netback/xenbus.c */
  protected async connect(): Promise<void> {
    const xs = this.devices.xenstore, f = this.frontPath;
    const num = async (name: string): Promise<number | undefined | null> => {
      const t = await xs.tryRead(`${f}/${name}`);
      if (t === undefined) return undefined;
      return /^\d{1,10}$/.test(t.trim()) ? Number(t.trim()) : null;
    };
    const nq = await num('multi-queue-num-queues');
    if (nq !== undefined && nq !== 1) return this.fatal(`guest requested ${nq ?? 'an unreadable number of'} queues, but multi-queue is not offered`);
    if ((await num('request-rx-copy')) !== 1) return this.fatal('the frontend does not support rx-copy (request-rx-copy is not 1)');
    if ((await num('feature-rx-notify')) !== 1) return this.fatal('feature-rx-notify is mandatory');
    const sg = (await num('feature-sg')) === 1;
    // read_xenbus_vif_flags: the GSO types the frontend takes on its receive ring (Linux's netback reads
    // no -prefix variant since it retired the GSO prefix: such a frontend gets segments)
    const gsoTcpv4 = ((await num('feature-gso-tcpv4')) ?? 0) > 0, gsoTcpv6 = ((await num('feature-gso-tcpv6')) ?? 0) > 0;
    const rxGso = (gsoTcpv4 ? gsoBit(XEN_NETIF_GSO_TYPE_TCPV4) : 0) | (gsoTcpv6 ? gsoBit(XEN_NETIF_GSO_TYPE_TCPV6) : 0);
    const txRef = await num('tx-ring-ref'), rxRef = await num('rx-ring-ref');
    if (typeof txRef !== 'number' || typeof rxRef !== 'number') return this.fatal(`reading ${f}/tx-ring-ref and rx-ring-ref: not grant references`);
    const single = await num('event-channel');
    let remote: number[];
    if (single !== undefined) {
      if (single === null) return this.fatal(`reading ${f}/event-channel: not a port`);
      remote = [single];
    } else {
      const txp = await num('event-channel-tx'), rxp = await num('event-channel-rx');
      if (typeof txp !== 'number' || typeof rxp !== 'number') return this.fatal(`reading ${f}/event-channel(-tx, -rx): not ports`);
      remote = [txp, rxp];
    }
    const gnttab = this.devices.gnttab;
    const maps: GrantMapping[] = [];
    const unmapAll = async () => { for (const m of maps) await gnttab.unmap(m.handle); };
    for (const ref of [txRef, rxRef]) {
      const m = await gnttab.map(this.frontDomid, ref, false);
      if (typeof m === 'number') {
        await unmapAll();
        return this.fatal(`mapping tx-ring-ref ${txRef} rx-ring-ref ${rxRef}: GNTST ${m}`);
      }
      maps.push(m);
      if (m.page.length < PAGE_SIZE) {
        await unmapAll();
        return this.fatal(`ring-ref ${ref}: short page`);
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
      return this.fatal(`binding event-channel ${remote.join(',')}: ${(e as Error).message}`);
    }
    const tap = this.tapDev;
    let sw: ReturnType<NetSwitches['attach']> | null = null;
    const port: SwitchPort | null = tap ? null : { name: this.ifName, receive: (fr: NetFrame) => service?.send(fr) };
    // the toolstack's rate limit, read at each connection as Linux's netback does (xen_net_read_rate)
    const txRate = parseRateNode(await this.devices.xenstore.tryRead(`${this.path}/rate`));
    service = new NetifService({
      devices: this.devices, frontDomid: this.frontDomid, tx: new NetifTxBackRing(maps[0]!.page), rx: new NetifRxBackRing(maps[1]!.page),
      txPort: ports[0]!, rxPort: ports[ports.length - 1]!, rxSg: sg, rxGso, stats: this.stats, log: this.log, txRate,
      deliver: tap ? (fr) => tap.send(fr) : (fr) => sw?.input(port!, fr),
    });
    if (port) sw = this.o.switches.attach(this.bridge, port);
    // the host's stack hands the tap 64 KiB TCP frames of the types this frontend takes whole, and cuts the
    // others itself (xenvif_fix_features takes TSO off the vif's netdev for a frontend without them)
    const tsoRefused = tap?.setTso(sg && gsoTcpv4, sg && gsoTcpv6);
    if (tsoRefused) this.log?.(`${tsoRefused}; the host's stack segments what it sends the guest`);
    tap?.setCarrier(true);
    this.conn = { tx: maps[0]!, rx: maps[1]!, ports, service, port };
    this.lastConnection = { splitEventChannels: ports.length === 2, sg, gsoTcpv4, gsoTcpv6 };
    await this.switchState(XenbusState.Connected);
    // packets and buffers the frontend put there before the ports were bound
    service.kickTx();
    service.kickRx();
  }

  protected async disconnect(): Promise<void> {
    const c = this.conn;
    if (!c) return;
    this.conn = null;
    if (c.port) this.o.switches.detach(this.bridge, c.port);
    this.tapDev?.setCarrier(false);
    await c.service.stop();
    for (const p of c.ports) this.devices.evtchn.unbind(p);
    await this.devices.gnttab.unmap(c.tx.handle);
    await this.devices.gnttab.unmap(c.rx.handle);
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
