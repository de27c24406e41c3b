// FIFO event channels on a plain (or shared) buffer as guest memory: the
// switch from 2-level, init_control / expand_array / set_priority and their
// errors, the event word bits, per-vCPU priority queues, and the linking
// protocol against a guest that unlinks at the same time. The guest side is
// written here the way Linux's events_fifo.c consumes queues. Bit numbers and
// offsets are written out from public/event_channel.h, not taken from our
// modules, so the test states the ABI independently.

import { strict as assert } from 'node:assert';
import { describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';

import { DomainShared } from './shared.js';
import {
  ECS, allocUnbound, bindInterdomain, bindIpi, bindVcpu, close, expandArray, initControl, isMasked, isPending, portInfo,
  reset, send, setPending, setPriority, unmask, type EvtchnDomain, type EvtchnHost,
} from './evtchn_core.js';
import { linkRaceCount, priorityOf } from './evtchn_fifo.js';
import { EINVAL, ENOENT, ENOSPC, ENOSYS, EOPNOTSUPP, XenError } from './errno.js';

const PAGE = 4096;
const SI = 2 * PAGE; // shared_info
const CB0 = 4 * PAGE; // vCPU 0's control block page
const CB1 = 5 * PAGE; // vCPU 1's
const ARRAY = 8 * PAGE; // event array pages from here on
const PENDING = 1 << 31;
const MASKED = 1 << 30;
const LINKED = 1 << 29;
const BUSY = 1 << 28;
const LINK_MASK = (1 << 17) - 1;

type Ev = ['upcall', number, number] | ['poll', number, number];

class FakeHost implements EvtchnHost {
  readonly doms = new Map<number, EvtchnDomain>();
  readonly log: Ev[] = [];
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
  upcalls(): number[] {
    return this.log.filter((e) => e[0] === 'upcall').map((e) => e[2]);
  }
  clear(): void {
    this.log.length = 0;
  }
}

interface FDom extends EvtchnDomain {
  w: Int32Array;
}

function mkDom(domid: number, o: { vcpus?: number; maxPort?: number; pages?: number; shared?: boolean } = {}): FDom {
  const shared = DomainShared.create(domid, o.vcpus ?? 2, o.maxPort ?? 2047);
  shared.set('sharedInfoOffset', SI);
  const bytes = (o.pages ?? 16) * PAGE;
  const buf = o.shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes);
  return { shared, mem: new Uint8Array(buf), w: new Int32Array(buf) };
}

function throwsErrno(fn: () => unknown, errno: number, what?: string): void {
  assert.throws(fn, (e: unknown) => e instanceof XenError && e.errno === errno, what ?? `expected -${errno}`);
}

/** Event word of `port` (array pages at ARRAY, ARRAY + PAGE, ... as added in order). */
const wordAt = (port: number) => ARRAY / 4 + port;
const word = (d: FDom, port: number) => d.w[wordAt(port)]! | 0;
const ready = (d: FDom, cb: number) => d.w[cb / 4]! >>> 0;
const head = (d: FDom, cb: number, prio: number) => d.w[cb / 4 + 2 + prio]!;
const upcallPending = (d: FDom, v: number) => d.mem[SI + v * 64] !== 0;

/** A FIFO domain: control blocks for both vCPUs, `pages` event array pages (words zeroed: unmasked). */
function fifoDom(domid = 1, o: { pages?: number; vcpus?: number; maxPort?: number } = {}): { d: FDom; h: FakeHost } {
  const d = mkDom(domid, { vcpus: o.vcpus, maxPort: o.maxPort, pages: 8 + (o.pages ?? 1) + 1 });
  const h = new FakeHost().add(d);
  initControl(d, 0, 0, CB0);
  if ((o.vcpus ?? 2) > 1) initControl(d, 1, 64, CB1);
  for (let i = 0; i < (o.pages ?? 1); i++) expandArray(h, d, ARRAY + i * PAGE);
  return { d, h };
}
const CB1_AT = CB1 + 64; // vCPU 1's block: page CB1, offset 64

/**
 * The guest's consumer, as Linux's consume_one_event: take HEAD (from the
 * control block when the local copy is 0), clear LINKED and LINK by CAS,
 * and take the event if it is still pending and unmasked (clearing PENDING,
 * as an edge handler does). Returns the ports in the order they came.
 */
function consume(d: FDom, cb: number): number[] {
  const got: number[] = [];
  const local = new Array<number>(16).fill(0);
  let rdy = Atomics.exchange(d.w, cb / 4, 0) >>> 0;
  while (rdy) {
    const q = 31 - Math.clz32(rdy & -rdy); // lowest set bit: highest priority first
    const port = local[q] || Atomics.load(d.w, cb / 4 + 2 + q);
    const i = wordAt(port);
    let w = Atomics.load(d.w, i);
    for (;;) {
      const seen = Atomics.compareExchange(d.w, i, w, w & ~(LINKED | LINK_MASK));
      if (seen === w) break;
      w = seen;
    }
    const next = w & LINK_MASK;
    if (next === 0) rdy &= ~(1 << q);
    if ((w & PENDING) !== 0 && (w & MASKED) === 0) {
      Atomics.and(d.w, i, ~PENDING);
      got.push(port);
    }
    local[q] = next;
  }
  return got;
}

describe('evtchn_fifo: init_control switches the domain from 2-level', () => {
  test('ports bound before carry over; one pending under 2-level is raised once its array page exists', () => {
    const d = mkDom(1);
    const h = new FakeHost().add(d);
    const p = bindIpi(d, 0);
    const q = bindIpi(d, 0);
    send(h, d, p); // pending in the 2-level bitmap
    assert.ok(isPending(d, p));
    h.clear();
    d.mem[SI] = 0; // the guest took the 2-level upcall (but not the event) before switching
    initControl(d, 0, 0, CB0);
    assert.equal(d.shared.get('evtchnFifo'), 1);
    assert.deepEqual(portInfo(d.shared, p), { state: ECS.ipi, vcpu: 0, remoteDom: 0, remotePort: 0 }, 'still bound');
    assert.equal(priorityOf(d.shared, p), 7, 'default priority');
    assert.ok(!isPending(d, p) && isMasked(d, p), 'no event word yet: not pending, counted masked');
    expandArray(h, d, ARRAY);
    assert.equal(word(d, p), PENDING | LINKED, 'raised and linked when its word appeared');
    assert.equal(word(d, q), 0);
    assert.equal(head(d, CB0, 7), p);
    assert.equal(ready(d, CB0), 1 << 7);
    assert.ok(upcallPending(d, 0));
    assert.deepEqual(h.upcalls(), [0]);
    assert.deepEqual(consume(d, CB0), [p]);
  });

  test('a guest that masks its new array page (as Linux does) sees the carried event on unmask', () => {
    const d = mkDom(1);
    const h = new FakeHost().add(d);
    const p = bindIpi(d, 0);
    send(h, d, p);
    initControl(d, 0, 0, CB0);
    d.w.fill(MASKED, wordAt(0), wordAt(1024));
    expandArray(h, d, ARRAY);
    assert.equal(word(d, p), PENDING | MASKED, 'pending, not linked while masked');
    assert.equal(ready(d, CB0), 0);
    unmask(h, d, p);
    assert.equal(word(d, p), PENDING | LINKED);
    assert.deepEqual(consume(d, CB0), [p]);
  });

  test('errors: vCPU, offset, alignment, bad frame, twice on one vCPU; a failure leaves the domain 2-level', () => {
    const d = mkDom(1);
    throwsErrno(() => initControl(d, 2, 0, CB0), ENOENT, 'no vCPU 2');
    throwsErrno(() => initControl(d, -1, 0, CB0), ENOENT);
    throwsErrno(() => initControl(d, 0, PAGE - 72 + 8, CB0), EINVAL, 'crosses the page');
    throwsErrno(() => initControl(d, 0, 12, CB0), EINVAL, 'not 8-aligned');
    throwsErrno(() => initControl(d, 0, 0, -1), EINVAL, 'not a writable guest frame');
    assert.equal(d.shared.get('evtchnFifo'), 0);
    initControl(d, 0, PAGE - 72, CB0);
    throwsErrno(() => initControl(d, 0, 0, CB1), EINVAL, 'vCPU 0 has one');
    initControl(d, 1, 0, CB1);
  });

  test('beyond 4095 ports only with FIFO (EVTCHN_2L_NR_CHANNELS vs the 17-bit LINK)', () => {
    const d = mkDom(1, { maxPort: 5000, pages: 14 });
    const h = new FakeHost().add(d);
    let last = 0;
    assert.throws(() => { for (;;) last = allocUnbound(d, 0); }, (e: unknown) => e instanceof XenError && e.errno === ENOSPC);
    assert.equal(last, 4095, '2-level stops at 4095');
    initControl(d, 0, 0, CB0);
    for (let p = 4096; p <= 5000; p++) assert.equal(allocUnbound(d, 0), p);
    throwsErrno(() => allocUnbound(d, 0), ENOSPC, 'maxPort still applies');
    // A port above the array's pages waits for its page.
    close(h, d, 5000);
    const ipi = bindIpi(d, 0);
    assert.equal(ipi, 5000);
    send(h, d, ipi);
    assert.ok(!isPending(d, ipi));
    for (let i = 0; i < 4; i++) expandArray(h, d, ARRAY + i * PAGE); // words 0..4095
    assert.ok(!isPending(d, ipi));
    expandArray(h, d, ARRAY + 4 * PAGE); // words 4096..5119
    assert.ok(isPending(d, ipi), 'raised when its page came');
  });
});

describe('evtchn_fifo: expand_array and set_priority', () => {
  test('expand_array: -EOPNOTSUPP under 2-level, -EINVAL for a bad frame, -ENOSPC past 128 pages', () => {
    const d = mkDom(1);
    const h = new FakeHost().add(d);
    throwsErrno(() => expandArray(h, d, ARRAY), EOPNOTSUPP);
    initControl(d, 0, 0, CB0);
    throwsErrno(() => expandArray(h, d, -1), EINVAL);
    assert.equal(d.shared.get('fifoEventPages'), 0);
    for (let i = 0; i < 128; i++) expandArray(h, d, ARRAY);
    throwsErrno(() => expandArray(h, d, ARRAY), ENOSPC);
  });

  test('set_priority: -ENOSYS under 2-level, -EINVAL for a bad port or priority; only later events move', () => {
    const { d, h } = fifoDom();
    const p = bindIpi(d, 0);
    throwsErrno(() => setPriority(mkDom(2), 1, 3), ENOSYS);
    throwsErrno(() => setPriority(d, p, 16), EINVAL);
    throwsErrno(() => setPriority(d, 2048, 3), EINVAL);
    send(h, d, p);
    assert.equal(head(d, CB0, 7), p);
    setPriority(d, p, 2);
    assert.equal(priorityOf(d.shared, p), 2);
    assert.equal(head(d, CB0, 2), 0, 'the linked event stays on its queue');
    assert.deepEqual(consume(d, CB0), [p]);
    send(h, d, p);
    assert.equal(head(d, CB0, 2), p, 'the next one goes to priority 2');
    assert.equal(ready(d, CB0), 1 << 2);
    assert.deepEqual(consume(d, CB0), [p]);
  });

  test('a rebound port starts at the default priority', () => {
    const { d, h } = fifoDom();
    const p = bindIpi(d, 0);
    setPriority(d, p, 1);
    close(h, d, p);
    assert.equal(bindIpi(d, 0), p);
    assert.equal(priorityOf(d.shared, p), 7);
  });
});

describe('evtchn_fifo: raising events (evtchn_fifo_set_pending)', () => {
  test('the first event of a queue is its HEAD, sets READY and upcall_pending, one upcall; pollers once', () => {
    const { d, h } = fifoDom();
    const p = bindIpi(d, 0);
    send(h, d, p);
    assert.equal(word(d, p), PENDING | LINKED);
    assert.equal(head(d, CB0, 7), p);
    assert.equal(ready(d, CB0), 1 << 7);
    assert.deepEqual(h.log, [['upcall', 1, 0], ['poll', 1, p]]);
    h.clear();
    send(h, d, p);
    assert.deepEqual(h.log, [], 'already pending: nothing');
  });

  test('later events link behind the tail: LINK of the tail, no new READY or upcall', () => {
    const { d, h } = fifoDom();
    const [a, b, c] = [bindIpi(d, 0), bindIpi(d, 0), bindIpi(d, 0)];
    send(h, d, a);
    h.clear();
    send(h, d, b);
    send(h, d, c);
    assert.equal(word(d, a), PENDING | LINKED | b);
    assert.equal(word(d, b), PENDING | LINKED | c);
    assert.equal(word(d, c), PENDING | LINKED);
    assert.equal(head(d, CB0, 7), a);
    assert.deepEqual(h.upcalls(), []);
    assert.deepEqual(consume(d, CB0), [a, b, c]);
  });

  test('masked: PENDING only, not linked, no upcall, pollers woken; unmask links it', () => {
    const { d, h } = fifoDom();
    const p = bindIpi(d, 0);
    Atomics.or(d.w, wordAt(p), MASKED);
    send(h, d, p);
    assert.equal(word(d, p), PENDING | MASKED);
    assert.equal(ready(d, CB0), 0);
    assert.deepEqual(h.log, [['poll', 1, p]]);
    h.clear();
    unmask(h, d, p);
    assert.equal(word(d, p), PENDING | LINKED, 'unmask clears MASKED and relinks');
    assert.deepEqual(h.upcalls(), [0]);
    h.clear();
    const q = bindIpi(d, 0);
    unmask(h, d, q);
    assert.equal(word(d, q), 0, 'unmasking a port that is not pending links nothing');
    throwsErrno(() => unmask(h, d, 2048), EINVAL);
  });

  test('priority order: the guest takes queues highest first, each in FIFO order', () => {
    const { d, h } = fifoDom();
    const ports = Array.from({ length: 6 }, () => bindIpi(d, 0));
    const prios = [12, 3, 7, 3, 12, 0];
    ports.forEach((p, i) => setPriority(d, p, prios[i]!));
    for (const p of ports) send(h, d, p);
    assert.equal(ready(d, CB0), (1 << 0) | (1 << 3) | (1 << 7) | (1 << 12));
    assert.deepEqual(h.upcalls(), [0], 'one upcall: upcall_pending stayed set');
    assert.deepEqual(consume(d, CB0), [ports[5], ports[1], ports[3], ports[2], ports[0], ports[4]]);
  });

  test('queues are per vCPU: a port bound to vCPU 1 goes to its control block and upcall', () => {
    const { d, h } = fifoDom();
    const p = bindIpi(d, 1);
    const u = allocUnbound(d, 0);
    bindVcpu(d, u, 1);
    send(h, d, p);
    setPending(h, d, u);
    assert.equal(head(d, CB1_AT, 7), p);
    assert.equal(word(d, p), PENDING | LINKED | u);
    assert.equal(ready(d, CB0), 0);
    assert.ok(upcallPending(d, 1) && !upcallPending(d, 0));
    assert.deepEqual(h.upcalls(), [1]);
    assert.deepEqual(consume(d, CB1_AT), [p, u]);
  });

  test('a vCPU without a control block: the event stays PENDING, nothing linked', () => {
    const d = mkDom(1, { pages: 10 });
    const h = new FakeHost().add(d);
    const p = bindIpi(d, 1);
    initControl(d, 0, 0, CB0);
    expandArray(h, d, ARRAY);
    send(h, d, p);
    assert.equal(word(d, p), PENDING);
    assert.deepEqual(h.upcalls(), []);
  });

  test('tail tracking: once the guest emptied a queue, the next event is a new HEAD with READY again', () => {
    const { d, h } = fifoDom();
    const [a, b] = [bindIpi(d, 0), bindIpi(d, 0)];
    send(h, d, a);
    assert.deepEqual(consume(d, CB0), [a]);
    d.mem[SI] = 0; // the guest's upcall handler cleared upcall_pending
    h.clear();
    send(h, d, b);
    assert.equal(word(d, a), 0, 'the old tail (unlinked by the guest) is not written');
    assert.equal(head(d, CB0, 7), b);
    assert.equal(ready(d, CB0), 1 << 7);
    assert.deepEqual(h.upcalls(), [0]);
    send(h, d, a);
    assert.equal(word(d, b), PENDING | LINKED | a, 'the old tail links again once it is raised again');
    assert.deepEqual(consume(d, CB0), [b, a]);
  });

  test('an event moving queues leaves no stale tail behind in its old one', () => {
    const { d, h } = fifoDom();
    const [a, b] = [bindIpi(d, 0), bindIpi(d, 0)];
    send(h, d, a); // tail of queue 7
    assert.deepEqual(consume(d, CB0), [a]);
    setPriority(d, a, 2);
    send(h, d, a); // now on queue 2: queue 7 must forget it as its tail
    send(h, d, b); // queue 7: a new HEAD, not linked behind a
    assert.equal(word(d, a), PENDING | LINKED, 'a is not linked to b');
    assert.equal(head(d, CB0, 7), b);
    assert.deepEqual(consume(d, CB0), [a, b]);
  });

  test('linking keeps the bits a guest may change on the tail (MASKED, PENDING) and clears BUSY', () => {
    const { d, h } = fifoDom();
    const [a, b, c] = [bindIpi(d, 0), bindIpi(d, 0), bindIpi(d, 0)];
    send(h, d, a);
    Atomics.or(d.w, wordAt(a), MASKED | BUSY); // masked by the guest; a stale BUSY
    send(h, d, b);
    assert.equal(word(d, a), PENDING | MASKED | LINKED | b);
    Atomics.and(d.w, wordAt(b), ~PENDING); // the guest cleared PENDING of the tail
    send(h, d, c);
    assert.equal(word(d, b), LINKED | c);
    assert.deepEqual(consume(d, CB0), [c], 'a is masked, b not pending: only c is taken');
  });

  test('close clears PENDING; a closed port still LINKED is not reused until the guest unlinks it', () => {
    const { d, h } = fifoDom();
    const p = bindIpi(d, 0);
    send(h, d, p);
    close(h, d, p);
    assert.equal(word(d, p), LINKED, 'PENDING cleared, the guest unlinks');
    const q = bindIpi(d, 0);
    assert.notEqual(q, p, 'busy: skipped');
    assert.deepEqual(consume(d, CB0), [], 'not pending: skipped by the guest');
    close(h, d, q);
    assert.equal(bindIpi(d, 0), p, 'free again');
  });

  test('interdomain: a send from another domain (2-level itself) lands in the FIFO domain\'s queue', () => {
    const { d, h } = fifoDom(1);
    const other = mkDom(2);
    h.add(other);
    const u = allocUnbound(d, 2);
    const local = bindInterdomain(h, other, d, u);
    h.clear();
    send(h, other, local);
    assert.equal(word(d, u), PENDING | LINKED);
    assert.deepEqual(h.upcalls(), [0]);
  });

  test('reset: every port closed, back to 2-level (ports and bitmaps as before the switch)', () => {
    const { d, h } = fifoDom(1, { maxPort: 5000 });
    const p = bindIpi(d, 0);
    send(h, d, p);
    reset(h, d);
    assert.equal(d.shared.get('evtchnFifo'), 0);
    assert.equal(portInfo(d.shared, p).state, ECS.closed);
    const q = bindIpi(d, 0);
    send(h, d, q);
    assert.ok(d.mem[SI + 2048]! & (1 << q), '2-level pending bit');
    throwsErrno(() => expandArray(h, d, ARRAY), EOPNOTSUPP);
    initControl(d, 0, 0, CB0); // and FIFO can be chosen again
  });
});

// --- the linking protocol against a guest on another thread ----------------

/** The guest's consumer on its own thread: Linux's consume loop over a SharedArrayBuffer, until told to stop. */
const GUEST = `
const { workerData, parentPort } = require('node:worker_threads');
const { mem, ctl, cb, array } = workerData;
const w = new Int32Array(mem);
const c = new Int32Array(ctl); // [0] stop flag, [1] events taken, [2..] per-port count
const LINKED = 1 << 29, PENDING = 1 << 31, MASKED = 1 << 30, LINK_MASK = (1 << 17) - 1;
const local = new Array(16).fill(0);
let rdy = 0;
for (;;) {
  rdy |= Atomics.exchange(w, cb / 4, 0) >>> 0;
  if (!rdy) {
    if (Atomics.load(c, 0)) break;
    continue;
  }
  const q = 31 - Math.clz32(rdy & -rdy);
  const port = local[q] || Atomics.load(w, cb / 4 + 2 + q);
  const i = array / 4 + port;
  let v = Atomics.load(w, i);
  for (;;) {
    const seen = Atomics.compareExchange(w, i, v, v & ~(LINKED | LINK_MASK));
    if (seen === v) break;
    v = seen;
  }
  const next = v & LINK_MASK;
  if (next === 0) rdy &= ~(1 << q);
  if ((v & PENDING) && !(v & MASKED)) {
    Atomics.and(w, i, ~PENDING);
    Atomics.add(c, 2 + port, 1);
    Atomics.add(c, 1, 1);
  }
  local[q] = next;
}
parentPort.postMessage('done');
`;

describe('evtchn_fifo: linking against a guest unlinking on another thread', () => {
  test('every event raised is taken exactly once while the guest unlinks the same queues, races included', async () => {
    const d = mkDom(1, { shared: true, pages: 10 });
    const h = new FakeHost().add(d);
    initControl(d, 0, 0, CB0);
    expandArray(h, d, ARRAY);
    // Long queues at three priorities, so the guest is always unlinking near the tail being linked.
    const ports = Array.from({ length: 48 }, (_, i) => {
      const p = bindIpi(d, 0);
      setPriority(d, p, [7, 7, 3, 7, 15, 7][i % 6]!);
      return p;
    });
    const ctl = new SharedArrayBuffer((2 + 64) * 4);
    const c = new Int32Array(ctl);
    const guest = new Worker(GUEST, { eval: true, workerData: { mem: d.mem.buffer, ctl, cb: CB0, array: ARRAY } });
    const done = new Promise<void>((res, rej) => { guest.once('message', () => res()); guest.once('error', rej); });
    const racesBefore = linkRaceCount();
    const raisedPer = new Map<number, number>();
    let raised = 0;
    const deadline = Date.now() + 60_000;
    try {
      // Raise any port the guest has taken (not PENDING: each raise is then one event to take), until the
      // tail CAS has lost to the guest a good number of times, or 60 s.
      for (let i = 0; linkRaceCount() - racesBefore < 20 || raised < 50_000; i++) {
        if (Date.now() > deadline) assert.fail(`the guest never unlinked a tail while it was being linked (${linkRaceCount() - racesBefore} races in ${raised} events)`);
        const p = ports[i % ports.length]!;
        if (isPending(d, p)) continue;
        send(h, d, p);
        raised++;
        raisedPer.set(p, (raisedPer.get(p) ?? 0) + 1);
      }
      while (Atomics.load(c, 1) < raised) {
        if (Date.now() > deadline) assert.fail(`the guest took ${Atomics.load(c, 1)} of ${raised} events within 60 s: some were lost from the queues`);
      }
    } finally {
      Atomics.store(c, 0, 1);
      await done;
      await guest.terminate();
    }
    assert.equal(Atomics.load(c, 1), raised, 'taken once each, none twice');
    for (const p of ports) assert.equal(Atomics.load(c, 2 + p), raisedPer.get(p) ?? 0, `port ${p}`);
    for (const p of ports) assert.equal(word(d, p) & (LINKED | PENDING | BUSY), 0, `port ${p} left clean`);
  });

  test('a guest masking and unmasking the tail (unmask only while not BUSY) never loses the link', async () => {
    const d = mkDom(1, { shared: true, pages: 10 });
    const h = new FakeHost().add(d);
    initControl(d, 0, 0, CB0);
    expandArray(h, d, ARRAY);
    const [a, b] = [bindIpi(d, 0), bindIpi(d, 0)];
    const ctl = new SharedArrayBuffer(4);
    const stop = new Int32Array(ctl);
    // Linux's mask (set MASKED) and clear_masked_cond (clear it by CAS unless BUSY), in a loop on word a.
    const flipper = new Worker(`
      const { workerData, parentPort } = require('node:worker_threads');
      const w = new Int32Array(workerData.mem), s = new Int32Array(workerData.ctl), i = workerData.i;
      const MASKED = 1 << 30, BUSY = 1 << 28;
      while (!Atomics.load(s, 0)) {
        Atomics.or(w, i, MASKED);
        const v = Atomics.load(w, i);
        if (!(v & BUSY)) Atomics.compareExchange(w, i, v, v & ~MASKED);
      }
      parentPort.postMessage('done');
    `, { eval: true, workerData: { mem: d.mem.buffer, ctl, i: wordAt(a) } });
    const done = new Promise<void>((res, rej) => { flipper.once('message', () => res()); flipper.once('error', rej); });
    const racesBefore = linkRaceCount();
    const deadline = Date.now() + 60_000;
    let rounds = 0;
    try {
      while (linkRaceCount() - racesBefore < 50 || rounds < 2000) {
        if (Date.now() > deadline) assert.fail(`the tail CAS never met the guest's mask changes (${rounds} rounds)`);
        // a is the tail of queue 7 (linked, pending); b links behind it.
        Atomics.and(d.w, wordAt(a), MASKED); // keep only what the guest is playing with
        Atomics.store(d.w, wordAt(b), 0);
        Atomics.store(d.w, CB0 / 4, 0);
        Atomics.store(d.w, CB0 / 4 + 2 + 7, 0);
        Atomics.and(d.w, wordAt(a), ~MASKED);
        send(h, d, a);
        if ((word(d, a) & LINKED) === 0) continue; // the guest had it masked: not linked this round
        send(h, d, b);
        const w = word(d, a);
        assert.equal(w & LINK_MASK, b, `round ${rounds}: a links to b`);
        assert.equal(w & (LINKED | PENDING | BUSY), LINKED | PENDING, `round ${rounds}: LINKED and PENDING kept, BUSY released`);
        // Unlink both, as the guest's consumer would, to start the next round from empty queues.
        Atomics.and(d.w, wordAt(a), MASKED);
        Atomics.store(d.w, wordAt(b), 0);
        rounds++;
      }
    } finally {
      Atomics.store(stop, 0, 1);
      await done;
      await flipper.terminate();
    }
  });
});
