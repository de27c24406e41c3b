// The in-process Ethernet switch that joins the vifs of one host: a learning
// bridge (what `brctl addbr xenbr0` gives a Linux dom0, and what vif-bridge
// adds each vif to), one per bridge name. Each vif is a port; a frame goes to
// the port its destination was last seen on, and is flooded to every other
// port when the destination is broadcast, multicast or not yet known. A
// frame's GSO type and size go with it unchanged: each port decides (a
// netback port segments it for a frontend that does not take it whole).

import type { NetFrame } from './netback.js';
import { ETH_HLEN } from './netback.js';

export interface SwitchPort {
  /** for log lines */
  readonly name: string;
  /** a frame from another port */
  receive(f: NetFrame): void;
}

/** How long a learnt address is believed without a frame from it (Linux's bridge: ageing_time 300 s) */
export const FDB_AGEING_MS = 300_000;
/** Addresses a switch remembers; past it the oldest is forgotten (a port cannot grow the table without bound) */
export const FDB_MAX = 4096;

const macKey = (b: Uint8Array, at: number): string => Buffer.from(b.buffer, b.byteOffset + at, 6).toString('hex');

export class NetSwitch {
  private readonly ports = new Set<SwitchPort>();
  /** MAC (hex) -> the port it was last seen on, and when; in insertion order, refreshed on each sighting */
  private readonly fdb = new Map<string, { port: SwitchPort; at: number }>();
  /** frames switched to one port, flooded, dropped (short, or back to the port they came from) */
  readonly stats = { forwarded: 0, flooded: 0, dropped: 0 };

  constructor(readonly name: string) {}

  get portCount(): number { return this.ports.size; }

  attach(p: SwitchPort): void { this.ports.add(p); }

  detach(p: SwitchPort): void {
    this.ports.delete(p);
    for (const [k, e] of this.fdb) if (e.port === p) this.fdb.delete(k);
  }

  /** A frame that came in on `from`. */
  input(from: SwitchPort, f: NetFrame): void {
    if (!this.ports.has(from)) return;
    const d = f.data;
    if (d.length < ETH_HLEN) { this.stats.dropped++; return; }
    const now = performance.now();
    // a multicast source address is no station's: not learnt
    if (!(d[6]! & 1)) {
      const src = macKey(d, 6);
      this.fdb.delete(src);
      this.fdb.set(src, { port: from, at: now });
      if (this.fdb.size > FDB_MAX) this.fdb.delete(this.fdb.keys().next().value!);
    }
    if (!(d[0]! & 1)) {
      const e = this.fdb.get(macKey(d, 0));
      if (e && now - e.at < FDB_AGEING_MS && this.ports.has(e.port)) {
        if (e.port === from) { this.stats.dropped++; return; }
        this.stats.forwarded++;
        e.port.receive(f);
        return;
      }
    }
    this.stats.flooded++;
    for (const p of this.ports) if (p !== from) p.receive(f);
  }
}

/** The host's switches by bridge name, made on first use and forgotten once their last port leaves. */
export class NetSwitches {
  private readonly byName = new Map<string, NetSwitch>();

  get(name: string): NetSwitch | undefined { return this.byName.get(name); }

  attach(name: string, p: SwitchPort): NetSwitch {
    let s = this.byName.get(name);
    if (!s) this.byName.set(name, (s = new NetSwitch(name)));
    s.attach(p);
    return s;
  }

  detach(name: string, p: SwitchPort): void {
    const s = this.byName.get(name);
    if (!s) return;
    s.detach(p);
    if (!s.portCount) this.byName.delete(name);
  }
}
