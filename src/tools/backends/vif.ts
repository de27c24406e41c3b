// One virtual network interface's backend (Linux's
// drivers/net/xen-netback/xenbus.c): the xenbus handshake around the data
// path in netback.ts. The backend directory the toolstack wrote names the
// frontend, the MAC and the bridge; the backend publishes its features,
// waits in InitWait for the frontend's rings and event channel(s), connects
// the vif to its bridge's switch, and follows the frontend through Closing
// and Closed (and back to InitWait for a new frontend). A frontend that
// writes nonsense gets the device closed with a message in the backend's
// `error` node; nothing it writes throws out of here.

import type { GrantMapping, XenDevices } from '../libs/devices.js';
import { NetifRxBackRing, NetifTxBackRing, PAGE_SIZE } from './netif.js';
import { NetifService, newNetifStats, type NetFrame, type NetifStats } from './netback.js';
import type { NetSwitches, SwitchPort } from './netswitch.js';
import { XenbusState, parseXenbusState, type XenbusStateValue, XENBUS_STATE_NAMES } from './xenbus.js';

export interface VifBackendOptions {
  devices: XenDevices;
  /** the backend directory, /local/domain/<backend>/backend/vif/<frontend>/<devid> */
  path: string;
  switches: NetSwitches;
  log?: (line: string) => void;
}

interface Connection {
  tx: GrantMapping;
  rx: GrantMapping;
  /** local ports: one, or the transmit and receive ones of split event channels */
  ports: number[];
  service: NetifService;
  port: SwitchPort;
}

/** The default bridge (xl-network-configuration(5)) */
const DEFAULT_BRIDGE = 'xenbr0';

export class VifBackend {
  private frontPath = '';
  private frontDomid = -1;
  private bridge = DEFAULT_BRIDGE;
  private conn: Connection | null = null;
  private state: XenbusStateValue = XenbusState.Initialising;
  private readonly token: string;
  private readonly onWatch = (ev: { path: string; token: string }) => {
    if (ev.token === this.token) this.queue(() => this.frontendChanged());
  };
  private chain: Promise<void> = Promise.resolve();
  private closed = false;
  /** what the vif moved, over every connection */
  readonly stats: NetifStats = newNetifStats();
  /** the transport of the last connection */
  lastConnection: { splitEventChannels: boolean; sg: boolean } | null = null;

  private constructor(private readonly o: VifBackendOptions) {
    this.token = `vif-backend:${o.path}`;
  }

  /** Publishes the features and waits in InitWait; throws (hotplug-status error, no watch left) on an unusable directory. */
  static async start(o: VifBackendOptions): Promise<VifBackend> {
    const b = new VifBackend(o);
    try {
      await b.setup();
    } catch (e) {
      const msg = (e as Error).message;
      await o.devices.xenstore.write(`${o.path}/hotplug-error`, msg).catch(() => {});
      await o.devices.xenstore.write(`${o.path}/hotplug-status`, 'error').catch(() => {});
      throw e;
    }
    return b;
  }

  private async setup(): Promise<void> {
    const xs = this.o.devices.xenstore, p = this.o.path;
    this.frontPath = await xs.read(`${p}/frontend`);
    this.frontDomid = Number(await xs.read(`${p}/frontend-id`));
    this.bridge = (await xs.tryRead(`${p}/bridge`)) || DEFAULT_BRIDGE;
    await xs.transaction(async (tx) => {
      // netback_probe: what a frontend reads before it connects. Scatter-gather both ways; checksums passed
      // on as the sender left them (the other end is a netfront too, which fills in a blank one); no GSO,
      // no multicast control, one queue.
      await xs.write(`${p}/feature-sg`, '1', tx);
      await xs.write(`${p}/feature-gso-tcpv4`, '0', tx);
      await xs.write(`${p}/feature-gso-tcpv6`, '0', tx);
      await xs.write(`${p}/feature-ipv6-csum-offload`, '1', tx);
      await xs.write(`${p}/feature-rx-copy`, '1', tx);
      await xs.write(`${p}/feature-rx-flip`, '0', tx);
      await xs.write(`${p}/feature-split-event-channels`, '1', tx);
      // what vif-bridge reports once the vif is on its bridge
      await xs.write(`${p}/hotplug-status`, 'connected', tx);
    });
    await this.switchState(XenbusState.InitWait);
    xs.on('watch', this.onWatch);
    await xs.watch(`${this.frontPath}/state`, this.token);
  }

  private queue(f: () => Promise<void>): void {
    this.chain = this.chain.then(f).catch((e: unknown) => this.o.log?.(`vif ${this.o.path}: ${(e as Error).message}`));
  }

  private async switchState(s: XenbusStateValue): Promise<void> {
    this.state = s;
    await this.o.devices.xenstore.write(`${this.o.path}/state`, String(s));
  }

  private async fatal(msg: string): Promise<void> {
    this.o.log?.(`vif ${this.o.path}: ${msg}`);
    await this.o.devices.xenstore.write(`${this.o.path}/error`, msg).catch(() => {});
    await this.disconnect();
    await this.switchState(XenbusState.Closing);
  }

  /** frontend_changed in xen-netback/xenbus.c */
  private async frontendChanged(): Promise<void> {
    if (this.closed) return;
    const fs = parseXenbusState(await this.o.devices.xenstore.tryRead(`${this.frontPath}/state`));
    if (fs === null) return;
    switch (fs) {
      case XenbusState.Initialising:
        if (this.state === XenbusState.Closed) await this.switchState(XenbusState.InitWait);
        return;
      case XenbusState.Initialised:
      case XenbusState.Connected:
        if (this.conn || this.state !== XenbusState.InitWait) return;
        await this.connect();
        return;
      case XenbusState.Closing:
        await this.disconnect();
        await this.switchState(XenbusState.Closing);
        return;
      case XenbusState.Closed:
        await this.disconnect();
        await this.switchState(XenbusState.Closed);
        return;
      default:
        return;
    }
  }

  /** connect and connect_data_rings in xen-netback/xenbus.c */
  private async connect(): Promise<void> {
    const xs = this.o.devices.xenstore, f = this.frontPath;
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
    const gnttab = this.o.devices.gnttab;
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
        ports.push(await this.o.devices.evtchn.bindInterdomain(this.frontDomid, remote[0]!, () => { service?.kickTx(); service?.kickRx(); }));
      } else {
        ports.push(await this.o.devices.evtchn.bindInterdomain(this.frontDomid, remote[0]!, () => service?.kickTx()));
        ports.push(await this.o.devices.evtchn.bindInterdomain(this.frontDomid, remote[1]!, () => service?.kickRx()));
      }
    } catch (e) {
      for (const p of ports) this.o.devices.evtchn.unbind(p);
      await unmapAll();
      return this.fatal(`binding event-channel ${remote.join(',')}: ${(e as Error).message}`);
    }
    const name = `vif${this.frontDomid}.${this.o.path.split('/').pop()}`;
    const bridge = this.bridge;
    let sw: ReturnType<NetSwitches['attach']> | null = null;
    const port: SwitchPort = { name, receive: (fr: NetFrame) => service?.send(fr) };
    service = new NetifService({
      devices: this.o.devices, frontDomid: this.frontDomid, tx: new NetifTxBackRing(maps[0]!.page), rx: new NetifRxBackRing(maps[1]!.page),
      txPort: ports[0]!, rxPort: ports[ports.length - 1]!, rxSg: sg, stats: this.stats, log: this.o.log,
      deliver: (fr) => sw?.input(port, fr),
    });
    sw = this.o.switches.attach(bridge, port);
    this.conn = { tx: maps[0]!, rx: maps[1]!, ports, service, port };
    this.lastConnection = { splitEventChannels: ports.length === 2, sg };
    await this.switchState(XenbusState.Connected);
    // packets and buffers the frontend put there before the ports were bound
    service.kickTx();
    service.kickRx();
  }

  private async disconnect(): Promise<void> {
    const c = this.conn;
    if (!c) return;
    this.conn = null;
    this.o.switches.detach(this.bridge, c.port);
    await c.service.stop();
    for (const p of c.ports) this.o.devices.evtchn.unbind(p);
    await this.o.devices.gnttab.unmap(c.tx.handle);
    await this.o.devices.gnttab.unmap(c.rx.handle);
  }

  /** The bridge the vif is (or will be) on. */
  get bridgeName(): string { return this.bridge; }

  get xenbusState(): string { return XENBUS_STATE_NAMES[this.state]!; }

  /** Stops the backend; the nodes are the toolstack's to remove. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const xs = this.o.devices.xenstore;
    xs.off('watch', this.onWatch);
    await xs.unwatch(`${this.frontPath}/state`, this.token).catch(() => {});
    await this.chain;
    await this.disconnect();
  }
}
