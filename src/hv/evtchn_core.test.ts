// The 2-level event-channel core on a plain buffer: the port state machine
// (public/event_channel.h, xen-abi.md §4) and the exact bit updates of
// evtchn_2l_set_pending / evtchn_2l_unmask in shared_info and vcpu_info.
// Offsets below are written out from the public headers (not taken from our
// Struct objects) so the test is an independent statement of the layout.

import { strict as assert } from 'node:assert';
import { describe, test } from 'node:test';

import { DomainShared } from './shared.js';
import {
  ECS, VIRQ, NR_VIRQS, allocUnbound, bindInterdomain, bindIpi, bindVcpu, bindVirq, close, closeInterdomain, isMasked, isPending,
  portInfo, raiseVirq, reset, send, setPending, unmask, checkDomain, type EvtchnDomain, type EvtchnHost,
} from './evtchn_core.js';
import { EEXIST, EINVAL, ENOENT, ENOSPC, ESRCH, XenError } from './errno.js';
import { DOMID_SELF } from './abi/xen.js';

const PAGE = 4096;
/** shared_info lives at this offset of the fake domain memory (non-zero, to catch a forgotten base). */
const SI = 2 * PAGE;

/** Byte offsets from public/xen.h: [evtchn_pending, evtchn_mask, bits per selector word, sel offset in vcpu_info]. */
const LAYOUT = {
  x64: { pending: 2048, mask: 2560, wordBits: 64, sel: 8 },
  x32: { pending: 2048, mask: 2176, wordBits: 32, sel: 4 },
} as const;

interface TDom extends EvtchnDomain {
  abi: 'x64' | 'x32';
}

function mkDom(domid: number, opts: { vcpus?: number; maxPort?: number; abi?: 'x64' | 'x32' } = {}): TDom {
  const shared = DomainShared.create(domid, opts.vcpus ?? 2, opts.maxPort ?? 127);
  const abi = opts.abi ?? 'x64';
  shared.set('sharedInfoOffset', SI);
  shared.set('abi', abi === 'x32' ? 1 : 0);
  return { shared, mem: new Uint8Array(8 * PAGE), abi };
}

type Ev = ['upcall', number, number] | ['poll', number, number];

class FakeHost implements EvtchnHost {
  readonly doms = new Map<number, EvtchnDomain>();
  readonly log: Ev[] = [];
  exclusiveTrigger?: (d: EvtchnDomain) => void;
  add(...ds: EvtchnDomain[]): this {
    for (const d of ds) this.doms.set(d.shared.domid, d);
    return this;
  }
  lookup(domid: number): EvtchnDomain | null {
    return this.doms.get(domid) ?? null;
  }
  upcall(d: EvtchnDomain, vcpu: number): void {
    this.log.push(['upcall', d.shared.domid, vcpu]);
  }
  wakePollers(d: EvtchnDomain, port: number): void {
    this.log.push(['poll', d.shared.domid, port]);
  }
  upcalls(): [number, number][] {
    return this.log.filter((e) => e[0] === 'upcall').map((e) => [e[1], e[2]]);
  }
  clear(): void {
    this.log.length = 0;
  }
}

function bit(mem: Uint8Array, byteBase: number, n: number): boolean {
  return (mem[byteBase + (n >> 3)]! & (1 << (n & 7))) !== 0;
}
function setBit(mem: Uint8Array, byteBase: number, n: number): void {
  mem[byteBase + (n >> 3)]! |= 1 << (n & 7);
}
function vcpuInfo(d: TDom, v: number): number {
  const reg = d.shared.vcpu(v, 'vcpuInfoOffset');
  return reg >= 0 ? reg : SI + v * 64;
}
const pendingBit = (d: TDom, port: number) => bit(d.mem, SI + LAYOUT[d.abi].pending, port);
const maskBit = (d: TDom, port: number) => bit(d.mem, SI + LAYOUT[d.abi].mask, port);
const mask = (d: TDom, port: number) => setBit(d.mem, SI + LAYOUT[d.abi].mask, port);
const selBit = (d: TDom, v: number, port: number) => bit(d.mem, vcpuInfo(d, v) + LAYOUT[d.abi].sel, Math.floor(port / LAYOUT[d.abi].wordBits));
const upcallPending = (d: TDom, v: number) => d.mem[vcpuInfo(d, v)] !== 0;

function throwsErrno(fn: () => unknown, errno: number): void {
  assert.throws(fn, (e: unknown) => e instanceof XenError && e.errno === errno, `expected -${errno}`);
}

function usedPorts(d: EvtchnDomain): number[] {
  const out: number[] = [];
  for (let p = 0; p <= d.shared.maxPort; p++) if (portInfo(d.shared, p).state !== ECS.closed) out.push(p);
  return out;
}

describe('evtchn_core: alloc_unbound and port allocation', () => {
  test('allocates the lowest free port from 1, unbound toward the named domain', () => {
    const a = mkDom(1);
    assert.equal(allocUnbound(a, 2), 1);
    assert.equal(allocUnbound(a, 3), 2);
    assert.deepEqual(portInfo(a.shared, 1), { state: ECS.unbound, vcpu: 0, remoteDom: 2, remotePort: 0 });
    assert.deepEqual(portInfo(a.shared, 2), { state: ECS.unbound, vcpu: 0, remoteDom: 3, remotePort: 0 });
    assert.equal(portInfo(a.shared, 0).state, ECS.closed, 'port 0 is reserved and never allocated');
  });

  test('port exhaustion at maxPort is -ENOSPC; a closed port is reused first', () => {
    const a = mkDom(1, { maxPort: 7 });
    const h = new FakeHost().add(a);
    for (let i = 1; i <= 7; i++) assert.equal(allocUnbound(a, 0), i);
    throwsErrno(() => allocUnbound(a, 0), ENOSPC);
    throwsErrno(() => bindIpi(a, 0), ENOSPC);
    throwsErrno(() => bindVirq(a, VIRQ.TIMER, 0, new Map()), ENOSPC);
    close(h, a, 3);
    assert.equal(bindIpi(a, 1), 3);
    throwsErrno(() => allocUnbound(a, 0), ENOSPC);
  });

  test('a 2-level table never hands out a port the ABI cannot represent (1024 ports 32-bit, 4096 64-bit)', () => {
    for (const [abi, limit] of [['x32', 1024], ['x64', 4096]] as const) {
      const a = mkDom(1, { maxPort: 5000, abi });
      let n = 0;
      assert.throws(() => { for (;;) { allocUnbound(a, 0); n++; } }, (e: unknown) => e instanceof XenError && e.errno === ENOSPC);
      assert.equal(n, limit - 1, `${abi}: ports 1..${limit - 1}`);
      // and a port beyond the limit is not valid for any operation
      const h = new FakeHost().add(a);
      throwsErrno(() => send(h, a, limit), EINVAL);
      throwsErrno(() => unmask(h, a, limit), EINVAL);
      throwsErrno(() => close(h, a, limit), EINVAL);
    }
  });
});

describe('evtchn_core: bind_interdomain', () => {
  test('connects both ends and marks the new local port pending', () => {
    const a = mkDom(1);
    const b = mkDom(2);
    const h = new FakeHost().add(a, b);
    allocUnbound(b, 9); // occupy port 1 of b so the ports differ
    const pa = allocUnbound(a, 2);
    const pb = bindInterdomain(h, b, a, pa);
    assert.equal(pb, 2);
    assert.deepEqual(portInfo(a.shared, pa), { state: ECS.interdomain, vcpu: 0, remoteDom: 2, remotePort: pb });
    assert.deepEqual(portInfo(b.shared, pb), { state: ECS.interdomain, vcpu: 0, remoteDom: 1, remotePort: pa });
    assert.ok(pendingBit(b, pb), 'new local port is pending');
    assert.ok(!pendingBit(a, pa), 'the remote end is not');
    assert.deepEqual(h.log, [['upcall', 2, 0], ['poll', 2, pb]]);
  });

  test('the remote port keeps its notify vCPU', () => {
    const a = mkDom(1);
    const b = mkDom(2);
    const h = new FakeHost().add(a, b);
    const pa = allocUnbound(a, 2);
    bindVcpu(a, pa, 1);
    bindInterdomain(h, b, a, pa);
    assert.equal(portInfo(a.shared, pa).vcpu, 1);
  });

  test('the remote port must be unbound and accept the caller; failures allocate nothing', () => {
    const a = mkDom(1);
    const b = mkDom(2);
    const c = mkDom(3);
    const h = new FakeHost().add(a, b, c);
    const forB = allocUnbound(a, 2);
    throwsErrno(() => bindInterdomain(h, c, a, forB), EINVAL); // accepts 2, not 3
    const ipi = bindIpi(a, 0);
    throwsErrno(() => bindInterdomain(h, b, a, ipi), EINVAL); // not unbound
    throwsErrno(() => bindInterdomain(h, b, a, 50), EINVAL); // closed
    throwsErrno(() => bindInterdomain(h, b, a, 0), EINVAL); // reserved
    throwsErrno(() => bindInterdomain(h, b, a, 128), EINVAL); // beyond maxPort
    throwsErrno(() => bindInterdomain(h, b, a, -1), EINVAL);
    assert.deepEqual(usedPorts(b), []);
    assert.deepEqual(usedPorts(c), []);
    const pb = bindInterdomain(h, b, a, forB);
    throwsErrno(() => bindInterdomain(h, b, a, forB), EINVAL); // already bound
    assert.deepEqual(usedPorts(b), [pb]);
    assert.equal(h.upcalls().length, 1);
  });

  test('loopback: a port accepting its own domain (DOMID_SELF resolved, or DOMID_SELF kept)', () => {
    const a = mkDom(4);
    const b = mkDom(5);
    const h = new FakeHost().add(a, b);
    const p1 = allocUnbound(a, 4);
    const q1 = bindInterdomain(h, a, a, p1);
    assert.deepEqual(portInfo(a.shared, p1), { state: ECS.interdomain, vcpu: 0, remoteDom: 4, remotePort: q1 });
    assert.deepEqual(portInfo(a.shared, q1), { state: ECS.interdomain, vcpu: 0, remoteDom: 4, remotePort: p1 });
    assert.ok(pendingBit(a, q1));
    const p2 = allocUnbound(a, DOMID_SELF);
    throwsErrno(() => bindInterdomain(h, b, a, p2), EINVAL); // DOMID_SELF means a itself, not anyone
    const q2 = bindInterdomain(h, a, a, p2);
    assert.equal(portInfo(a.shared, q2).remotePort, p2);
    // a loopback send lands on the other end
    send(h, a, q2);
    assert.ok(pendingBit(a, p2));
  });
});

describe('evtchn_core: send', () => {
  test('interdomain: the peer port becomes pending on the peer notify vCPU', () => {
    const a = mkDom(1);
    const b = mkDom(2);
    const h = new FakeHost().add(a, b);
    const pa = allocUnbound(a, 2);
    const pb = bindInterdomain(h, b, a, pa);
    bindVcpu(a, pa, 1);
    h.clear();
    send(h, b, pb);
    assert.ok(pendingBit(a, pa));
    assert.ok(selBit(a, 1, pa) && !selBit(a, 0, pa));
    assert.ok(upcallPending(a, 1) && !upcallPending(a, 0));
    assert.deepEqual(h.log, [['upcall', 1, 1], ['poll', 1, pa]]);
    h.clear();
    send(h, a, pa); // and back
    assert.deepEqual(h.log, [], 'pb is still pending from the bind: nothing new');
  });

  test('interdomain toward a domain that is gone is silently dropped', () => {
    const a = mkDom(1);
    const b = mkDom(2);
    const h = new FakeHost().add(a, b);
    const pb = bindInterdomain(h, b, a, allocUnbound(a, 2));
    h.doms.delete(1);
    h.clear();
    send(h, b, pb);
    assert.deepEqual(h.log, []);
  });

  test('interdomain toward a domid reused by a domain with a smaller port table: dropped, the new table untouched', () => {
    const a = mkDom(1, { maxPort: 1023 });
    const b = mkDom(2);
    const h = new FakeHost().add(a, b);
    let pa = 0;
    for (let i = 0; i < 200; i++) pa = allocUnbound(a, 2); // the last lies beyond a 127-port table
    const pb = bindInterdomain(h, b, a, pa);
    const reused = mkDom(1); // domid 1 again, ports 1..127
    h.add(reused);
    h.clear();
    send(h, b, pb);
    assert.deepEqual(h.log, []);
    close(h, b, pb);
    assert.equal(portInfo(b.shared, pb).state, ECS.closed);
  });

  test('IPI: own port on the bound vCPU', () => {
    const a = mkDom(1);
    const h = new FakeHost().add(a);
    const p = bindIpi(a, 1);
    send(h, a, p);
    assert.ok(pendingBit(a, p) && selBit(a, 1, p) && upcallPending(a, 1));
    assert.deepEqual(h.log, [['upcall', 1, 1], ['poll', 1, p]]);
  });

  test('unbound: success, nothing happens', () => {
    const a = mkDom(1);
    const h = new FakeHost().add(a);
    const p = allocUnbound(a, 2);
    send(h, a, p);
    assert.ok(!pendingBit(a, p));
    assert.deepEqual(h.log, []);
  });

  test('VIRQ, closed, reserved and out-of-range ports: -EINVAL', () => {
    const a = mkDom(1);
    const h = new FakeHost().add(a);
    const v = bindVirq(a, VIRQ.TIMER, 0, new Map());
    throwsErrno(() => send(h, a, v), EINVAL);
    throwsErrno(() => send(h, a, 5), EINVAL);
    for (const p of [0, -1, 128, 1.5, NaN]) throwsErrno(() => send(h, a, p), EINVAL);
    assert.deepEqual(h.log, []);
  });
});

describe('evtchn_core: close', () => {
  test('a dying domain\'s interdomain ports are all closed: its peers go back to unbound toward it (evtchn_destroy)', () => {
    const a = mkDom(1);
    const b = mkDom(2);
    const c = mkDom(3);
    const h = new FakeHost().add(a, b, c);
    const toB = bindInterdomain(h, b, a, allocUnbound(a, 2));
    const toC = bindInterdomain(h, c, a, allocUnbound(a, 3));
    const ipi = bindIpi(a, 0);
    closeInterdomain(h, a);
    assert.deepEqual(portInfo(b.shared, toB), { state: ECS.unbound, vcpu: 0, remoteDom: 1, remotePort: 0 });
    assert.deepEqual(portInfo(c.shared, toC), { state: ECS.unbound, vcpu: 0, remoteDom: 1, remotePort: 0 });
    assert.equal(portInfo(a.shared, ipi).state, ECS.ipi, 'its own local ports are its own business');
  });

  test('interdomain: the peer reverts to unbound for the closer, and can be bound again', () => {
    const a = mkDom(1);
    const b = mkDom(2);
    const h = new FakeHost().add(a, b);
    const pa = allocUnbound(a, 2);
    bindVcpu(a, pa, 1);
    const pb = bindInterdomain(h, b, a, pa);
    assert.ok(pendingBit(b, pb));
    close(h, b, pb);
    assert.deepEqual(portInfo(b.shared, pb), { state: ECS.closed, vcpu: 0, remoteDom: 0, remotePort: 0 });
    assert.deepEqual(portInfo(a.shared, pa), { state: ECS.unbound, vcpu: 1, remoteDom: 2, remotePort: 0 });
    assert.ok(!pendingBit(b, pb), 'pending cleared on close');
    const pb2 = bindInterdomain(h, b, a, pa);
    assert.equal(pb2, pb);
    // The other direction: a closes, b's end accepts a.
    close(h, a, pa);
    assert.deepEqual(portInfo(b.shared, pb2), { state: ECS.unbound, vcpu: 0, remoteDom: 1, remotePort: 0 });
  });

  test('interdomain: a peer port that no longer points back is left alone', () => {
    const a = mkDom(1);
    const b = mkDom(2);
    const h = new FakeHost().add(a, b);
    const pa = allocUnbound(a, 2);
    const pb = bindInterdomain(h, b, a, pa);
    // b's peer record is stale (a's port was reused for something else).
    h.doms.delete(1);
    close(h, b, pb);
    h.add(a);
    assert.equal(portInfo(a.shared, pa).state, ECS.interdomain, 'unreachable peer untouched');
    assert.equal(allocUnbound(b, 9), pb, 'b reuses the port for something else');
    close(h, a, pa);
    assert.deepEqual(portInfo(b.shared, pb), { state: ECS.unbound, vcpu: 0, remoteDom: 9, remotePort: 0 }, 'the reused port is not a peer of a');
  });

  test('closed, reserved and out-of-range ports: -EINVAL', () => {
    const a = mkDom(1);
    const h = new FakeHost().add(a);
    for (const p of [0, 1, -3, 128]) throwsErrno(() => close(h, a, p), EINVAL);
    const p = allocUnbound(a, 0);
    close(h, a, p);
    throwsErrno(() => close(h, a, p), EINVAL);
  });

  test('a VIRQ binding is forgotten on close (the VIRQ can be bound again)', () => {
    const a = mkDom(1);
    const h = new FakeHost().add(a);
    const virqs = new Map<number, number>();
    const p = bindVirq(a, VIRQ.TIMER, 1, virqs);
    close(h, a, p, virqs);
    assert.equal(raiseVirq(h, a, VIRQ.TIMER, 1, virqs), false);
    assert.equal(bindVirq(a, VIRQ.TIMER, 1, virqs), p);
  });

  test('IPI and unbound ports close; pending and the mask bit of a closed port: pending cleared', () => {
    const a = mkDom(1);
    const h = new FakeHost().add(a);
    const p = bindIpi(a, 0);
    send(h, a, p);
    close(h, a, p);
    assert.ok(!pendingBit(a, p));
    assert.equal(portInfo(a.shared, p).state, ECS.closed);
  });

  test('reset closes every port (peers revert to unbound)', () => {
    const a = mkDom(1);
    const b = mkDom(2);
    const h = new FakeHost().add(a, b);
    const virqs = new Map<number, number>();
    const pa = allocUnbound(a, 2);
    const pb = bindInterdomain(h, b, a, pa);
    bindIpi(b, 0);
    bindVirq(b, VIRQ.DEBUG, 0, virqs);
    allocUnbound(b, 7);
    reset(h, b, virqs);
    assert.deepEqual(usedPorts(b), []);
    assert.equal(virqs.size, 0);
    assert.ok(!pendingBit(b, pb));
    assert.equal(portInfo(a.shared, pa).state, ECS.unbound);
  });
});

describe('evtchn_core: VIRQ, IPI and bind_vcpu', () => {
  test('per-vCPU VIRQs bind once per vCPU; a second bind is -EEXIST', () => {
    const a = mkDom(1, { vcpus: 3 });
    const virqs = new Map<number, number>();
    for (const virq of [VIRQ.TIMER, VIRQ.DEBUG, VIRQ.XENOPROF, VIRQ.XENPMU]) {
      const ports = [0, 1, 2].map((v) => bindVirq(a, virq, v, virqs));
      ports.forEach((p, v) => assert.deepEqual(portInfo(a.shared, p), { state: ECS.virq, vcpu: v, remoteDom: virq, remotePort: 0 }));
      for (const v of [0, 1, 2]) throwsErrno(() => bindVirq(a, virq, v, virqs), EEXIST);
      throwsErrno(() => bindVirq(a, virq, 3, virqs), ENOENT);
      throwsErrno(() => bindVirq(a, virq, -1, virqs), ENOENT);
    }
  });

  test('global VIRQs bind on vCPU 0 only, once', () => {
    const a = mkDom(1, { vcpus: 2 });
    const virqs = new Map<number, number>();
    for (const virq of [VIRQ.CONSOLE, VIRQ.DOM_EXC, VIRQ.CON_RING, VIRQ.ENOMEM]) {
      throwsErrno(() => bindVirq(a, virq, 1, virqs), EINVAL);
      throwsErrno(() => bindVirq(a, virq, 5, virqs), EINVAL);
      const p = bindVirq(a, virq, 0, virqs);
      assert.deepEqual(portInfo(a.shared, p), { state: ECS.virq, vcpu: 0, remoteDom: virq, remotePort: 0 });
      throwsErrno(() => bindVirq(a, virq, 0, virqs), EEXIST);
    }
  });

  test('VIRQ numbers out of range: -EINVAL', () => {
    const a = mkDom(1);
    for (const virq of [-1, NR_VIRQS, 1000, 0.5]) throwsErrno(() => bindVirq(a, virq, 0, new Map()), EINVAL);
    assert.deepEqual(usedPorts(a), []);
  });

  test('raiseVirq delivers on the bound port: per-vCPU to that vCPU, global to its notify vCPU', () => {
    const a = mkDom(1, { vcpus: 2 });
    const h = new FakeHost().add(a);
    const virqs = new Map<number, number>();
    const t1 = bindVirq(a, VIRQ.TIMER, 1, virqs);
    assert.equal(raiseVirq(h, a, VIRQ.TIMER, 0, virqs), false, 'not bound on vCPU 0');
    assert.equal(raiseVirq(h, a, VIRQ.TIMER, 1, virqs), true);
    assert.ok(pendingBit(a, t1) && upcallPending(a, 1) && !upcallPending(a, 0));
    const c = bindVirq(a, VIRQ.CONSOLE, 0, virqs);
    bindVcpu(a, c, 1); // a global VIRQ may move
    h.clear();
    assert.equal(raiseVirq(h, a, VIRQ.CONSOLE, 1, virqs), true);
    assert.ok(pendingBit(a, c) && selBit(a, 1, c));
    assert.equal(raiseVirq(h, a, VIRQ.DOM_EXC, 0, virqs), false);
  });

  test('bind_ipi: on an existing vCPU', () => {
    const a = mkDom(1, { vcpus: 2 });
    const p = bindIpi(a, 1);
    assert.deepEqual(portInfo(a.shared, p), { state: ECS.ipi, vcpu: 1, remoteDom: 0, remotePort: 0 });
    throwsErrno(() => bindIpi(a, 2), ENOENT);
    throwsErrno(() => bindIpi(a, -1), ENOENT);
  });

  test('bind_vcpu: unbound, interdomain and global VIRQ ports move; IPI, per-vCPU VIRQ and closed do not', () => {
    const a = mkDom(1, { vcpus: 2 });
    const b = mkDom(2);
    const h = new FakeHost().add(a, b);
    const virqs = new Map<number, number>();
    const unbound = allocUnbound(a, 2);
    const inter = bindInterdomain(h, a, b, allocUnbound(b, 1));
    const glob = bindVirq(a, VIRQ.CONSOLE, 0, virqs);
    for (const p of [unbound, inter, glob]) {
      bindVcpu(a, p, 1);
      assert.equal(portInfo(a.shared, p).vcpu, 1);
    }
    assert.equal(portInfo(a.shared, inter).remotePort, 1, 'rest of the record kept');
    const ipi = bindIpi(a, 0);
    const timer = bindVirq(a, VIRQ.TIMER, 0, virqs);
    for (const p of [ipi, timer, 100]) throwsErrno(() => bindVcpu(a, p, 1), EINVAL);
    assert.equal(portInfo(a.shared, ipi).vcpu, 0);
    assert.equal(portInfo(a.shared, timer).vcpu, 0);
    for (const p of [0, 128]) throwsErrno(() => bindVcpu(a, p, 1), EINVAL);
    throwsErrno(() => bindVcpu(a, unbound, 2), ENOENT);
    throwsErrno(() => bindVcpu(a, 100000, 1000), ENOENT); // the vCPU is checked before the port, as in Xen
  });

  test('after bind_vcpu, events go to the new vCPU selector', () => {
    const a = mkDom(1, { vcpus: 2 });
    const b = mkDom(2);
    const h = new FakeHost().add(a, b);
    const pa = allocUnbound(a, 2);
    const pb = bindInterdomain(h, b, a, pa);
    bindVcpu(a, pa, 1);
    h.clear();
    send(h, b, pb);
    assert.deepEqual(h.upcalls(), [[1, 1]]);
  });
});

describe('evtchn_core: set_pending order (evtchn_2l_set_pending)', () => {
  function setup() {
    const a = mkDom(1);
    const h = new FakeHost().add(a);
    const p = bindIpi(a, 0);
    return { a, h, p };
  }

  test('fresh event: pending, selector, upcall_pending, host.upcall once, then pollers', () => {
    const { a, h, p } = setup();
    setPending(h, a, p);
    assert.ok(pendingBit(a, p) && selBit(a, 0, p) && upcallPending(a, 0));
    assert.deepEqual(h.log, [['upcall', 1, 0], ['poll', 1, p]]);
  });

  test('pending already set: nothing at all (no selector, no upcall, no pollers)', () => {
    const { a, h, p } = setup();
    setBit(a.mem, SI + 2048, p);
    setPending(h, a, p);
    assert.ok(!selBit(a, 0, p) && !upcallPending(a, 0));
    assert.deepEqual(h.log, []);
  });

  test('masked: pending set, no selector or upcall, but pollers are still woken', () => {
    const { a, h, p } = setup();
    mask(a, p);
    setPending(h, a, p);
    assert.ok(pendingBit(a, p));
    assert.ok(!selBit(a, 0, p) && !upcallPending(a, 0));
    assert.deepEqual(h.log, [['poll', 1, p]]);
  });

  test('selector word already set: no new upcall', () => {
    const { a, h, p } = setup();
    const other = bindIpi(a, 0);
    setPending(h, a, other); // same selector word (ports < 64)
    h.clear();
    a.mem[vcpuInfo(a, 0)] = 0; // guest cleared upcall_pending but not yet the selector
    setPending(h, a, p);
    assert.ok(pendingBit(a, p));
    assert.equal(a.mem[vcpuInfo(a, 0)], 0, 'upcall_pending untouched');
    assert.deepEqual(h.log, [['poll', 1, p]]);
  });

  test('upcall_pending already set: selector set, no host.upcall', () => {
    const { a, h, p } = setup();
    a.mem[vcpuInfo(a, 0)] = 1;
    setPending(h, a, p);
    assert.ok(selBit(a, 0, p));
    assert.deepEqual(h.log, [['poll', 1, p]]);
  });

  test('an exclusivity trigger port takes the machine before the event is raised (the handler finds it held)', () => {
    const { a, h, p } = setup();
    a.shared.set('exclusiveTrigger', p);
    const seen: boolean[] = [];
    h.exclusiveTrigger = (d) => seen.push(isPending(d, p));
    setPending(h, a, p);
    assert.deepEqual(seen, [false], 'the trigger ran once, with the port not yet pending');
    assert.ok(pendingBit(a, p));
    assert.deepEqual(h.log, [['upcall', 1, 0], ['poll', 1, p]]);
  });

  test('a vCPU >= 32 without a registered vcpu_info gets no bits written outside shared_info', () => {
    const a = mkDom(1, { vcpus: 33 });
    const h = new FakeHost().add(a);
    const p = bindIpi(a, 32);
    const before = a.mem.slice();
    setPending(h, a, p);
    const changed = [...a.mem.keys()].filter((i) => a.mem[i] !== before[i]);
    assert.deepEqual(changed, [SI + 2048 + (p >> 3)]);
    assert.deepEqual(h.log, [['poll', 1, p]]);
  });
});

describe('evtchn_core: unmask (evtchn_2l_unmask)', () => {
  test('unmasking a pending masked port raises it', () => {
    const a = mkDom(1);
    const h = new FakeHost().add(a);
    const p = bindIpi(a, 1);
    mask(a, p);
    send(h, a, p);
    assert.ok(isPending(a, p) && isMasked(a, p) && !selBit(a, 1, p));
    h.clear();
    unmask(h, a, p);
    assert.ok(!maskBit(a, p) && selBit(a, 1, p) && upcallPending(a, 1));
    assert.deepEqual(h.log, [['upcall', 1, 1]]);
  });

  test('unmasking a masked port that is not pending only clears the mask', () => {
    const a = mkDom(1);
    const h = new FakeHost().add(a);
    const p = bindIpi(a, 0);
    mask(a, p);
    unmask(h, a, p);
    assert.ok(!maskBit(a, p) && !selBit(a, 0, p) && !upcallPending(a, 0));
    assert.deepEqual(h.log, []);
  });

  test('unmasking a port that was not masked does nothing even if pending', () => {
    const a = mkDom(1);
    const h = new FakeHost().add(a);
    const p = bindIpi(a, 0);
    setBit(a.mem, SI + 2048, p);
    unmask(h, a, p);
    assert.ok(!selBit(a, 0, p));
    assert.deepEqual(h.log, []);
  });

  test('with the selector already set, unmask does not upcall again', () => {
    const a = mkDom(1);
    const h = new FakeHost().add(a);
    const p = bindIpi(a, 0);
    const q = bindIpi(a, 0);
    mask(a, p);
    send(h, a, p);
    send(h, a, q);
    h.clear();
    unmask(h, a, p);
    assert.deepEqual(h.log, []);
  });

  test('port 0 may be unmasked (it is in range); beyond the table is -EINVAL', () => {
    const a = mkDom(1);
    const h = new FakeHost().add(a);
    mask(a, 0);
    unmask(h, a, 0);
    assert.ok(!maskBit(a, 0));
    for (const p of [-1, 128, 2.5]) throwsErrno(() => unmask(h, a, p), EINVAL);
  });
});

describe('evtchn_core: shared_info layouts and vcpu_info placement', () => {
  for (const abi of ['x64', 'x32'] as const) {
    test(`${abi}: bits land at the header offsets (pending, mask, selector word)`, () => {
      const a = mkDom(1, { abi, maxPort: 1023 });
      const h = new FakeHost().add(a);
      const wordBits = LAYOUT[abi].wordBits;
      // fill ports up to 100 so we can use high-numbered ones
      let p = 0;
      while (p < 100) p = bindIpi(a, 0);
      mask(a, 40);
      send(h, a, 100);
      const byteP = SI + LAYOUT[abi].pending + (100 >> 3);
      assert.equal(a.mem[byteP], 1 << (100 & 7));
      assert.ok(isPending(a, 100));
      const sel = vcpuInfo(a, 0) + LAYOUT[abi].sel;
      const word = Math.floor(100 / wordBits);
      assert.equal(a.mem[sel + (word >> 3)], 1 << (word & 7), `selector word ${word}`);
      assert.ok(isMasked(a, 40));
      assert.equal(a.mem[SI + LAYOUT[abi].mask + 5], 1, 'mask of port 40');
      // nothing else in shared_info changed besides pending, selector and upcall_pending
      const touched = [...a.mem.keys()].filter((i) => a.mem[i] !== 0);
      assert.deepEqual(touched.sort((x, y) => x - y), [vcpuInfo(a, 0), sel + (word >> 3), byteP, SI + LAYOUT[abi].mask + 5].sort((x, y) => x - y));
    });
  }

  test('a vcpu_info registered elsewhere receives the selector and upcall; the legacy slot does not', () => {
    for (const abi of ['x64', 'x32'] as const) {
      const a = mkDom(1, { abi });
      const h = new FakeHost().add(a);
      const off = 5 * PAGE + 192;
      a.shared.setVcpu(1, 'vcpuInfoOffset', off);
      const p = bindIpi(a, 1);
      send(h, a, p);
      assert.equal(a.mem[off], 1, 'upcall_pending in the registered vcpu_info');
      assert.equal(a.mem[off + LAYOUT[abi].sel], 1, 'selector word 0');
      assert.deepEqual([...a.mem.subarray(SI + 64, SI + 128)].filter((x) => x !== 0), [], 'legacy slot 1 untouched');
    }
  });
});

describe('evtchn_core: checkDomain', () => {
  test('a missing domain is -ESRCH', () => {
    const a = mkDom(1);
    const h = new FakeHost().add(a);
    assert.equal(checkDomain(h, 1), a);
    throwsErrno(() => checkDomain(h, 2), ESRCH);
  });
});
