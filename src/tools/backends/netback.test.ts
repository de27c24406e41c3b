// netback's data path against hand-written netfronts: the rings' layouts
// byte by byte, packets of one and several slots with and without extra
// info, every refusal, frames into posted buffers (split across several
// with feature-sg), queued until buffers come and dropped when none do; and
// the switch between ports: learning, flooding, forwarding.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { XenDevices, GrantCopySide } from '../libs/devices.js';
import type { XsClientBase } from '../xenstored/client.js';
import {
  NetifRxBackRing, NetifRxFrontRing, NetifTxBackRing, NetifTxFrontRing, NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETRXF_csum_blank,
  NETRXF_data_validated, NETRXF_more_data, NETTXF_csum_blank, NETTXF_data_validated, NETTXF_extra_info, NETTXF_more_data, PAGE_SIZE,
  XEN_NETIF_EXTRA_FLAG_MORE, XEN_NETIF_EXTRA_TYPE_GSO,
} from './netif.js';
import { GSO_MASK_ALL, NetifService, parseRateNode, RX_QUEUE_BYTES, RX_QUEUE_MAX, type NetFrame, type TxRate } from './netback.js';
import { gsoHeaders, XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6 } from './gso.js';
import { NetSwitch, NetSwitches, type SwitchPort } from './netswitch.js';

const FRONT = 9;

async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}
const GNTST_bad_gntref = -3;

function testDevices(grants: Map<number, Uint8Array>, notified: number[]): XenDevices {
  const side = (s: GrantCopySide, len: number): Uint8Array | number => {
    if ('buf' in s) return s.buf.subarray(s.offset, s.offset + len);
    const p = s.domid === FRONT ? grants.get(s.ref) : undefined;
    if (!p || s.offset + len > PAGE_SIZE) return GNTST_bad_gntref;
    return p.subarray(s.offset, s.offset + len);
  };
  return {
    domid: 0,
    xenstore: null as unknown as XsClientBase,
    evtchn: { bindInterdomain: async () => 1, allocUnbound: async () => { throw new Error('a backend binds its frontend\'s ports; it allocates none'); }, notify: (p) => notified.push(p), unbind: () => {} },
    gnttab: {
      copy: async (ops) => ops.map((op) => {
        const s = side(op.source, op.len), d = side(op.dest, op.len);
        if (typeof s === 'number') return s;
        if (typeof d === 'number') return d;
        d.set(s);
        return 0;
      }),
      map: async () => -1,
      unmap: async () => -4,
      allocBuffer: (n) => new Uint8Array(n),
    },
    close: () => {},
  };
}

function setup(o: { rxSg?: boolean; rxGso?: number; rxDrainMs?: number; txRate?: TxRate; txFilter?: (f: Uint8Array) => boolean } = {}) {
  const txPage = new Uint8Array(PAGE_SIZE), rxPage = new Uint8Array(PAGE_SIZE);
  const grants = new Map<number, Uint8Array>();
  const notified: number[] = [];
  const delivered: NetFrame[] = [];
  const logs: string[] = [];
  const svc = new NetifService({
    devices: testDevices(grants, notified), frontDomid: FRONT, tx: new NetifTxBackRing(txPage), rx: new NetifRxBackRing(rxPage),
    txPort: 3, rxPort: 4, rxSg: o.rxSg ?? false, rxGso: o.rxGso, rxDrainMs: o.rxDrainMs, txRate: o.txRate, txFilter: o.txFilter, deliver: (f) => delivered.push(f), log: (l) => logs.push(l),
  });
  const tx = new NetifTxFrontRing(txPage), rx = new NetifRxFrontRing(rxPage);
  const grant = (ref: number, bytes?: Uint8Array, at = 0) => {
    const p = new Uint8Array(PAGE_SIZE);
    if (bytes) p.set(bytes, at);
    grants.set(ref, p);
    return p;
  };
  const transmit = async () => {
    tx.push();
    svc.kickTx();
    await svc.idle;
    return tx.responses();
  };
  return { svc, tx, rx, grants, grant, notified, delivered, logs, transmit, txPage, rxPage };
}

/** io/netif.h's gso member of netif_extra_info, past type and flags: size (u16), type (u8), pad, features (u16) */
const gsoExtra = (type: number, size: number) => Uint8Array.from([size & 0xff, size >> 8, type, 0, 0, 0]);

/**
 * A TCP/IPv4 frame from 10.0.0.1:40000 to 10.0.0.2:5001 (seq 1000, ACK|PSH, no options) carrying `payload`
 * bytes counting up; its checksum field the pseudo-header's sum when `partial`, else 0.
 */
function tcp4(payload: number, partial = true): Uint8Array {
  const f = new Uint8Array(54 + payload);
  f.set(Buffer.from('00163e00000200163e0000010800', 'hex'));
  f.set(Buffer.from('450000000001400040060000 0a000001 0a000002'.replace(/ /g, ''), 'hex'), 14);
  f.set(Buffer.from('9c401389000003e8000000015018ffff00000000', 'hex'), 34);
  for (let i = 0; i < payload; i++) f[54 + i] = (i * 13) & 0xff;
  if (partial) {
    let sum = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + 20 + payload;
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    f[50] = sum >> 8; f[51] = sum & 0xff;
  }
  return f;
}

/** An Ethernet frame: destination, source, EtherType 0x0800, then `payload` bytes counting up from `seed`. */
function frame(dst: string, src: string, payload: number, seed = 0): Uint8Array {
  const f = new Uint8Array(14 + payload);
  f.set(Buffer.from(dst.replace(/:/g, ''), 'hex'), 0);
  f.set(Buffer.from(src.replace(/:/g, ''), 'hex'), 6);
  f[12] = 0x08;
  for (let i = 0; i < payload; i++) f[14 + i] = (seed + i) & 0xff;
  return f;
}

test('the rings in io/netif.h\'s layout: 256 slots each, requests and responses at their offsets', () => {
  const txPage = new Uint8Array(PAGE_SIZE), rxPage = new Uint8Array(PAGE_SIZE);
  const txf = new NetifTxFrontRing(txPage), txb = new NetifTxBackRing(txPage);
  assert.equal(txf.size, 256);
  assert.equal(txb.size, 256);
  txf.put({ gref: 0x11223344, offset: 0x55, flags: NETTXF_more_data, id: 0x66, size: 0x77 });
  txf.put({ gref: 1, offset: 2, flags: 0, id: 3, size: 4 });
  txf.push();
  const v = new DataView(txPage.buffer);
  // io/ring.h: req_prod at 0; ring[] at 64; netif_tx_request 12 bytes: gref, offset, flags, id, size
  assert.equal(v.getUint32(0, true), 2);
  assert.deepEqual([v.getUint32(64, true), v.getUint16(68, true), v.getUint16(70, true), v.getUint16(72, true), v.getUint16(74, true)], [0x11223344, 0x55, NETTXF_more_data, 0x66, 0x77]);
  assert.equal(v.getUint32(76, true), 1, 'the second request in the next 12-byte slot');
  assert.equal(txb.unconsumed(), 2);
  assert.deepEqual(txb.takeRequest(), { gref: 0x11223344, offset: 0x55, flags: NETTXF_more_data, id: 0x66, size: 0x77 });
  txb.takeRequest();
  txb.putResponse(0x66, NETIF_RSP_ERROR);
  assert.equal(txb.pushResponses(), true, 'rsp_event 1: the frontend asked to be told');
  // netif_tx_response: id (u16), status (s16) at the start of the slot; rsp_prod at 8
  assert.deepEqual([v.getUint32(8, true), v.getUint16(64, true), v.getInt16(66, true)], [1, 0x66, NETIF_RSP_ERROR]);
  assert.deepEqual(txf.responses(), [{ id: 0x66, status: NETIF_RSP_ERROR }]);

  const rxf = new NetifRxFrontRing(rxPage), rxb = new NetifRxBackRing(rxPage);
  assert.equal(rxb.size, 256);
  rxf.put({ id: 0xabc, gref: 0xdeadbeef });
  rxf.push();
  const w = new DataView(rxPage.buffer);
  // netif_rx_request: id at 0, padding, gref at 4 (8 bytes)
  assert.deepEqual([w.getUint16(64, true), w.getUint32(68, true)], [0xabc, 0xdeadbeef]);
  assert.deepEqual(rxb.takeRequest(), { id: 0xabc, gref: 0xdeadbeef });
  rxb.putResponse({ id: 0xabc, offset: 0, flags: NETRXF_more_data | NETRXF_data_validated, status: 1514 });
  rxb.pushResponses();
  // netif_rx_response: id, offset, flags, status
  assert.deepEqual([w.getUint16(64, true), w.getUint16(66, true), w.getUint16(68, true), w.getInt16(70, true)], [0xabc, 0, NETRXF_more_data | NETRXF_data_validated, 1514]);
  assert.deepEqual(rxf.responses(), [{ id: 0xabc, offset: 0, flags: NETRXF_more_data | NETRXF_data_validated, status: 1514 }]);
  // a producer past the ring's size is a broken frontend
  rxf.push(rxb.reqCons + 257);
  assert.equal(rxb.unconsumed(), -1);
});

test('transmit: one slot, several slots at offsets, an extra-info slot answered NULL; each frame delivered whole with its checksum flags', async () => {
  const s = setup();
  const f1 = frame('ff:ff:ff:ff:ff:ff', '00:16:3e:00:00:01', 50);
  s.grant(10, f1, 100);
  s.tx.put({ gref: 10, offset: 100, flags: NETTXF_csum_blank | NETTXF_data_validated, id: 1, size: f1.length });
  assert.deepEqual(await s.transmit(), [{ id: 1, status: NETIF_RSP_OKAY }]);
  assert.deepEqual([...s.delivered[0]!.data], [...f1]);
  assert.equal(s.delivered[0]!.csumBlank, true);
  assert.deepEqual(s.notified, [3], 'told on the transmit port');

  // 5000 bytes over three pages: the first request's size is the whole packet's
  const f2 = frame('00:16:3e:00:00:02', '00:16:3e:00:00:01', 5000 - 14, 7);
  s.grant(20, f2.subarray(0, 1000), 3096);
  s.grant(21, f2.subarray(1000, 4000), 0);
  s.grant(22, f2.subarray(4000), 50);
  s.tx.put({ gref: 20, offset: 3096, flags: NETTXF_more_data | NETTXF_extra_info, id: 2, size: 5000 });
  // extra info (a hash here: informs only) comes right after the first request
  s.tx.putExtra({ type: 4, flags: 0 });
  s.tx.put({ gref: 21, offset: 0, flags: NETTXF_more_data, id: 3, size: 3000 });
  s.tx.put({ gref: 22, offset: 50, flags: 0, id: 4, size: 1000 });
  assert.deepEqual(await s.transmit(), [
    { id: 2, status: NETIF_RSP_OKAY }, { id: 0, status: NETIF_RSP_NULL }, { id: 3, status: NETIF_RSP_OKAY }, { id: 4, status: NETIF_RSP_OKAY },
  ]);
  assert.equal(s.delivered.length, 2);
  assert.deepEqual(Buffer.from(s.delivered[1]!.data), Buffer.from(f2));
  assert.equal(s.delivered[1]!.csumBlank, false);
  assert.equal(s.delivered[1]!.dataValidated, false);
  assert.deepEqual(s.svc.stats, { txPackets: 2, txBytes: f1.length + 5000, txErrors: 0, txSpoofed: 0, rxPackets: 0, rxBytes: 0, rxDropped: 0, txMaxSlots: 4, rxMaxSlots: 0, txGsoPackets: 0, rxGsoPackets: 0, rxGsoSegmented: 0 });
});

test('transmit with the vif\'s anti-spoofing: a packet its filter refuses is answered okay and not delivered, and counted', async () => {
  // the filter sees the frame as the switch would get it: here, anything whose first payload byte is odd is refused
  const s = setup({ txFilter: (f) => (f[14]! & 1) === 0 });
  const good = frame('00:16:3e:00:00:02', '00:16:3e:00:00:01', 100, 0), bad = frame('00:16:3e:00:00:02', '00:16:3e:00:00:01', 100, 1);
  s.grant(10, good);
  s.grant(11, bad);
  s.tx.put({ gref: 10, offset: 0, flags: 0, id: 1, size: good.length });
  s.tx.put({ gref: 11, offset: 0, flags: 0, id: 2, size: bad.length });
  assert.deepEqual(await s.transmit(), [{ id: 1, status: NETIF_RSP_OKAY }, { id: 2, status: NETIF_RSP_OKAY }]);
  assert.deepEqual(s.delivered.map((d) => d.data[14]), [0]);
  assert.deepEqual([s.svc.stats.txPackets, s.svc.stats.txSpoofed, s.svc.stats.txErrors], [2, 1, 0]);
});

test('transmit refusals: each bad packet answered NETIF_RSP_ERROR in every slot it took, nothing delivered, the ring still served', async () => {
  const s = setup();
  const f = frame('00:16:3e:00:00:02', '00:16:3e:00:00:01', 100);
  s.grant(1, f);
  s.grant(2, tcp4(3000 - 54));
  const cases: [string, () => void, number][] = [
    ['past the page', () => s.tx.put({ gref: 1, offset: 4000, flags: 0, id: 10, size: 114 }), 1],
    ['not granted', () => s.tx.put({ gref: 99, offset: 0, flags: 0, id: 11, size: 114 }), 1],
    ['shorter than an Ethernet header', () => s.tx.put({ gref: 1, offset: 0, flags: 0, id: 12, size: 13 }), 1],
    ['fragments larger than the packet', () => { s.tx.put({ gref: 1, offset: 0, flags: NETTXF_more_data, id: 13, size: 100 }); s.tx.put({ gref: 1, offset: 0, flags: 0, id: 14, size: 101 }); }, 2],
    ['GSO of a frame that is not TCP', () => { s.tx.put({ gref: 1, offset: 0, flags: NETTXF_extra_info, id: 15, size: 114 }); s.tx.putExtra({ type: XEN_NETIF_EXTRA_TYPE_GSO, flags: 0, data: gsoExtra(XEN_NETIF_GSO_TYPE_TCPV4, 1448) }); }, 2],
    ['GSO of a TCP frame cut short', () => { s.tx.put({ gref: 2, offset: 0, flags: NETTXF_extra_info, id: 17, size: 14 + 20 + 19 }); s.tx.putExtra({ type: XEN_NETIF_EXTRA_TYPE_GSO, flags: 0, data: gsoExtra(XEN_NETIF_GSO_TYPE_TCPV4, 1448) }); }, 2],
    ['GSO of TCPv6 claimed for IPv4', () => { s.tx.put({ gref: 2, offset: 0, flags: NETTXF_extra_info, id: 18, size: 3000 }); s.tx.putExtra({ type: XEN_NETIF_EXTRA_TYPE_GSO, flags: 0, data: gsoExtra(XEN_NETIF_GSO_TYPE_TCPV6, 1448) }); }, 2],
    ['an extra of no type, chained to another', () => { s.tx.put({ gref: 1, offset: 0, flags: NETTXF_extra_info, id: 16, size: 114 }); s.tx.putExtra({ type: 0, flags: XEN_NETIF_EXTRA_FLAG_MORE }); s.tx.putExtra({ type: 4, flags: 0 }); }, 3],
    ['more than 20 slots', () => { for (let i = 0; i < 21; i++) s.tx.put({ gref: 1, offset: 0, flags: i < 20 ? NETTXF_more_data : 0, id: 100 + i, size: i === 0 ? 21 * 5 : 5 }); }, 21],
  ];
  for (const [what, put, slots] of cases) {
    put();
    const rsp = await s.transmit();
    assert.equal(rsp.length, slots, what);
    assert.ok(rsp.every((r) => r.status === NETIF_RSP_ERROR || r.status === NETIF_RSP_NULL) && rsp[0]!.status === NETIF_RSP_ERROR, `${what}: ${JSON.stringify(rsp)}`);
  }
  assert.equal(s.delivered.length, 0);
  assert.equal(s.svc.stats.txErrors, cases.length);
  s.tx.put({ gref: 1, offset: 0, flags: 0, id: 1, size: f.length });
  assert.deepEqual(await s.transmit(), [{ id: 1, status: NETIF_RSP_OKAY }]);
  assert.equal(s.delivered.length, 1);
});

test('a packet cut off in the middle of the ring, a producer past its size, a GSO size of 0 or a GSO type other than TCP stops the vif with a log line (as xenvif_set_skb_gso does)', async () => {
  for (const hostile of ['cut', 'overrun', 'gso size 0', 'gso type 3'] as const) {
    const s = setup();
    s.grant(1, tcp4(100));
    if (hostile === 'cut') s.tx.put({ gref: 1, offset: 0, flags: NETTXF_more_data, id: 1, size: 154 });
    if (hostile.startsWith('gso')) {
      s.tx.put({ gref: 1, offset: 0, flags: NETTXF_extra_info, id: 1, size: 154 });
      s.tx.putExtra({ type: XEN_NETIF_EXTRA_TYPE_GSO, flags: 0, data: hostile === 'gso size 0' ? gsoExtra(XEN_NETIF_GSO_TYPE_TCPV4, 0) : gsoExtra(3, 1448) });
    }
    s.tx.push(hostile === 'overrun' ? 300 : undefined);
    s.svc.kickTx();
    await s.svc.idle;
    assert.equal(s.logs.length, 1, hostile);
    assert.match(s.logs[0]!, hostile === 'gso size 0' ? /GSO size must not be zero; vif no longer served/ : hostile === 'gso type 3' ? /bad GSO type 3; vif no longer served/ : /no longer served/);
    assert.equal(s.delivered.length, 0);
    s.svc.send({ data: frame('00:16:3e:00:00:01', '00:16:3e:00:00:02', 10) });
    assert.equal(s.svc.queued, 0, 'nothing queued for a vif no longer served');
  }
});

test('receive: frames wait for buffers; each fills one from offset 0 with its length in status, the checksum flags passed on; large ones span buffers with feature-sg', async () => {
  const s = setup({ rxSg: true });
  const small = frame('00:16:3e:00:00:01', '00:16:3e:00:00:02', 60);
  const big = frame('00:16:3e:00:00:01', '00:16:3e:00:00:02', 9000 - 14, 3);
  s.svc.send({ data: small, csumBlank: true });
  s.svc.send({ data: big, dataValidated: true });
  await s.svc.idle;
  assert.equal(s.svc.queued, 2, 'no buffers posted yet');
  // one buffer: the small frame goes, the big one needs three
  const pages = [30, 31, 32, 33].map((r) => s.grant(r));
  s.rx.put({ id: 0, gref: 30 });
  if (s.rx.push()) s.svc.kickRx();
  await s.svc.idle;
  assert.deepEqual(s.rx.responses(), [{ id: 0, offset: 0, flags: NETRXF_csum_blank | NETRXF_data_validated, status: small.length }]);
  assert.deepEqual(Buffer.from(pages[0]!.subarray(0, small.length)), Buffer.from(small));
  assert.equal(s.svc.queued, 1);
  // two more buffers: not yet enough; the backend asked to be told at three (req_event), so the push notifies
  s.rx.put({ id: 1, gref: 31 });
  s.rx.put({ id: 2, gref: 32 });
  assert.equal(s.rx.push(), false, 'not enough buffers for the waiting frame: no event asked for yet');
  s.rx.put({ id: 3, gref: 33 });
  assert.equal(s.rx.push(), true, 'the third buffer is what the backend waits for');
  s.svc.kickRx();
  await s.svc.idle;
  assert.deepEqual(s.rx.responses(), [
    { id: 1, offset: 0, flags: NETRXF_data_validated | NETRXF_more_data, status: 4096 },
    { id: 2, offset: 0, flags: NETRXF_more_data, status: 4096 },
    { id: 3, offset: 0, flags: 0, status: 9000 - 8192 },
  ]);
  assert.deepEqual(Buffer.concat([pages[1]!, pages[2]!, pages[3]!.subarray(0, 9000 - 8192)]), Buffer.from(big));
  assert.deepEqual(s.notified, [4, 4], 'told on the receive port');
  assert.deepEqual(s.svc.stats, { txPackets: 0, txBytes: 0, txErrors: 0, txSpoofed: 0, rxPackets: 2, rxBytes: small.length + 9000, rxDropped: 0, txMaxSlots: 0, rxMaxSlots: 3, txGsoPackets: 0, rxGsoPackets: 0, rxGsoSegmented: 0 });
});

test('receive limits: a frame larger than a page without feature-sg is dropped, the queue is bounded in frames and bytes, an ungranted buffer is answered with an error', async () => {
  const s = setup({ rxSg: false });
  s.svc.send({ data: frame('00:16:3e:00:00:01', '00:16:3e:00:00:02', 5000) });
  for (let i = 0; i < RX_QUEUE_MAX + 5; i++) s.svc.send({ data: frame('00:16:3e:00:00:01', '00:16:3e:00:00:02', 40, i) });
  await s.svc.idle;
  assert.equal(s.svc.queued, RX_QUEUE_MAX);
  assert.equal(s.svc.stats.rxDropped, 6);
  s.rx.put({ id: 7, gref: 404 });
  s.rx.push();
  s.svc.kickRx();
  await s.svc.idle;
  assert.deepEqual(s.rx.responses(), [{ id: 7, offset: 0, flags: 0, status: NETIF_RSP_ERROR }]);
  assert.equal(s.svc.stats.rxDropped, 7);
  await s.svc.stop();
  assert.equal(s.svc.queued, 0);
  // 64 KiB frames: bounded by their bytes (RX_QUEUE_BYTES) long before their number
  const t = setup({ rxSg: true, rxGso: GSO_MASK_ALL });
  const big = tcp4(65_535 - 54);
  for (let i = 0; i < 60; i++) t.svc.send({ data: big, csumBlank: true, gso: { type: XEN_NETIF_GSO_TYPE_TCPV4, size: 1448 } });
  await t.svc.idle;
  assert.equal(t.svc.queued, Math.ceil(RX_QUEUE_BYTES / 65_535));
  assert.equal(t.svc.hasRoom, false);
  assert.equal(t.svc.stats.rxDropped, 60 - t.svc.queued);
  await t.svc.stop();
});

test('frames wait for buffers no longer than the drain time, then are dropped; later frames still go', async () => {
  const s = setup({ rxDrainMs: 50 });
  for (let i = 0; i < 3; i++) s.svc.send({ data: frame('00:16:3e:00:00:01', '00:16:3e:00:00:02', 40, i) });
  await s.svc.idle;
  assert.equal(s.svc.queued, 3);
  await until(() => s.svc.queued === 0, 2000);
  assert.equal(s.svc.stats.rxDropped, 3, 'dropped by the timer, without any new frame or buffer');
  s.grant(5);
  s.rx.put({ id: 1, gref: 5 });
  s.rx.push();
  const f = frame('00:16:3e:00:00:01', '00:16:3e:00:00:02', 40, 99);
  s.svc.send({ data: f });
  await s.svc.idle;
  assert.deepEqual(s.rx.responses(), [{ id: 1, offset: 0, flags: 0, status: f.length }]);
  assert.equal(s.svc.stats.rxPackets, 1);
});

test('a rate limit (netback\'s credit scheduler): a window\'s bytes go at once, the rest wait on the ring for the next windows; a packet larger than a window still goes', async () => {
  // 3000 bytes per 200 ms window; ten 1000-byte packets
  const s = setup({ txRate: { bytes: 3000, usec: 200_000 } });
  const f = frame('00:16:3e:00:00:02', '00:16:3e:00:00:01', 1000 - 14);
  for (let i = 0; i < 10; i++) {
    s.grant(100 + i, f);
    s.tx.put({ gref: 100 + i, offset: 0, flags: 0, id: i, size: f.length });
  }
  const t0 = performance.now();
  assert.equal((await s.transmit()).length, 3, 'the first window: three packets answered');
  assert.equal(s.delivered.length, 3);
  // the others are taken as windows open: three more each (bounded wait)
  await until(() => s.delivered.length === 10, 5000);
  const took = performance.now() - t0;
  assert.ok(took >= 3 * 200 - 20, `ten packets of 1000 bytes at 3000 per 200 ms need three more windows (took ${took.toFixed(0)} ms)`);
  assert.equal(s.tx.responses().length, 7, 'every one answered once');
  // one packet of 5000 bytes, more than a window holds: it goes once the credit reaches its size
  const big = frame('00:16:3e:00:00:02', '00:16:3e:00:00:01', 4000 - 14);
  s.grant(200, big.subarray(0, 2000));
  s.grant(201, big.subarray(2000));
  s.tx.put({ gref: 200, offset: 0, flags: NETTXF_more_data, id: 20, size: 4000 });
  s.tx.put({ gref: 201, offset: 0, flags: 0, id: 21, size: 2000 });
  s.tx.push();
  s.svc.kickTx();
  await until(() => s.delivered.length === 11, 5000);
  assert.equal(s.delivered[10]!.data.length, 4000);
  await s.svc.stop();
});

test('the backend\'s rate node as Linux\'s netback reads it: "<bytes>,<usecs>", anything else unlimited', () => {
  assert.deepEqual(parseRateNode('62500,50000'), { bytes: 62500, usec: 50000 });
  for (const bad of [undefined, '', '62500', '62500,', ',50000', '0,50000', '62500,0', '1,2,3', '-1,5', '1.5,2']) assert.equal(parseRateNode(bad), null, String(bad));
});

test('the switch learns where each address is, forwards to it alone, floods broadcast and unknown destinations, never back to the sender', () => {
  const got = new Map<string, Uint8Array[]>();
  const port = (name: string): SwitchPort => ({ name, receive: (f) => { got.set(name, [...(got.get(name) ?? []), f.data]); } });
  const sws = new NetSwitches();
  const [a, b, c, x] = ['a', 'b', 'c', 'x'].map(port) as [SwitchPort, SwitchPort, SwitchPort, SwitchPort];
  const sw: NetSwitch = sws.attach('xenbr0', a);
  sws.attach('xenbr0', b);
  sws.attach('xenbr0', c);
  sws.attach('xenbr1', x);
  const A = '00:16:3e:00:00:0a', B = '00:16:3e:00:00:0b';
  const count = () => ['a', 'b', 'c', 'x'].map((n) => got.get(n)?.length ?? 0);
  sw.input(a, { data: frame('ff:ff:ff:ff:ff:ff', A, 28) });
  assert.deepEqual(count(), [0, 1, 1, 0], 'broadcast to every other port of the bridge, not another bridge');
  sw.input(a, { data: frame(B, A, 28) });
  assert.deepEqual(count(), [0, 2, 2, 0], 'B not known yet: flooded');
  sw.input(b, { data: frame(A, B, 28) });
  assert.deepEqual(count(), [1, 2, 2, 0], 'A learnt: to a alone');
  sw.input(a, { data: frame(B, A, 28) });
  assert.deepEqual(count(), [1, 3, 2, 0], 'B learnt: to b alone');
  sw.input(b, { data: frame(B, A, 28).subarray(0, 13) });
  assert.deepEqual(count(), [1, 3, 2, 0], 'a runt is dropped');
  assert.deepEqual(sw.stats, { forwarded: 2, flooded: 2, dropped: 1 });
  sws.detach('xenbr0', b);
  sw.input(a, { data: frame(B, A, 28) });
  assert.deepEqual(count(), [1, 3, 3, 0], 'a port that left is forgotten: flooded again');
  sws.detach('xenbr1', x);
  assert.equal(sws.get('xenbr1'), undefined);
  assert.equal(sws.get('xenbr0'), sw);
});

test('transmit with GSO: one large TCP frame over several slots delivered whole with its GSO type and size, its checksum made partial when the frontend did not leave it blank', async () => {
  const s = setup();
  const pl = 20_000;
  const f = tcp4(pl, false);
  // 20054 bytes: 54 + 946 in the first page, then four pages and a remainder
  s.grant(40, f.subarray(0, 1000), 96);
  for (let i = 0; i < 5; i++) s.grant(41 + i, f.subarray(1000 + i * 4096, 1000 + (i + 1) * 4096));
  s.tx.put({ gref: 40, offset: 96, flags: NETTXF_more_data | NETTXF_extra_info, id: 1, size: f.length });
  s.tx.putExtra({ type: XEN_NETIF_EXTRA_TYPE_GSO, flags: 0, data: gsoExtra(XEN_NETIF_GSO_TYPE_TCPV4, 1448) });
  for (let i = 0; i < 5; i++) {
    const len = Math.min(4096, f.length - 1000 - i * 4096);
    s.tx.put({ gref: 41 + i, offset: 0, flags: i < 4 ? NETTXF_more_data : 0, id: 2 + i, size: len });
  }
  assert.deepEqual(await s.transmit(), [
    { id: 1, status: NETIF_RSP_OKAY }, { id: 0, status: NETIF_RSP_NULL },
    ...[2, 3, 4, 5, 6].map((id) => ({ id, status: NETIF_RSP_OKAY })),
  ]);
  assert.equal(s.delivered.length, 1);
  const d = s.delivered[0]!;
  assert.deepEqual(d.gso, { type: XEN_NETIF_GSO_TYPE_TCPV4, size: 1448 });
  assert.equal(d.csumBlank, true, 'a GSO frame is always partial');
  // the checksum field now holds the pseudo-header's sum (checksum_setup's fixup), the rest as sent
  assert.deepEqual(Buffer.from(d.data), Buffer.from(tcp4(pl, true)));
  assert.equal(s.svc.stats.txGsoPackets, 1);
  assert.equal(s.svc.stats.txMaxSlots, 7);
  assert.equal(s.svc.stats.txErrors, 0);
});

test('receive of a GSO frame by a frontend that takes GSO: one frame over its buffers, the GSO extra in the slot after the first (io/netif.h byte by byte)', async () => {
  const s = setup({ rxSg: true, rxGso: GSO_MASK_ALL });
  const f = tcp4(9000 - 54);
  s.svc.send({ data: f, csumBlank: true, gso: { type: XEN_NETIF_GSO_TYPE_TCPV4, size: 1448 } });
  // three data buffers and the extra's: three are not enough
  const pages = [50, 51, 52, 53].map((r) => s.grant(r));
  for (let i = 0; i < 3; i++) s.rx.put({ id: 0x10 + i, gref: 50 + i });
  s.rx.push();
  s.svc.kickRx();
  await s.svc.idle;
  assert.equal(s.svc.queued, 1, 'waits for a fourth slot for the extra');
  s.rx.put({ id: 0x13, gref: 53 });
  assert.equal(s.rx.push(), true, 'the backend asked to be told at four');
  s.svc.kickRx();
  await s.svc.idle;
  const v = new DataView(s.rxPage.buffer);
  const slot = (i: number) => [...s.rxPage.subarray(64 + i * 8, 64 + i * 8 + 8)];
  assert.equal(v.getUint32(8, true), 4, 'rsp_prod: four responses');
  // netif_rx_response: id, offset, flags (csum_blank | data_validated | more_data | extra_info), status
  assert.deepEqual(slot(0), [0x10, 0, 0, 0, 0x0f, 0, 0x00, 0x10]);
  // netif_extra_info: type GSO (1), flags 0, gso.size 1448 (0x05a8), gso.type TCPV4 (1), pad 0, features 0
  assert.deepEqual(slot(1), [1, 0, 0xa8, 0x05, 1, 0, 0, 0]);
  // the second and third data buffers: id 0x12 with more_data and 4096, id 0x13 with the last 808 bytes
  assert.deepEqual(slot(2), [0x12, 0, 0, 0, 0x04, 0, 0x00, 0x10]);
  assert.deepEqual(slot(3), [0x13, 0, 0, 0, 0x00, 0, 0x28, 0x03]);
  assert.deepEqual(Buffer.concat([pages[0]!, pages[2]!, pages[3]!.subarray(0, 808)]), Buffer.from(f), 'the data in the three data buffers, the extra\'s unused');
  assert.ok(pages[1]!.every((b) => b === 0));
  assert.deepEqual([s.svc.stats.rxPackets, s.svc.stats.rxGsoPackets, s.svc.stats.rxGsoSegmented, s.svc.stats.rxMaxSlots], [1, 1, 0, 4]);
});

test('receive of a GSO frame by a frontend without GSO, or without that type, or without feature-sg: its TCP segments, each in its own buffer with a blank checksum', async () => {
  for (const o of [{ rxSg: true }, { rxSg: true, rxGso: 1 << XEN_NETIF_GSO_TYPE_TCPV6 }, { rxSg: false, rxGso: GSO_MASK_ALL }]) {
    const s = setup(o);
    const f = tcp4(4100);
    s.svc.send({ data: f, csumBlank: true, gso: { type: XEN_NETIF_GSO_TYPE_TCPV4, size: 1448 } });
    await s.svc.idle;
    const pages = [60, 61, 62].map((r) => s.grant(r));
    for (let i = 0; i < 3; i++) s.rx.put({ id: i, gref: 60 + i });
    s.rx.push();
    s.svc.kickRx();
    await s.svc.idle;
    const rsp = s.rx.responses();
    const what = JSON.stringify(o);
    assert.deepEqual(rsp, [0, 1, 2].map((id) => ({ id, offset: 0, flags: NETRXF_csum_blank | NETRXF_data_validated, status: 54 + [1448, 1448, 1204][id]! })), what);
    const h = gsoHeaders(f, { type: XEN_NETIF_GSO_TYPE_TCPV4, size: 1448 })!;
    rsp.forEach((r, i) => {
      const seg = pages[i]!.subarray(0, r.status);
      // total length, id, seq; the rest of the headers as gso.test.ts checks them
      assert.deepEqual([(seg[16]! << 8) | seg[17]!, (seg[18]! << 8) | seg[19]!, new DataView(seg.buffer).getUint32(38)], [r.status - 14, 1 + i, 1000 + i * 1448], what);
      assert.equal(seg[47], i === 2 ? 0x18 : 0x10, 'PSH on the last only');
      assert.deepEqual(Buffer.from(seg.subarray(54)), Buffer.from(f.subarray(h.hlen + i * 1448, h.hlen + i * 1448 + 1448)));
    });
    assert.deepEqual([s.svc.stats.rxPackets, s.svc.stats.rxGsoPackets, s.svc.stats.rxGsoSegmented, s.svc.stats.rxDropped], [3, 0, 1, 0], what);
  }
  // larger than netif carries (a tap's 64 KiB IP packet behind its Ethernet header): segmented even for a GSO frontend
  const l = setup({ rxSg: true, rxGso: GSO_MASK_ALL });
  l.svc.send({ data: tcp4(65_535 + 14 - 54), csumBlank: true, gso: { type: XEN_NETIF_GSO_TYPE_TCPV4, size: 1448 } });
  await l.svc.idle;
  assert.deepEqual([l.svc.queued, l.svc.stats.rxGsoSegmented], [Math.ceil((65_535 + 14 - 54) / 1448), 1]);
  await l.svc.stop();
  // a frame claiming GSO that is not TCP (from a port that did not check it) is dropped, not segmented
  const s = setup({ rxSg: true });
  s.svc.send({ data: frame('00:16:3e:00:00:01', '00:16:3e:00:00:02', 3000), gso: { type: XEN_NETIF_GSO_TYPE_TCPV4, size: 1448 } });
  await s.svc.idle;
  assert.deepEqual([s.svc.queued, s.svc.stats.rxDropped], [0, 1]);
});
