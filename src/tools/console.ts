// The PV console backend (xenconsoled's job): drains each domain's console
// ring (xencons_interface, public/io/console.h) when the guest notifies, and
// feeds input into it. Guests spin until out_cons catches up, so the ring is
// consumed as soon as the event arrives.

import type { Hypervisor } from '../hv/hypervisor.js';
import { struct } from '../hv/abi/layout.js';

/** struct xencons_interface: in[1024] @0, out[2048] @1024, indexes after. */
export const XenconsInterface = struct('xencons_interface', 3092, {
  in_cons: [3072, 'u32'], in_prod: [3076, 'u32'], out_cons: [3080, 'u32'], out_prod: [3084, 'u32'], connection: [3088, 'u8'],
});
const IN_OFF = 0;
const IN_SIZE = 1024;
const OUT_OFF = 1024;
const OUT_SIZE = 2048;

export class ConsoleBackend {
  private readonly u32: Uint32Array;
  private readonly bytes: Uint8Array;
  readonly dom0Port: number;
  private closed = false;

  constructor(
    private readonly hv: Hypervisor,
    readonly domid: number,
    ringOffset: number,
    guestPort: number,
    private readonly output: (data: Uint8Array) => void,
  ) {
    const mem = hv.memory(domid);
    this.bytes = mem.bytes.subarray(ringOffset, ringOffset + 4096);
    this.u32 = new Uint32Array(mem.buffer, mem.bytes.byteOffset + ringOffset, 1024);
    this.dom0Port = hv.bindDom0(domid, guestPort, () => this.drain());
  }

  /** Reads everything the guest produced; acknowledges and notifies it. */
  drain(): void {
    if (this.closed) return;
    const prodIdx = XenconsInterface.offsetOf('out_prod') / 4;
    const consIdx = XenconsInterface.offsetOf('out_cons') / 4;
    const prod = Atomics.load(this.u32, prodIdx);
    let cons = Atomics.load(this.u32, consIdx);
    let avail = (prod - cons) >>> 0;
    if (avail === 0) return;
    if (avail > OUT_SIZE) {
      // A guest bug or a hostile guest: resynchronise instead of reading garbage.
      cons = (prod - OUT_SIZE) >>> 0;
      avail = OUT_SIZE;
    }
    const out = new Uint8Array(avail);
    for (let i = 0; i < avail; i++) out[i] = this.bytes[OUT_OFF + ((cons + i) & (OUT_SIZE - 1))]!;
    Atomics.store(this.u32, consIdx, prod);
    this.output(out);
    this.hv.notify(this.dom0Port);
  }

  /** Puts input for the guest into the `in` ring (what fits); returns bytes written. */
  write(data: Uint8Array): number {
    const consIdx = XenconsInterface.offsetOf('in_cons') / 4;
    const prodIdx = XenconsInterface.offsetOf('in_prod') / 4;
    const cons = Atomics.load(this.u32, consIdx);
    let prod = Atomics.load(this.u32, prodIdx);
    let n = 0;
    while (n < data.length && ((prod - cons) >>> 0) < IN_SIZE) {
      this.bytes[IN_OFF + (prod & (IN_SIZE - 1))] = data[n++]!;
      prod = (prod + 1) >>> 0;
    }
    Atomics.store(this.u32, prodIdx, prod);
    if (n) this.hv.notify(this.dom0Port);
    return n;
  }

  close(): void {
    this.closed = true;
    this.hv.closeDom0(this.dom0Port);
  }
}
