// A vif's tap (tap.ts, vif_bridge.ts) in a network namespace of the test's
// own with a Linux bridge holding 10.77.0.1: named as netback names it,
// joined to the bridge, up, with the MTU and address vif-bridge gives; the
// test plays the guest's netfront, answering ARP for 10.77.0.2, so a UDP
// datagram sent in the namespace comes out of the tap, and datagrams it
// writes (checksum left blank, checksum filled in, checksum wrong) are
// taken or refused by the namespace's stack as a guest's would be. Closing
// the tap removes the interface; a missing bridge or one that is not a
// bridge is the clear error; hostile frames are refused and counted. With
// TSO on, the test plays a guest's TCP receiver: the namespace's stack sends
// it 64 KiB frames with their GSO type and size, and takes one it writes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { haveNetAdmin, Netns } from '../../testing/netns.js';
import { until } from '../../testing/wait.js';
import { csumPlace, fillCsum, TapDevice, VIF_HWADDR, VNET_HDR_LEN, vnetFrames } from './tap.js';
import type { NetFrame } from './netback.js';
import { vifBridgeOnline, VifBridgeError } from '../vif_bridge.js';
import { fillTcpCsum, gsoHeaders, segmentTcp, XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6 } from './gso.js';
import { nicSpecOf } from '../net.js';

const GUEST_MAC = Buffer.from([0x00, 0x16, 0x3e, 0x00, 0x00, 0x07]);
const GUEST_IP = Buffer.from([10, 77, 0, 2]);
const HOST_IP = Buffer.from([10, 77, 0, 1]);

const sum16 = (b: Uint8Array, start = 0, end = b.length): number => {
  let s = 0;
  for (let i = start; i + 1 < end; i += 2) s += (b[i]! << 8) | b[i + 1]!;
  if ((end - start) & 1) s += b[end - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
};

/** An Ethernet frame carrying an IPv4 UDP datagram; its checksum `full`, left `blank` (the pseudo-header's sum), or `bad`. */
function udpFrame(dstMac: Uint8Array, srcPort: number, dstPort: number, payload: string, csum: 'full' | 'blank' | 'bad'): Buffer {
  const data = Buffer.from(payload);
  const udp = Buffer.alloc(8 + data.length);
  udp.writeUInt16BE(srcPort, 0);
  udp.writeUInt16BE(dstPort, 2);
  udp.writeUInt16BE(udp.length, 4);
  data.copy(udp, 8);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45; ip.writeUInt16BE(20 + udp.length, 2); ip[8] = 64; ip[9] = 17;
  GUEST_IP.copy(ip, 12); HOST_IP.copy(ip, 16);
  ip.writeUInt16BE(~sum16(ip) & 0xffff, 10);
  const pseudo = Buffer.concat([GUEST_IP, HOST_IP, Buffer.from([0, 17, udp.length >> 8, udp.length & 0xff])]);
  const pseudoSum = sum16(pseudo);
  const frame = Buffer.concat([Buffer.from(dstMac), GUEST_MAC, Buffer.from([0x08, 0x00]), ip, udp]);
  frame.writeUInt16BE(pseudoSum, 14 + 20 + 6);
  if (csum !== 'blank') fillCsum(frame, 14 + 20, 6);
  if (csum === 'bad') frame[14 + 20 + 7]! ^= 0x55;
  return frame;
}

/** The ARP reply for 10.77.0.2 to the request `req`, as the guest's stack would send it. */
function arpReply(req: Uint8Array): Buffer | null {
  const r = Buffer.from(req);
  if (r.readUInt16BE(12) !== 0x0806 || r.readUInt16BE(20) !== 1 || !r.subarray(38, 42).equals(GUEST_IP)) return null;
  const out = Buffer.alloc(42);
  r.copy(out, 0, 6, 12); GUEST_MAC.copy(out, 6); out.writeUInt16BE(0x0806, 12);
  out.writeUInt16BE(1, 14); out.writeUInt16BE(0x0800, 16); out[18] = 6; out[19] = 4; out.writeUInt16BE(2, 20);
  GUEST_MAC.copy(out, 22); GUEST_IP.copy(out, 28); r.copy(out, 32, 22, 28); r.copy(out, 38, 28, 32);
  return out;
}

const lines = (p: ChildProcess): { text: () => string } => {
  let s = '';
  p.stdout!.on('data', (b: Buffer) => { s += b.toString(); });
  p.stderr!.on('data', (b: Buffer) => { s += b.toString(); });
  return { text: () => s };
};

test('a vif\'s tap in a namespace: vif7.0 on bridge br0, up, MTU and address as vif-bridge sets them; UDP both ways with the checksum blank, full or wrong; gone on close', { timeout: 60_000 }, async (t) => {
  if (!haveNetAdmin(t)) return;
  const ns = Netns.create('xenode-tap');
  let listener: ChildProcess | undefined;
  let tap: TapDevice | null = null;
  try {
    ns.ip('link', 'add', 'br0', 'type', 'bridge');
    ns.ip('addr', 'add', '10.77.0.1/24', 'dev', 'br0');
    ns.ip('link', 'set', 'br0', 'up');
    const frames: NetFrame[] = [];
    const r = ns.run(() => vifBridgeOnline({ name: 'vif7.0', bridge: 'br0', mtu: 1400, onFrame: (f) => {
      frames.push(f);
      const reply = arpReply(f.data);
      if (reply) tap!.send({ data: reply });
    } }));
    tap = r.tap;
    assert.ok(tap, r.line);
    assert.match(r.line, /tap vif7\.0 on host bridge br0/);
    const link = ns.link('vif7.0')!;
    assert.equal(link['master'], 'br0');
    assert.equal(link['mtu'], 1400);
    assert.equal(link['address'], VIF_HWADDR);
    assert.ok((link['flags'] as string[]).includes('UP'), JSON.stringify(link));
    // no carrier until a frontend connects (the bridge does not forward to it)
    assert.ok((link['flags'] as string[]).includes('NO-CARRIER'), JSON.stringify(link));
    tap.setCarrier(true);
    await until('the bridge port to forward', () => /forwarding/.test(ns.exec('bridge', ['link', 'show', 'dev', 'vif7.0'])), 10_000, 50);

    // host -> guest: the stack ARPs for 10.77.0.2 (answered above), then sends the datagram out of the tap
    ns.exec(process.execPath, ['-e', `const s=require('dgram').createSocket('udp4');s.send('to the guest',4444,'10.77.0.2',()=>s.close())`]);
    const udp = await until('the datagram to come out of the tap', () => frames.find((f) => f.data.length > 42 && Buffer.from(f.data).includes('to the guest')), 10_000, 20);
    assert.ok(frames.some((f) => f.data[12] === 0x08 && f.data[13] === 0x06), 'the ARP request came out too');
    assert.deepEqual([...udp.data.subarray(0, 6)], [...GUEST_MAC], 'to the guest\'s address, learnt from its ARP reply');
    // a blank checksum (the tap offers checksum offload) or a full one; either way the guest's stack gets a good one
    const d = Buffer.from(udp.data);
    if (udp.csumBlank) {
      assert.deepEqual(csumPlace(d), { start: 34, offset: 6 });
      fillCsum(d, 34, 6);
    }
    const pseudo = Buffer.concat([d.subarray(26, 34), Buffer.from([0, 17]), d.subarray(38, 40)]);
    assert.equal((sum16(pseudo) + sum16(d, 34)) % 0xffff, 0, `UDP checksum of ${d.toString('hex')}`);

    // guest -> host: a listener on 10.77.0.1 gets the blank-checksum and full-checksum datagrams, not the bad one
    listener = ns.spawn(process.execPath, ['-e', `const s=require('dgram').createSocket('udp4');s.on('message',(m)=>console.log('got '+m));s.bind(5555,'10.77.0.1',()=>console.log('ready'))`]);
    const out = lines(listener);
    await until('the listener to be ready', () => out.text().includes('ready'), 10_000, 20);
    const brMac = Buffer.from(String(ns.link('br0')!['address']).split(':').map((h) => parseInt(h, 16)));
    assert.equal(tap.send({ data: udpFrame(brMac, 1000, 5555, 'wrong checksum', 'bad') }), true);
    assert.equal(tap.send({ data: udpFrame(brMac, 1000, 5555, 'blank checksum', 'blank'), csumBlank: true }), true);
    assert.equal(tap.send({ data: udpFrame(brMac, 1000, 5555, 'full checksum', 'full') }), true);
    await until('both good datagrams to arrive', () => out.text().includes('got blank checksum') && out.text().includes('got full checksum'), 10_000, 20);
    assert.doesNotMatch(out.text(), /wrong checksum/, 'the stack checks checksums, so the blank one was taken as offloaded');

    // what a hostile frontend might hand over: refused and counted, nothing thrown
    const before = tap.stats.writeDropped;
    assert.equal(tap.send({ data: new Uint8Array(5) }), false);
    assert.equal(tap.send({ data: new Uint8Array(70_000) }), false);
    assert.equal(tap.send({ data: Buffer.alloc(60, 0xff), csumBlank: true }), false, 'a blank checksum with no place for it');
    assert.equal(tap.stats.writeDropped, before + 3);
    assert.ok(tap.stats.written >= 4 && tap.stats.read >= 2, JSON.stringify(tap.stats));

    tap.close();
    await until('vif7.0 to be gone', () => ns.link('vif7.0') === null, 10_000, 20);
    assert.equal(tap.send({ data: udpFrame(brMac, 1, 2, 'x', 'full') }), false, 'a closed tap takes nothing');
  } finally {
    tap?.close();
    listener?.kill();
    ns.delete();
  }
});

test('vif-route\'s spec: it needs ip=; a routed vif is not a bridged one; in a driver domain too; other scripts refused', () => {
  const spec = { mac: '', bridge: 'xenbr0', backend: '0', trusted: true };
  assert.throws(() => nicSpecOf({ ...spec, script: 'vif-route' }), /script vif-route: ip= must name the guest's addresses/);
  const r = nicSpecOf({ ...spec, script: '/etc/xen/scripts/vif-route', ip: '10.0.0.2', gatewaydev: 'eth1' });
  assert.deepEqual([r.route, r.hostBridge, r.ip, r.gatewaydev], [true, false, '10.0.0.2', 'eth1']);
  assert.equal(nicSpecOf({ ...spec, backend: 'netdd', script: 'vif-route', ip: '10.0.0.2' }).backend, 'netdd');
  assert.throws(() => nicSpecOf({ ...spec, backend: 'netdd', script: 'vif-bridge' }), /a driver domain puts its vifs on the host's bridge when there is one/);
  assert.throws(() => nicSpecOf({ ...spec, script: 'vif-nat', ip: '10.0.0.2' }), /script vif-nat: vif hotplug scripts are not run/);
});

test('vif-bridge\'s refusals: a missing bridge names itself and how to make it; an interface that is not a bridge; without script=vif-bridge a missing bridge means the in-process switch', { timeout: 30_000 }, (t) => {
  // the vif asks for the host's bridge by naming the script, as xl.cfg writes it
  const spec = { mac: '', bridge: 'nobr0', backend: '0', trusted: true };
  assert.equal(nicSpecOf({ ...spec, script: 'vif-bridge' }).hostBridge, true);
  assert.equal(nicSpecOf({ ...spec, script: '/etc/xen/scripts/vif-bridge' }).hostBridge, true);
  assert.equal(nicSpecOf(spec).hostBridge, false);
  if (!haveNetAdmin(t)) return;
  const ns = Netns.create('xenode-tap');
  try {
    const o = { name: 'vif8.0', mtu: 1500, onFrame: () => {} };
    assert.throws(() => ns.run(() => vifBridgeOnline({ ...o, bridge: 'nobr0', required: true })),
      (e: Error) => e instanceof VifBridgeError && /vif8\.0: Could not find bridge device nobr0 .*'ip link add nobr0 type bridge && ip link set nobr0 up'/.test(e.message));
    const sw = ns.run(() => vifBridgeOnline({ ...o, bridge: 'nobr0' }));
    assert.equal(sw.tap, null);
    assert.match(sw.line, /no host bridge nobr0: on the in-process switch nobr0/);
    assert.throws(() => ns.run(() => vifBridgeOnline({ ...o, bridge: 'lo' })), /vif8\.0: lo is not a bridge/);
    assert.equal(ns.link('vif8.0'), null, 'the tap made for it is gone again');
    assert.equal(ns.link('nobr0'), null, 'no bridge was made');
  } finally {
    ns.delete();
  }
});

/** A TCP/IPv4 frame from the guest (10.77.0.2) to the host (10.77.0.1), its checksums filled in (the TCP one partial when `partial`). */
function tcpFrame(dstMac: Uint8Array, sport: number, dport: number, seq: number, ack: number, flags: number, payload: Uint8Array, opts = new Uint8Array(0), partial = false): Buffer {
  const ip = Buffer.alloc(20);
  const tcp = Buffer.alloc(20 + opts.length);
  ip[0] = 0x45; ip.writeUInt16BE(20 + tcp.length + payload.length, 2); ip.writeUInt16BE(0x4000, 6); ip[8] = 64; ip[9] = 6;
  GUEST_IP.copy(ip, 12); HOST_IP.copy(ip, 16);
  ip.writeUInt16BE(~sum16(ip) & 0xffff, 10);
  tcp.writeUInt16BE(sport, 0); tcp.writeUInt16BE(dport, 2); tcp.writeUInt32BE(seq >>> 0, 4); tcp.writeUInt32BE(ack >>> 0, 8);
  tcp[12] = (tcp.length / 4) << 4; tcp[13] = flags; tcp.writeUInt16BE(0xffff, 14);
  tcp.set(opts, 20);
  const f = Buffer.concat([Buffer.from(dstMac), GUEST_MAC, Buffer.from([0x08, 0x00]), ip, tcp, payload]);
  const h = gsoHeaders(f, { type: XEN_NETIF_GSO_TYPE_TCPV4, size: 1 << 15 })!;
  if (partial) {
    const pseudo = Buffer.concat([GUEST_IP, HOST_IP, Buffer.from([0, 6, (f.length - 34) >> 8, (f.length - 34) & 0xff])]);
    f.writeUInt16BE(sum16(pseudo), 34 + 16);
  } else {
    fillTcpCsum(f, h);
  }
  return f;
}
const SYN = 0x02, RST = 0x04, PSH = 0x08, ACK = 0x10, FIN = 0x01;

test('TCP segmentation offload through the tap (TUN_F_TSO4): the host\'s stack hands the guest frames of up to 64 KiB with their GSO size, and takes one the guest writes whole', { timeout: 60_000 }, async (t) => {
  if (!haveNetAdmin(t)) return;
  const ns = Netns.create('xenode-tso');
  let tap: TapDevice | null = null;
  try {
    ns.ip('link', 'add', 'br0', 'type', 'bridge');
    ns.ip('addr', 'add', '10.77.0.1/24', 'dev', 'br0');
    ns.ip('link', 'set', 'br0', 'up');
    // the guest's side of one TCP connection to 10.77.0.2:7000: SYN-ACK (MSS 1460), ACK what comes in order, FIN back
    const ISS = 5000;
    let next = 0, closed = false;
    const got: Buffer[] = [];
    const gsoFrames: NetFrame[] = [];
    const rsts: Buffer[] = [];
    const onFrame = (f: NetFrame): void => {
      const reply = arpReply(f.data);
      if (reply) { tap!.send({ data: reply }); return; }
      const d = Buffer.from(f.data);
      if (d.readUInt16BE(12) !== 0x0800 || d[23] !== 6) return;
      const l4 = 14 + (d[14]! & 15) * 4, hl = (d[l4 + 12]! >> 4) * 4;
      const sport = d.readUInt16BE(l4), dport = d.readUInt16BE(l4 + 2), seq = d.readUInt32BE(l4 + 4), flags = d[l4 + 13]!;
      const mac = d.subarray(6, 12);
      if (flags & RST) { rsts.push(d); return; }
      if (dport !== 7000) return;
      if (f.gso) gsoFrames.push(f);
      if (flags & SYN) {
        next = (seq + 1) >>> 0;
        tap!.send({ data: tcpFrame(mac, 7000, sport, ISS, next, SYN | ACK, new Uint8Array(0), Uint8Array.from([2, 4, 0x05, 0xb4])) });
        return;
      }
      const payload = d.subarray(l4 + hl, 14 + d.readUInt16BE(16));
      if (seq === next && payload.length) { got.push(Buffer.from(payload)); next = (next + payload.length) >>> 0; }
      if (flags & FIN && seq + payload.length === next) { next = (next + 1) >>> 0; closed = true; }
      tap!.send({ data: tcpFrame(mac, 7000, sport, ISS + 1, next, ACK | (closed && flags & FIN ? FIN : 0), new Uint8Array(0)) });
    };
    const r = ns.run(() => vifBridgeOnline({ name: 'vif9.0', bridge: 'br0', mtu: 1500, onFrame }));
    tap = r.tap;
    assert.ok(tap, r.line);
    assert.equal(tap.setTso(true, false), null, 'the tun driver takes TSO');
    tap.setCarrier(true);
    await until('the bridge port to forward', () => /forwarding/.test(ns.exec('bridge', ['link', 'show', 'dev', 'vif9.0'])), 10_000, 50);
    // 1 MiB from the host's stack in the namespace
    const MIB = 1 << 20;
    const sent = ns.spawn(process.execPath, ['-e', `const b=Buffer.alloc(${MIB});for(let i=0;i<b.length;i++)b[i]=(i*31+7)&255;const c=require('net').connect(7000,'10.77.0.2',()=>{c.end(b)});c.resume();c.on('end',()=>process.exit(0));c.on('error',(e)=>{console.error(e.message);process.exit(1)})`]);
    const out = lines(sent);
    await until('all of it to arrive', () => closed || undefined, 30_000, 20).catch((e: Error) => { throw new Error(`${e.message}: ${Buffer.concat(got).length} bytes; ${out.text()}`); });
    const all = Buffer.concat(got);
    assert.equal(all.length, MIB);
    const want = Buffer.alloc(MIB);
    for (let i = 0; i < want.length; i++) want[i] = (i * 31 + 7) & 255;
    assert.ok(all.equals(want), 'the bytes the host sent, in order');
    assert.ok(gsoFrames.length > 0, `some frames came as GSO: ${JSON.stringify(tap.stats)}`);
    for (const f of gsoFrames) {
      assert.equal(f.gso!.type, XEN_NETIF_GSO_TYPE_TCPV4);
      assert.ok(f.gso!.size > 0 && f.gso!.size <= 1460, `GSO size ${f.gso!.size} within the MSS`);
      assert.equal(f.csumBlank, true);
      // cut here as a non-GSO guest would get it: segments no larger than the MTU, each checksum right
      const h = gsoHeaders(f.data, f.gso!)!;
      for (const seg of segmentTcp(f.data, h, f.gso!.size, true)) {
        assert.ok(seg.length <= 1514);
        const ps = Buffer.concat([seg.subarray(26, 34), Buffer.from([0, 6, (seg.length - h.l4) >> 8, (seg.length - h.l4) & 0xff])]);
        assert.equal((sum16(ps) + sum16(seg, h.l4)) % 0xffff, 0, 'TCP checksum');
      }
    }
    assert.ok(Math.max(...gsoFrames.map((f) => f.data.length)) > 1514, 'frames larger than the MTU');
    assert.equal(tap.stats.readGso, gsoFrames.length);

    // guest -> host: one 20000-byte GSO frame, no ACK flag, to a closed port: the host's RST acknowledges all
    // of it at once (seq + its whole length), so the stack took it as one frame
    const brMac = Buffer.from(String(ns.link('br0')!['address']).split(':').map((x) => parseInt(x, 16)));
    const big = tcpFrame(brMac, 7001, 9, 0x10000, 0, PSH, Uint8Array.from({ length: 20_000 }, (_, i) => i & 0xff), undefined, true);
    assert.equal(tap.send({ data: big, csumBlank: true, gso: { type: XEN_NETIF_GSO_TYPE_TCPV4, size: 1448 } }), true);
    const rst = await until('the host\'s RST', () => rsts.find((d) => d.readUInt16BE(36) === 7001), 10_000, 20);
    assert.equal(rst.readUInt32BE(34 + 8), 0x10000 + 20_000, 'RST acknowledging the whole frame');
    assert.equal(tap.stats.writtenGso, 1);
    // a GSO frame that is not TCP is not written
    assert.equal(tap.send({ data: udpFrame(brMac, 1, 2, 'x'.repeat(3000), 'blank'), csumBlank: true, gso: { type: XEN_NETIF_GSO_TYPE_TCPV4, size: 1448 } }), false);
  } finally {
    tap?.close();
    ns.delete();
  }
});

test('frames as a tap\'s read gives them (virtio_net_hdr): GSO TCPv4 and TCPv6 passed on whole, the ECN bit segmented, UDP and other types, non-TCP, a size of 0 and bad lengths dropped, never thrown', () => {
  /** struct virtio_net_hdr then the frame, in a buffer with room to spare */
  const read = (flags: number, gsoType: number, gsoSize: number, frame: Uint8Array, room = 70_000) => {
    const b = new Uint8Array(room);
    const v = new DataView(b.buffer);
    v.setUint8(0, flags); v.setUint8(1, gsoType); v.setUint16(2, 54, true); v.setUint16(4, gsoSize, true); v.setUint16(6, 34, true); v.setUint16(8, 16, true);
    b.set(frame, VNET_HDR_LEN);
    return { b, n: VNET_HDR_LEN + frame.length };
  };
  const mac = Buffer.from('fe0000000001', 'hex');
  const big = tcpFrame(mac, 1, 2, 100, 0, ACK | PSH | 0x80, new Uint8Array(10_000), undefined, true);
  const NEEDS_CSUM = 1;
  let r = read(NEEDS_CSUM, 1, 1448, big);
  let out = vnetFrames(r.b, r.n)!;
  assert.equal(out.gso, 'whole');
  assert.deepEqual(out.frames.map((f) => [f.data.length, f.csumBlank, f.gso]), [[big.length, true, { type: XEN_NETIF_GSO_TYPE_TCPV4, size: 1448 }]]);
  // without NEEDS_CSUM the checksum field is made partial (the pseudo-header's sum)
  const full = Buffer.from(big); fillTcpCsum(full, gsoHeaders(full, { type: 1, size: 1448 })!);
  r = read(0, 1, 1448, full);
  assert.deepEqual(Buffer.from(vnetFrames(r.b, r.n)!.frames[0]!.data), big);
  // VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN: cut here, CWR on the first segment only
  r = read(NEEDS_CSUM, 0x81, 1448, big);
  out = vnetFrames(r.b, r.n)!;
  assert.equal(out.gso, 'segmented');
  assert.deepEqual(out.frames.map((f) => f.data.length), [...Array(6).fill(54 + 1448), 54 + 10_000 - 6 * 1448]);
  assert.deepEqual(out.frames.map((f) => f.data[47]! & 0x80), [0x80, 0, 0, 0, 0, 0, 0]);
  assert.ok(out.frames.every((f) => f.csumBlank && !f.gso));
  // VIRTIO_NET_HDR_GSO_TCPV6 (4) is netif's TCPV6 (2)
  const v6 = Buffer.from(big);
  const six = Buffer.concat([v6.subarray(0, 12), Buffer.from('86dd' + '60000000' + '0000' + '06' + '40' + '20010db8000000000000000000000001' + '20010db8000000000000000000000002', 'hex'), v6.subarray(34)]);
  r = read(NEEDS_CSUM, 4, 1440, six);
  assert.deepEqual(vnetFrames(r.b, r.n)!.frames[0]!.gso, { type: XEN_NETIF_GSO_TYPE_TCPV6, size: 1440 });
  const udp = udpFrame(mac, 1, 2, 'u'.repeat(4000), 'blank');
  const refused: [string, { b: Uint8Array; n: number }][] = [
    ['UFO (VIRTIO_NET_HDR_GSO_UDP)', read(NEEDS_CSUM, 3, 1448, udp)],
    ['USO (VIRTIO_NET_HDR_GSO_UDP_L4)', read(NEEDS_CSUM, 5, 1448, udp)],
    ['TCPv4 GSO of a UDP frame', read(NEEDS_CSUM, 1, 1448, udp)],
    ['TCPv6 GSO of an IPv4 frame', read(NEEDS_CSUM, 4, 1448, big)],
    ['a GSO size of 0', read(NEEDS_CSUM, 1, 0, big)],
    ['an unknown GSO type', read(NEEDS_CSUM, 0x7f, 1448, big)],
    ['a GSO frame cut inside its TCP header', read(NEEDS_CSUM, 1, 1448, big.subarray(0, 50))],
    ['shorter than an Ethernet header', read(0, 0, 0, big.subarray(0, 10))],
    ['longer than was read (tun says the whole length)', { b: read(0, 0, 0, big.subarray(0, 1990), 2000).b, n: VNET_HDR_LEN + big.length }],
    ['a frame over 64 KiB without GSO', read(0, 0, 0, new Uint8Array(65_536))],
    ['a partial checksum past the frame', read(NEEDS_CSUM, 0, 0, big.subarray(0, 40))],
  ];
  for (const [what, x] of refused) assert.equal(vnetFrames(x.b, x.n), null, what);
});
