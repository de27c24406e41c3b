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
// the indexes as Uint32Array slots
const IN_CONS = XenconsInterface.offsetOf('in_cons') / 4;
const IN_PROD = XenconsInterface.offsetOf('in_prod') / 4;
const OUT_CONS = XenconsInterface.offsetOf('out_cons') / 4;
const OUT_PROD = XenconsInterface.offsetOf('out_prod') / 4;

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
    const prod = Atomics.load(this.u32, OUT_PROD);
    let cons = Atomics.load(this.u32, OUT_CONS);
    let avail = (prod - cons) >>> 0;
    if (avail === 0) return;
    if (avail > OUT_SIZE) {
      // A guest bug or a hostile guest: resynchronise instead of reading garbage.
      cons = (prod - OUT_SIZE) >>> 0;
      avail = OUT_SIZE;
    }
    // at most two pieces: up to the ring's end, then from its start
    const start = cons & (OUT_SIZE - 1);
    const first = Math.min(avail, OUT_SIZE - start);
    const out = new Uint8Array(avail);
    out.set(this.bytes.subarray(OUT_OFF + start, OUT_OFF + start + first));
    out.set(this.bytes.subarray(OUT_OFF, OUT_OFF + avail - first), first);
    Atomics.store(this.u32, OUT_CONS, prod);
    this.output(out);
    this.hv.notify(this.dom0Port);
  }

  /** Puts input for the guest into the `in` ring (what fits); returns bytes written. */
  write(data: Uint8Array): number {
    const cons = Atomics.load(this.u32, IN_CONS);
    let prod = Atomics.load(this.u32, IN_PROD);
    let n = 0;
    while (n < data.length && ((prod - cons) >>> 0) < IN_SIZE) {
      this.bytes[IN_OFF + (prod & (IN_SIZE - 1))] = data[n++]!;
      prod = (prod + 1) >>> 0;
    }
    Atomics.store(this.u32, IN_PROD, prod);
    if (n) this.hv.notify(this.dom0Port);
    return n;
  }

  close(): void {
    this.closed = true;
    this.hv.closeDom0(this.dom0Port);
  }
}
