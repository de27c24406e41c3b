// The xenbus side of split drivers: the state each end publishes in its
// xenstore directory (io/xenbus.h) and the device numbers of virtual block
// devices (xen-vbd-interface(7)), which name a vbd's directory on both ends;
// and the backend half of the handshake every backend shares.

import type { XenDevices } from '../libs/devices.js';

/** enum xenbus_state (io/xenbus.h) */
export const XenbusState = {
  Unknown: 0,
  Initialising: 1,
  /** the backend waits for the frontend's details (ring, event channel) */
  InitWait: 2,
  /** the frontend has published them */
  Initialised: 3,
  Connected: 4,
  Closing: 5,
  Closed: 6,
  Reconfiguring: 7,
  Reconfigured: 8,
} as const;
export type XenbusStateValue = (typeof XenbusState)[keyof typeof XenbusState];

export const XENBUS_STATE_NAMES = ['Unknown', 'Initialising', 'InitWait', 'Initialised', 'Connected', 'Closing', 'Closed', 'Reconfiguring', 'Reconfigured'];

/** A state node's value: a number 0..8, else null (a frontend may write anything there). */
export function parseXenbusState(v: string | undefined): XenbusStateValue | null {
  if (v === undefined || !/^[0-8]$/.test(v.trim())) return null;
  return Number(v.trim()) as XenbusStateValue;
}

/** xvd letters as a disk number: a..z = 0..25, aa = 26, ... (bijective base 26) */
function diskOfLetters(s: string): number {
  let n = 0;
  for (const c of s) n = n * 26 + (c.charCodeAt(0) - 96);
  return n - 1;
}

/**
 * The vbd device number of a virtual device name (xen-vbd-interface(7)), or
 * null when the name has none: xvd with disk < 16 and partition < 16 in the
 * 202 major, larger ones in the extended form (1 << 28); hd in majors 3 and
 * 22, sd in major 8; d<disk>p<partition> always extended.
 */
export function vbdDevid(vdev: string): number | null {
  let m = /^xvd([a-z]{1,4})([0-9]{0,3})$/.exec(vdev);
  if (m) {
    const disk = diskOfLetters(m[1]!), part = m[2] ? Number(m[2]) : 0;
    if (m[2]?.startsWith('0') || part > 255 || disk >= 1 << 20) return null;
    return disk < 16 && part < 16 ? (202 << 8) | (disk << 4) | part : (1 << 28) | (disk << 8) | part;
  }
  m = /^hd([a-d])([0-9]{0,2})$/.exec(vdev);
  if (m) {
    const disk = m[1]!.charCodeAt(0) - 97, part = m[2] ? Number(m[2]) : 0;
    if (m[2]?.startsWith('0') || part > 63) return null;
    return ((disk < 2 ? 3 : 22) << 8) | ((disk % 2) * 64 + part);
  }
  m = /^sd([a-p])([0-9]{0,2})$/.exec(vdev);
  if (m) {
    const disk = m[1]!.charCodeAt(0) - 97, part = m[2] ? Number(m[2]) : 0;
    if (m[2]?.startsWith('0') || part > 15) return null;
    return (8 << 8) | (disk << 4) | part;
  }
  m = /^d([0-9]{1,6})(?:p([0-9]{1,3}))?$/.exec(vdev);
  if (m) {
    const disk = Number(m[1]), part = m[2] ? Number(m[2]) : 0;
    if (disk >= 1 << 20 || part > 255) return null;
    return (1 << 28) | (disk << 8) | part;
  }
  return null;
}

/**
 * The backend half of a split driver's xenbus handshake, as Linux's
 * xenbus_probe_backend and each backend's frontend_changed do it: publish the
 * device's nodes and wait in InitWait; connect when the frontend says
 * Initialised or Connected; follow it through Closing and Closed; offer the
 * device again to a new frontend (Initialising after Closed). Watch events are
 * handled one after another; a failure is logged, never thrown. A frontend
 * that writes nonsense gets xenbus_dev_fatal: the reason in `error`, Closing.
 */
export abstract class XenbusBackend {
  protected frontPath = '';
  protected frontDomid = -1;
  protected state: XenbusStateValue = XenbusState.Initialising;
  protected closed = false;
  private readonly token: string;
  private readonly onWatch = (ev: { path: string; token: string }) => {
    if (ev.token === this.token) this.queue(() => this.frontendChanged());
  };
  private chain: Promise<void> = Promise.resolve();

  protected constructor(protected readonly devices: XenDevices, readonly path: string, private readonly kind: string, protected readonly log?: (line: string) => void) {
    this.token = `${kind}-backend:${path}`;
  }

  /** Whether a frontend is connected (rings mapped, ports bound). */
  protected abstract get connected(): boolean;
  /** The frontend said Initialised or Connected while the backend waits: map, bind, switch to Connected (or fatal). */
  protected abstract connect(): Promise<void>;
  /** Lets go of the connection, if there is one. */
  protected abstract disconnect(): Promise<void>;
  /** After the last disconnect of close(): what the device holds besides its connection. */
  protected async closeDevice(): Promise<void> {}

  /**
   * Runs `setup` (reading the directory, opening what the device needs and
   * calling offer); when it fails, `hotplug-error` and `hotplug-status` error
   * say why, as a failed hotplug script does, and the error is thrown on.
   */
  protected async setupOrReport(setup: () => Promise<void>): Promise<void> {
    try {
      await setup();
    } catch (e) {
      await this.closeDevice().catch(() => {});
      const xs = this.devices.xenstore, msg = (e as Error).message;
      await xs.write(`${this.path}/hotplug-error`, msg).catch(() => {});
      await xs.write(`${this.path}/hotplug-status`, 'error').catch(() => {});
      throw e;
    }
  }

  /** The frontend the toolstack named (`frontend`, `frontend-id`). */
  protected async readFrontend(): Promise<void> {
    const xs = this.devices.xenstore;
    this.frontPath = await xs.read(`${this.path}/frontend`);
    this.frontDomid = Number(await xs.read(`${this.path}/frontend-id`));
  }

  /** Publishes `nodes` and hotplug-status connected in one transaction, moves to InitWait and follows the frontend. */
  protected async offer(nodes: [string, string][]): Promise<void> {
    const xs = this.devices.xenstore;
    await xs.transaction(async (tx) => {
      for (const [k, v] of nodes) await xs.write(`${this.path}/${k}`, v, tx);
      await xs.write(`${this.path}/hotplug-status`, 'connected', tx);
    });
    await this.switchState(XenbusState.InitWait);
    xs.on('watch', this.onWatch);
    await xs.watch(`${this.frontPath}/state`, this.token);
  }

  private queue(f: () => Promise<void>): void {
    this.chain = this.chain.then(f).catch((e: unknown) => this.log?.(`${this.kind} ${this.path}: ${(e as Error).message}`));
  }

  protected async switchState(s: XenbusStateValue): Promise<void> {
    this.state = s;
    await this.devices.xenstore.write(`${this.path}/state`, String(s));
  }

  /** xenbus_dev_fatal: the reason in `error`, the device closing */
  protected async fatal(msg: string): Promise<void> {
    this.log?.(`${this.kind} ${this.path}: ${msg}`);
    await this.devices.xenstore.write(`${this.path}/error`, msg).catch(() => {});
    await this.disconnect();
    await this.switchState(XenbusState.Closing);
  }

  /** frontend_changed */
  private async frontendChanged(): Promise<void> {
    if (this.closed) return;
    const fs = parseXenbusState(await this.devices.xenstore.tryRead(`${this.frontPath}/state`));
    if (fs === null) return; // gone, or not a state: nothing to follow
    switch (fs) {
      case XenbusState.Initialising:
        // a new frontend after the last one closed (GRUB's hand-over): offer the device again
        if (this.state === XenbusState.Closed) await this.switchState(XenbusState.InitWait);
        return;
      case XenbusState.Initialised:
      case XenbusState.Connected:
        if (this.connected || this.state !== XenbusState.InitWait) return;
        await this.connect();
        return;
      case XenbusState.Closing:
      case XenbusState.Closed:
        await this.disconnect();
        await this.switchState(fs);
        return;
      default:
        return;
    }
  }

  /** The xenbus state the backend last published (for tests and the xl *-list commands). */
  get xenbusState(): string {
    return XENBUS_STATE_NAMES[this.state]!;
  }

  /**
   * The toolstack wants the device back (libxl's device removal: `online` 0,
   * state Closing): the frontend is asked to close, and its Closed lets go of
   * the connection. Resolves once Closing is published.
   */
  requestClose(): Promise<void> {
    const done = this.chain.then(async () => {
      if (this.closed) return;
      await this.devices.xenstore.write(`${this.path}/online`, '0');
      if (this.state !== XenbusState.Closed) await this.switchState(XenbusState.Closing);
    });
    this.chain = done.catch(() => {});
    return done;
  }

  /** Stops the backend (the device is being removed or its frontend destroyed); the nodes are the toolstack's to remove. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const xs = this.devices.xenstore;
    xs.off('watch', this.onWatch);
    await xs.unwatch(`${this.frontPath}/state`, this.token).catch(() => {});
    await this.chain;
    await this.disconnect();
    await this.closeDevice();
  }
}
