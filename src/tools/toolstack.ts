// The control domain's toolstack core (libxl's role), shared by `xenode run`,
// `xenode demo` and later the daemon: one hypervisor, one xenstored, and for
// each domain the builder, the console backend and the xenstore connection.

import { randomUUID } from 'node:crypto';
import { Hypervisor } from '../hv/hypervisor.js';
import { Xenstored, LocalClient } from './xenstored/index.js';
import { buildPvhDomain, startBuiltDomain, specialPageOffset, BuiltDomain, BuildConfig } from './builder.js';
import { XenstoreRings, connectServices, DomainServices } from './services.js';

export interface ToolstackOptions {
  pcpus?: number;
  /** xenstored log sink (default: stderr) */
  log?: (line: string) => void;
}

export interface ToolstackDomain {
  domid: number;
  name: string;
  built: BuiltDomain;
  services: DomainServices;
}

export class Toolstack {
  private readonly live = new Map<number, ToolstackDomain>();

  private constructor(readonly hv: Hypervisor, readonly xs: Xenstored, readonly client: LocalClient, private readonly builds: Map<number, BuiltDomain>) {
    hv.on('shutdown', (domid) => {
      this.live.get(domid)?.services.console.drain();
      xs.domainDied(domid);
    });
  }

  static async start(o: ToolstackOptions = {}): Promise<Toolstack> {
    const hv = await Hypervisor.start({ pcpus: o.pcpus });
    const builds = new Map<number, BuiltDomain>();
    const rings = new XenstoreRings(hv, (domid, gfn) => {
      const b = builds.get(domid);
      return b && gfn === b.storeGfn ? specialPageOffset(b.build, gfn) : null;
    });
    const xs = new Xenstored({ hooks: rings, log: o.log });
    rings.xs = xs;
    await xs.start();
    return new Toolstack(hv, xs, new LocalClient(xs), builds);
  }

  /**
   * Builds a domain, connects its console (output to `output`) and xenstore,
   * writes its xenstore skeleton and unpauses it. Throws (leaving nothing
   * behind) if the kernel cannot be loaded.
   */
  async create(cfg: BuildConfig, output: (b: Uint8Array) => void): Promise<ToolstackDomain> {
    const built = buildPvhDomain(this.hv, cfg);
    this.builds.set(built.domid, built);
    let services: DomainServices;
    try {
      services = await connectServices(this.hv, this.xs, this.client, built, {
        name: cfg.name, uuid: randomUUID(), vcpus: cfg.vcpus, memoryKiB: cfg.memoryMiB * 1024, output,
      });
    } catch (e) {
      this.builds.delete(built.domid);
      await this.hv.destroy(built.domid);
      throw e;
    }
    const d: ToolstackDomain = { domid: built.domid, name: cfg.name, built, services };
    this.live.set(d.domid, d);
    startBuiltDomain(this.hv, built);
    return d;
  }

  /** Destroys a domain and releases it from xenstore (@releaseDomain fires). */
  async destroy(domid: number): Promise<void> {
    const d = this.live.get(domid);
    this.live.delete(domid);
    d?.services.close();
    this.builds.delete(domid);
    await this.hv.destroy(domid);
  }

  async shutdown(): Promise<void> {
    for (const id of [...this.live.keys()]) await this.destroy(id);
    this.client.close();
    await this.xs.stop();
    await this.hv.shutdownAll();
  }
}
