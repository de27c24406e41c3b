// blkback's persistent grants (io/blkif.h feature-persistent; Linux's
// xen-blkback keeps them in ring->persistent_gnts): a frontend that says it
// reuses its granted pages for the life of the connection gets each one
// mapped once, the first time a request names it, and kept mapped; the data
// of later requests moves through the mapping by memcpy instead of a grant
// copy per segment. At most MAX_PGRANTS per ring (Linux's max_persistent_grants
// default); past it, or when a page cannot be mapped writable, that segment
// goes by grant copy as without the feature. All are unmapped at disconnect.

import type { GrantMapping, XenGnttab } from '../libs/devices.js';

/** Linux's xen_blkif_max_pgrants default: a full ring of requests with indirect segments to spare. */
export const MAX_PGRANTS = 1056;

export class PersistentGrants {
  private readonly maps = new Map<number, GrantMapping>();
  /** grants that could not be mapped: asked again only after the connection ends */
  private readonly refused = new Set<number>();
  /** maps under way, so two requests naming one grant map it once */
  private readonly pending = new Map<number, Promise<Uint8Array | null>>();
  private closed = false;

  constructor(private readonly gnttab: XenGnttab, private readonly frontDomid: number, readonly max = MAX_PGRANTS) {}

  /** How many grants are mapped now. */
  get size(): number { return this.maps.size; }

  /** The page of grant `ref`, mapped now if it is not yet (and there is room); null: use grant copy for it. */
  page(ref: number): Promise<Uint8Array | null> | Uint8Array | null {
    const m = this.maps.get(ref);
    if (m) return m.page;
    if (this.closed || this.refused.has(ref) || this.maps.size + this.pending.size >= this.max) return null;
    const p = this.pending.get(ref) ?? this.map(ref);
    return p;
  }

  private map(ref: number): Promise<Uint8Array | null> {
    const p = (async () => {
      try {
        const m = await this.gnttab.map(this.frontDomid, ref, false);
        if (typeof m === 'number') {
          this.refused.add(ref);
          return null;
        }
        if (this.closed) {
          await this.gnttab.unmap(m.handle);
          return null;
        }
        this.maps.set(ref, m);
        return m.page;
      } catch {
        this.refused.add(ref);
        return null;
      } finally {
        this.pending.delete(ref);
      }
    })();
    this.pending.set(ref, p);
    return p;
  }

  /** Disconnect: every mapping let go (free_persistent_gnts). */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.pending.values()]);
    for (const m of this.maps.values()) await this.gnttab.unmap(m.handle).catch(() => {});
    this.maps.clear();
    this.refused.clear();
  }
}
