// What a driver domain's xenbus does with its backend directory (Linux's
// xenbus_probe_backend): every device directory the toolstack writes under
// /local/domain/<self>/backend/<type>/<frontend>/<devid> gets a backend,
// one that goes away goes with it. A driver domain that starts again finds
// the directories its previous life served and takes each one up where the
// frontend is (a connected frontend is reconnected: its ring, its port).

import type { XenDevices } from '../libs/devices.js';
import { VbdBackend } from '../backends/vbd.js';
import { VifBackend } from '../backends/vif.js';
import { NetSwitches } from '../backends/netswitch.js';

/** A served device: what the probe needs to stop it. */
interface Served { close(): Promise<void> }

/** The device types a driver domain serves, and how to start a backend on a directory. */
const TYPES: Record<string, (devices: XenDevices, path: string, log: (line: string) => void, switches: NetSwitches) => Promise<Served>> = {
  vbd: (devices, path, log) => VbdBackend.start({ devices, path, log }),
  // on the host's bridge of that name when there is one (a tap of this process's), else on this domain's own switch
  vif: (devices, path, log, switches) => VifBackend.start({ devices, path, switches, log }),
};

export class BackendProbe {
  private readonly served = new Map<string, Served | 'starting' | 'failed'>();
  private readonly root: string;
  private readonly token: string;
  private chain: Promise<void> = Promise.resolve();
  private stopped = false;
  /** the switches of this domain's vifs that are on no host bridge */
  private readonly switches = new NetSwitches();
  private readonly onWatch = (ev: { token: string }) => {
    if (ev.token === this.token) this.rescan();
  };

  constructor(private readonly devices: XenDevices, private readonly log: (line: string) => void) {
    this.root = `/local/domain/${devices.domid}/backend`;
    this.token = `backend-probe:${this.root}`;
  }

  /** Watches the backend directory and serves what is there now. */
  async start(): Promise<void> {
    const xs = this.devices.xenstore;
    xs.on('watch', this.onWatch);
    await xs.watch(this.root, this.token);
    this.rescan();
    await this.chain;
  }

  /** The device directories being served (backend paths). */
  get devicePaths(): string[] {
    return [...this.served.entries()].filter(([, s]) => typeof s === 'object').map(([p]) => p);
  }

  /** Scans once more after whatever scan is under way (watch events come in bursts while a device's nodes are written). */
  private rescan(): void {
    this.chain = this.chain.then(() => this.scan()).catch((e: unknown) => this.log(`backend probe: ${(e as Error).message}`));
  }

  private async scan(): Promise<void> {
    if (this.stopped) return;
    const xs = this.devices.xenstore;
    const seen = new Set<string>();
    for (const type of Object.keys(TYPES)) {
      const fes = await xs.directory(`${this.root}/${type}`).catch(() => [] as string[]);
      for (const fe of fes) {
        const devs = await xs.directory(`${this.root}/${type}/${fe}`).catch(() => [] as string[]);
        for (const dev of devs) {
          const path = `${this.root}/${type}/${fe}/${dev}`;
          seen.add(path);
          if (this.served.has(path)) continue;
          // the toolstack writes a device's nodes in one transaction: `state` there means the rest is too
          if ((await xs.tryRead(`${path}/state`)) === undefined) continue;
          this.served.set(path, 'starting');
          try {
            this.served.set(path, await TYPES[type]!(this.devices, path, this.log, this.switches));
            this.log(`serving ${path}`);
          } catch (e) {
            this.served.set(path, 'failed');
            this.log(`${path}: ${(e as Error).message}`);
          }
        }
      }
    }
    for (const [path, s] of [...this.served]) {
      if (seen.has(path)) continue;
      this.served.delete(path);
      if (typeof s === 'object') {
        await s.close();
        this.log(`${path} removed`);
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const xs = this.devices.xenstore;
    xs.off('watch', this.onWatch);
    await xs.unwatch(this.root, this.token).catch(() => {});
    await this.chain;
    for (const s of this.served.values()) if (typeof s === 'object') await s.close();
    this.served.clear();
  }
}
