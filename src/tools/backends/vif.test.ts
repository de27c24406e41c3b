// A vif backend's xenbus handshake against scripted netfronts: the real
// xenstored with each frontend's own connection (its permissions apply),
// grants that are pages of the test's XenDevices, and two vifs on one
// bridge whose frames cross the switch. The frontend side writes what
// Linux's netfront writes (talk_to_netback), in its order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Xenstored, LocalClient } from '../xenstored/index.js';
import type { XenDevices, GrantCopySide } from '../libs/devices.js';
import { settleNics, writeVifNodes } from '../net.js';
import { flowQueue, MAX_QUEUES, VifBackend } from './vif.js';
import { NetSwitches } from './netswitch.js';
import { NetifRxFrontRing, NetifTxFrontRing, NETIF_RSP_OKAY, PAGE_SIZE } from './netif.js';

async function until<T>(what: string, f: () => Promise<T | undefined | false>): Promise<T> {
  const end = Date.now() + 5000;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

interface Bound { domid: number; remote: number; local: number; onEvent: () => void }

/** Grants by (domid, ref); each frontend's unbound ports are 5..8. */
function fakeDevices(xs: LocalClient, grants: Map<string, Uint8Array>) {
  const bound: Bound[] = [];
  const mapped = new Set<number>();
  const notified: number[] = [];
  let nextHandle = 0, nextPort = 20;
  const side = (s: GrantCopySide, len: number): Uint8Array | number => {
    if ('buf' in s) return s.buf.subarray(s.offset, s.offset + len);
    const p = grants.get(`${s.domid}:${s.ref}`);
    return p ? p.subarray(s.offset, s.offset + len) : -3;
  };
  const devices: XenDevices = {
    domid: 0,
    xenstore: xs,
    evtchn: {
      allocUnbound: async () => { throw new Error('a backend binds its frontend\'s ports; it allocates none'); },
      bindInterdomain: async (domid, remote, onEvent) => {
        if (remote < 5 || remote > 8) throw new Error('EINVAL');
        const local = nextPort++;
        bound.push({ domid, remote, local, onEvent });
        return local;
      },
      notify: (p) => notified.push(p),
      unbind: (port) => { bound.splice(bound.findIndex((b) => b.local === port), 1); },
    },
    gnttab: {
      copy: async (ops) => ops.map((op) => {
        const s = side(op.source, op.len), d = side(op.dest, op.len);
        if (typeof s === 'number') return s;
        if (typeof d === 'number') return d;
        d.set(s);
        return 0;
      }),
      map: async (domid, ref, readonly) => {
        const page = grants.get(`${domid}:${ref}`);
        if (!page) return -3;
        const handle = nextHandle++;
        mapped.add(handle);
        return { handle, domid, ref, readonly, page };
      },
      unmap: async (h) => (mapped.delete(h) ? 0 : -4),
      allocBuffer: (n) => new Uint8Array(n),
    },
    close: () => {},
  };
  return { devices, bound, mapped, notified };
}

const fe = (d: number) => `/local/domain/${d}/device/vif/0`;
const be = (d: number) => `/local/domain/0/backend/vif/${d}/0`;

async function setup(domids: number[]) {
  const xs = new Xenstored({ log: () => {} });
  await xs.start();
  const dom0 = new LocalClient(xs, 0);
  const backendXs = new LocalClient(xs, 0);
  const grants = new Map<string, Uint8Array>();
  const f = fakeDevices(backendXs, grants);
  const switches = new NetSwitches();
  const log: string[] = [];
  const guests: { domid: number; front: LocalClient; backend: VifBackend }[] = [];
  for (const [i, d] of domids.entries()) {
    await dom0.write(`/local/domain/${d}`, '');
    await dom0.setPerms(`/local/domain/${d}`, [`n${d}`]);
    await writeVifNodes(dom0, d, 0, settleNics([{ mac: `00:16:3e:00:00:0${i + 1}` }]));
    for (let r = 0; r < 8; r++) grants.set(`${d}:${r}`, new Uint8Array(PAGE_SIZE));
    const backend = await VifBackend.start({ devices: f.devices, path: be(d), switches, log: (l) => log.push(l) });
    guests.push({ domid: d, front: new LocalClient(xs, d), backend });
  }
  const close = async () => {
    for (const g of guests) { await g.backend.close(); g.front.close(); }
    for (const c of [backendXs, dom0]) c.close();
    await xs.stop();
  };
  return { xs, dom0, grants, switches, guests, close, log, ...f };
}

/** What Linux's netfront writes (talk_to_netback): rings 0 and 1, one port or split ones, then Connected. */
async function connect(front: LocalClient, d: number, o: { split?: boolean; omit?: string; set?: Record<string, string> } = {}) {
  const nodes: Record<string, string> = {
    'tx-ring-ref': '0', 'rx-ring-ref': '1', ...(o.split ? { 'event-channel-tx': '5', 'event-channel-rx': '6' } : { 'event-channel': '5' }),
    'request-rx-copy': '1', 'feature-rx-notify': '1', 'feature-sg': '1', 'feature-gso-tcpv4': '1', 'feature-gso-tcpv6': '1', 'feature-ipv6-csum-offload': '1',
    ...o.set,
  };
  if (o.omit) delete nodes[o.omit];
  await front.transaction(async (tx) => {
    for (const [k, v] of Object.entries(nodes)) await front.write(`${fe(d)}/${k}`, v, tx);
  });
  await front.write(`${fe(d)}/state`, '4');
}

test("the backend offers its features and waits in InitWait; libxl's nodes on both ends, each readable by the other", async () => {
  const s = await setup([7]);
  try {
    const r = (p: string) => s.dom0.read(p);
    assert.equal(await r(`${be(7)}/state`), '2');
    assert.deepEqual(await Promise.all(['feature-rx-copy', 'feature-sg', 'feature-gso-tcpv4', 'feature-gso-tcpv6', 'feature-split-event-channels', 'hotplug-status'].map((k) => r(`${be(7)}/${k}`))),
      ['1', '1', '1', '1', '1', 'connected']);
    assert.equal(await r(`${be(7)}/multi-queue-max-queues`), String(MAX_QUEUES), 'queues offered');
    assert.deepEqual(await Promise.all(['frontend', 'frontend-id', 'online', 'mac', 'bridge', 'handle', 'type', 'script', 'mtu'].map((k) => r(`${be(7)}/${k}`))),
      [fe(7), '7', '1', '00:16:3e:00:00:01', 'xenbr0', '0', 'vif', '/etc/xen/scripts/vif-bridge', '1500']);
    assert.deepEqual(await Promise.all(['backend', 'backend-id', 'state', 'handle', 'mac', 'mtu', 'trusted'].map((k) => r(`${fe(7)}/${k}`))), [be(7), '0', '1', '0', '00:16:3e:00:00:01', '1500', '1']);
    const front = s.guests[0]!.front;
    assert.equal(await front.read(`${be(7)}/feature-rx-copy`), '1', 'the frontend reads the backend');
    await assert.rejects(front.write(`${be(7)}/state`, '4'), 'but cannot write there');
  } finally {
    await s.close();
  }
});

test('two vifs on one bridge: each connects (one port, or split ones), a frame one transmits arrives in the other\'s posted buffer; Closing and Closed release everything', async () => {
  const s = await setup([7, 8]);
  try {
    const [a, b] = s.guests as [typeof s.guests[0], typeof s.guests[0]];
    // A says multi-queue-num-queues 1, as Linux's netfront does when queues are offered: its rings stay flat
    await connect(a.front, 7, { set: { 'multi-queue-num-queues': '1' } });
    await connect(b.front, 8, { split: true, omit: 'feature-gso-tcpv6' });
    await until('both connected', async () => (await s.dom0.read(`${be(7)}/state`)) === '4' && (await s.dom0.read(`${be(8)}/state`)) === '4');
    assert.deepEqual(a.backend.lastConnection, { splitEventChannels: false, sg: true, gsoTcpv4: true, gsoTcpv6: true, queues: 1 });
    assert.deepEqual(b.backend.lastConnection, { splitEventChannels: true, sg: true, gsoTcpv4: true, gsoTcpv6: false, queues: 1 }, 'the GSO types the frontend said');
    assert.equal(s.mapped.size, 4);
    assert.deepEqual(s.bound.map((x) => [x.domid, x.remote]), [[7, 5], [8, 5], [8, 6]]);
    assert.equal(s.switches.get('xenbr0')?.portCount, 2);
    // B posts a buffer (ref 2) on its receive ring and notifies its rx port
    const bRx = new NetifRxFrontRing(s.grants.get('8:1')!);
    bRx.put({ id: 42, gref: 2 });
    bRx.push();
    s.bound.find((x) => x.domid === 8 && x.remote === 6)!.onEvent();
    // A transmits a broadcast from page 3 and notifies its only port
    const frame = new Uint8Array(60).fill(0xee);
    frame.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x16, 0x3e, 0, 0, 1, 0x08, 0x06]);
    s.grants.get('7:3')!.set(frame, 100);
    const aTx = new NetifTxFrontRing(s.grants.get('7:0')!);
    aTx.put({ gref: 3, offset: 100, flags: 0, id: 9, size: frame.length });
    aTx.push();
    s.bound.find((x) => x.domid === 7)!.onEvent();
    const rsp = await until('B to receive', async () => { const r = bRx.responses(); return r.length ? r : undefined; });
    assert.deepEqual(rsp, [{ id: 42, offset: 0, flags: 0, status: 60 }]);
    assert.deepEqual(Buffer.from(s.grants.get('8:2')!.subarray(0, 60)), Buffer.from(frame));
    assert.deepEqual(aTx.responses(), [{ id: 9, status: NETIF_RSP_OKAY }]);
    assert.equal(a.backend.stats.txPackets, 1);
    assert.equal(b.backend.stats.rxPackets, 1);
    for (const [g, d] of [[a, 7], [b, 8]] as const) {
      await g.front.write(`${fe(d)}/state`, '5');
      await until('Closing', async () => (await s.dom0.read(`${be(d)}/state`)) === '5');
      await g.front.write(`${fe(d)}/state`, '6');
      await until('Closed', async () => (await s.dom0.read(`${be(d)}/state`)) === '6');
    }
    assert.equal(s.mapped.size, 0);
    assert.equal(s.bound.length, 0);
    assert.equal(s.switches.get('xenbr0'), undefined);
    // a new frontend finds the backend waiting again
    await a.front.write(`${fe(7)}/state`, '1');
    await until('InitWait again', async () => (await s.dom0.read(`${be(7)}/state`)) === '2');
  } finally {
    await s.close();
  }
});

test('two queues (multi-queue-num-queues, each queue\'s rings and ports under queue-N/): both connect; the frames of one flow go on one queue, another flow\'s may go on the other', async () => {
  const s = await setup([7]);
  try {
    const front = s.guests[0]!.front;
    await front.transaction(async (tx) => {
      const w = (k: string, v: string) => front.write(`${fe(7)}/${k}`, v, tx);
      await w('multi-queue-num-queues', '2');
      for (const [q, tx0, rx0, port] of [[0, 0, 1, 5], [1, 2, 3, 6]] as const) {
        await w(`queue-${q}/tx-ring-ref`, String(tx0));
        await w(`queue-${q}/rx-ring-ref`, String(rx0));
        await w(`queue-${q}/event-channel`, String(port));
      }
      for (const k of ['request-rx-copy', 'feature-rx-notify', 'feature-sg']) await w(k, '1');
    });
    await front.write(`${fe(7)}/state`, '4');
    await until('connected', async () => (await s.dom0.read(`${be(7)}/state`)) === '4');
    const b = s.guests[0]!.backend;
    assert.equal(b.lastConnection?.queues, 2);
    assert.equal(s.mapped.size, 4, 'two rings a queue');
    assert.deepEqual(s.bound.map((x) => x.remote), [5, 6], 'a port a queue');
    // frames of UDP flows from another station on the switch: each flow always hashes to one queue
    const flow = (sport: number) => {
      const f = new Uint8Array(60);
      f.set([0, 0x16, 0x3e, 0, 0, 1, 0, 0x16, 0x3e, 0, 0, 9, 0x08, 0x00, 0x45]);
      f[23] = 17;
      f.set([10, 0, 0, 9, 10, 0, 0, 1], 26);
      f[34] = sport >> 8; f[35] = sport & 0xff; f[37] = 53;
      return f;
    };
    const seen = new Set<number>();
    for (let p = 1000; p < 1040; p++) {
      const q = flowQueue(flow(p), 2);
      assert.equal(flowQueue(flow(p), 2), q, 'the same flow, the same queue');
      seen.add(q);
    }
    assert.deepEqual([...seen].sort(), [0, 1], '40 flows use both queues');
    assert.equal(flowQueue(new Uint8Array(60), 2), 0, 'not IP: queue 0');
    // a frame delivered to queue 1's posted buffer arrives there
    const other = { name: 'station', receive: () => {} };
    const sw = s.switches.get('xenbr0')!;
    sw.attach(other);
    const p1 = Array.from({ length: 40 }, (_, i) => 1000 + i).find((p) => flowQueue(flow(p), 2) === 1)!;
    const rx1 = new NetifRxFrontRing(s.grants.get('7:3')!);
    rx1.put({ id: 5, gref: 4 });
    rx1.push();
    s.bound.find((x) => x.remote === 6)!.onEvent();
    sw.input(other, { data: flow(p1) });
    const rsp = await until('queue 1 to receive', async () => { const r = rx1.responses(); return r.length ? r : undefined; });
    assert.deepEqual(rsp, [{ id: 5, offset: 0, flags: 0, status: 60 }]);
    assert.deepEqual(Buffer.from(s.grants.get('7:4')!.subarray(0, 60)), Buffer.from(flow(p1)));
    sw.detach(other);
    await front.write(`${fe(7)}/state`, '5');
    await until('Closing', async () => (await s.dom0.read(`${be(7)}/state`)) === '5');
    await front.write(`${fe(7)}/state`, '6');
    await until('Closed', async () => (await s.dom0.read(`${be(7)}/state`)) === '6');
    assert.equal(s.mapped.size, 0, 'every queue\'s rings unmapped');
    assert.equal(s.bound.length, 0, 'every queue\'s port unbound');
  } finally {
    await s.close();
  }
});

test('each bad frontend value closes the device with the reason in error, holding no ring and no port', async () => {
  const cases: [string, Parameters<typeof connect>[2], RegExp][] = [
    ['no rx-copy', { set: { 'request-rx-copy': '0' } }, /does not support rx-copy/],
    ['no rx-notify', { omit: 'feature-rx-notify' }, /feature-rx-notify is mandatory/],
    ['more queues than offered', { set: { 'multi-queue-num-queues': String(MAX_QUEUES + 1) } }, new RegExp(`${MAX_QUEUES + 1} queues, exceeding the maximum of ${MAX_QUEUES}`)],
    ['no queues', { set: { 'multi-queue-num-queues': '0' } }, /0 queues, exceeding/],
    ['two queues without their rings', { set: { 'multi-queue-num-queues': '2' } }, /queue-0\/tx-ring-ref and rx-ring-ref: not grant references/],
    ['a ring ref that is not a number', { set: { 'tx-ring-ref': 'x' } }, /not grant references/],
    ['a ring not granted', { set: { 'rx-ring-ref': '99' } }, /GNTST -3/],
    ['a port that cannot be bound', { set: { 'event-channel': '77' } }, /binding event-channel 77/],
    ['an unreadable port', { set: { 'event-channel': 'p' } }, /not a port/],
    ['half of split ports', { split: true, omit: 'event-channel-rx' }, /not ports/],
  ];
  for (const [what, o, why] of cases) {
    const s = await setup([7]);
    try {
      await connect(s.guests[0]!.front, 7, o);
      await until(`${what}: Closing`, async () => (await s.dom0.read(`${be(7)}/state`)) === '5');
      assert.match(await s.dom0.read(`${be(7)}/error`), why, what);
      assert.equal(s.mapped.size, 0, what);
      assert.equal(s.bound.length, 0, what);
      assert.equal(s.switches.get('xenbr0'), undefined, what);
    } finally {
      await s.close();
    }
  }
});
