// TCP segmentation against what Linux's skb_segment (tcp_gso_segment over
// inet_gso_segment / ipv6_gso_segment) gives for the same frame: every header
// field of every segment written out by hand, the payload cut at the GSO size
// with the last segment shorter, the checksums recomputed here independently.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  fillTcpCsum, GSO_MAX_SEGS, gsoHeaders, segmentTcp, setPartialCsum, XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6,
} from './gso.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const ETH4 = hex('00163e000002 00163e000001 0800');
const ETH6 = hex('00163e000002 00163e000001 86dd');
/** TCP: ports 40000 -> 5001, seq 0xfffffc18 (wraps in the second segment), ack 0x01020304, doff 8, flags CWR|ECE|ACK|PSH|FIN, window 0x1f5, check 0, urg 0, a timestamp option */
const TCP = hex('9c40 1389 fffffc18 01020304 8 0 d9 01f5 0000 0000 0101080a 00000011 00000022');
const payload = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff);
const cat = (...a: Uint8Array[]) => Uint8Array.from(Buffer.concat(a));
const u16 = (d: Uint8Array, at: number) => (d[at]! << 8) | d[at + 1]!;
const u32 = (d: Uint8Array, at: number) => ((d[at]! << 24) | (d[at + 1]! << 16) | (d[at + 2]! << 8) | d[at + 3]!) >>> 0;

/** RFC 1071 over the given byte strings, each padded to even length on its own: the folded sum */
function rfc1071(...parts: Uint8Array[]): number {
  let s = 0;
  for (const p of parts) for (let i = 0; i < p.length; i += 2) s += (p[i]! << 8) | (p[i + 1] ?? 0);
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return s;
}
const be16 = (v: number) => Uint8Array.from([v >> 8, v & 0xff]);
function pseudo(v6: boolean, ip: Uint8Array, tcpLen: number): Uint8Array {
  return v6 ? cat(ip.subarray(8, 40), hex('0000'), be16(tcpLen), hex('000000 06')) : cat(ip.subarray(12, 20), hex('00 06'), be16(tcpLen));
}

/** An IPv4 header with one option word (ihl 6): DF, id 0xfffe (wraps), TTL 64, 10.0.0.1 -> 10.0.0.2, its checksum zero and total length left 0: segmentation sets both */
const IP4 = hex('46 00 0000 fffe 4000 40 06 0000 0a000001 0a000002 01010100');
/** An IPv6 header, then a hop-by-hop header (8 bytes, PadN) whose next header is TCP: 2001:db8::1 -> 2001:db8::2 */
const IP6 = hex('60000000 0000 00 40 20010db8000000000000000000000001 20010db8000000000000000000000002 06 00 0104 00000000');

test('TCPv4: three segments of 1000, 1000 and 501 bytes as skb_segment cuts them; lengths, ids, sequence numbers, flags, checksums', () => {
  const pl = payload(2501);
  const d = cat(ETH4, IP4, TCP, pl);
  const h = gsoHeaders(d, { type: XEN_NETIF_GSO_TYPE_TCPV4, size: 1000 });
  assert.deepEqual(h, { v6: false, l3: 14, l4: 38, hlen: 70, segs: 3 });
  for (const fill of [false, true]) {
    const segs = segmentTcp(d, h!, 1000, fill);
    assert.deepEqual(segs.map((s) => s.length), [1070, 1070, 571]);
    // by hand: IPv4 total length (ip + tcp + payload), id one more each (wrapping), TCP seq + 1000 each
    // (wrapping), FIN and PSH on the last only, CWR on the first only, ECE and ACK on all
    const want = [
      { totLen: 24 + 32 + 1000, id: 0xfffe, seq: 0xfffffc18, flags: 0xd0 },
      { totLen: 24 + 32 + 1000, id: 0xffff, seq: 0x00000000, flags: 0x50 },
      { totLen: 24 + 32 + 501, id: 0x0000, seq: 0x000003e8, flags: 0x59 },
    ];
    segs.forEach((s, i) => {
      const ip = s.subarray(14, 38), tcp = s.subarray(38);
      assert.deepEqual(s.subarray(0, 14), ETH4, 'Ethernet header copied');
      assert.equal(u16(ip, 2), want[i]!.totLen, `segment ${i}: total length`);
      assert.equal(u16(ip, 4), want[i]!.id, `segment ${i}: id`);
      // everything else of the IP header (version, ihl, tos, DF, TTL, protocol, addresses, option) copied
      assert.deepEqual([...ip.subarray(0, 2), ...ip.subarray(6, 10), ...ip.subarray(12)], [...IP4.subarray(0, 2), ...IP4.subarray(6, 10), ...IP4.subarray(12)]);
      assert.equal(rfc1071(ip), 0xffff, `segment ${i}: IPv4 header checksum`);
      assert.equal(u32(tcp, 4), want[i]!.seq, `segment ${i}: seq`);
      assert.equal(tcp[13], want[i]!.flags, `segment ${i}: flags`);
      // ports, ack, data offset, window, urgent pointer, options copied
      assert.deepEqual([...tcp.subarray(0, 4), ...tcp.subarray(8, 13), ...tcp.subarray(14, 16), ...tcp.subarray(18, 32)], [...TCP.subarray(0, 4), ...TCP.subarray(8, 13), ...TCP.subarray(14, 16), ...TCP.subarray(18, 32)]);
      assert.deepEqual(tcp.subarray(32), pl.subarray(i * 1000, i * 1000 + 1000), `segment ${i}: its payload`);
      const ps = pseudo(false, ip, tcp.length);
      if (fill) assert.equal(rfc1071(ps, tcp), 0xffff, `segment ${i}: TCP checksum filled in`);
      else assert.equal(u16(tcp, 16), rfc1071(ps), `segment ${i}: TCP checksum partial (the pseudo-header's sum)`);
    });
  }
});

test('TCPv6 after a hop-by-hop header: payload length counts the extension header, no id, the same sequence and flags; an odd last segment', () => {
  const pl = payload(3 * 1440 + 7);
  const d = cat(ETH6, IP6, TCP, pl);
  const h = gsoHeaders(d, { type: XEN_NETIF_GSO_TYPE_TCPV6, size: 1440 });
  assert.deepEqual(h, { v6: true, l3: 14, l4: 62, hlen: 94, segs: 4 });
  for (const fill of [false, true]) {
    const segs = segmentTcp(d, h!, 1440, fill);
    assert.deepEqual(segs.map((s) => s.length), [1534, 1534, 1534, 101]);
    const want = [
      { plen: 8 + 32 + 1440, seq: 0xfffffc18, flags: 0xd0 },
      { plen: 8 + 32 + 1440, seq: 0x000001b8, flags: 0x50 },
      { plen: 8 + 32 + 1440, seq: 0x00000758, flags: 0x50 },
      { plen: 8 + 32 + 7, seq: 0x00000cf8, flags: 0x59 },
    ];
    segs.forEach((s, i) => {
      const ip = s.subarray(14, 62), tcp = s.subarray(62);
      assert.equal(u16(ip, 4), want[i]!.plen, `segment ${i}: payload length`);
      assert.deepEqual([...ip.subarray(0, 4), ...ip.subarray(6)], [...IP6.subarray(0, 4), ...IP6.subarray(6)], 'the rest of the IPv6 header and the hop-by-hop header copied');
      assert.equal(u32(tcp, 4), want[i]!.seq);
      assert.equal(tcp[13], want[i]!.flags);
      assert.deepEqual(tcp.subarray(32), pl.subarray(i * 1440, i * 1440 + 1440));
      const ps = pseudo(true, ip, tcp.length);
      if (fill) assert.equal(rfc1071(ps, tcp), 0xffff, `segment ${i}: TCP checksum filled in`);
      else assert.equal(u16(tcp, 16), rfc1071(ps), `segment ${i}: partial`);
    });
  }
});

test('a payload that fits in one segment comes back as one frame; a partial checksum made and filled in', () => {
  const d = cat(ETH4, IP4, TCP, payload(99));
  const h = gsoHeaders(d, { type: XEN_NETIF_GSO_TYPE_TCPV4, size: 1448 })!;
  assert.equal(h.segs, 1);
  const [s] = segmentTcp(d, h, 1448, false);
  assert.equal(u16(s!, 16), 24 + 32 + 99);
  assert.equal(s![38 + 13], 0xd9, 'FIN, PSH and CWR kept: first and last at once');
  // setPartialCsum then filling it in gives the same as filling in from scratch
  const a = Uint8Array.from(s!), b = Uint8Array.from(s!);
  setPartialCsum(a, h);
  assert.equal(u16(a, 38 + 16), rfc1071(pseudo(false, a.subarray(14, 38), a.length - 38)));
  fillTcpCsum(b, h);
  assert.equal(rfc1071(pseudo(false, b.subarray(14, 38), b.length - 38), b.subarray(38)), 0xffff);
  // a header-only frame is one segment of no payload
  const bare = cat(ETH4, IP4, TCP);
  assert.equal(segmentTcp(bare, gsoHeaders(bare, { type: XEN_NETIF_GSO_TYPE_TCPV4, size: 1 })!, 1, true)[0]!.length, 70);
});

test('what is not a GSO TCP frame of its type is refused (null), never thrown', () => {
  const v4 = cat(ETH4, IP4, TCP, payload(3000)), v6 = cat(ETH6, IP6, TCP, payload(3000));
  const ok4 = { type: XEN_NETIF_GSO_TYPE_TCPV4, size: 1000 }, ok6 = { type: XEN_NETIF_GSO_TYPE_TCPV6, size: 1000 };
  assert.ok(gsoHeaders(v4, ok4) && gsoHeaders(v6, ok6));
  const udp = Uint8Array.from(v4); udp[14 + 9] = 17;
  const frag = Uint8Array.from(v4); frag[14 + 6] = 0x20; // MF
  const off = Uint8Array.from(v4); off[14 + 7] = 1; // a fragment offset
  const doff4 = Uint8Array.from(v4); doff4[38 + 12] = 0x40; // data offset 4 words
  const ihl4 = Uint8Array.from(v4); ihl4[14] = 0x44;
  const v6frag = Uint8Array.from(v6); v6frag[14 + 40] = 44; // the hop-by-hop header says a fragment header follows
  const cases: [string, Uint8Array, { type: number; size: number }][] = [
    ['size 0', v4, { type: XEN_NETIF_GSO_TYPE_TCPV4, size: 0 }],
    ['an unknown GSO type', v4, { type: 3, size: 1000 }],
    ['TCPv4 claimed for IPv6', v6, ok4],
    ['TCPv6 claimed for IPv4', v4, ok6],
    ['UDP', udp, ok4],
    ['an IPv4 fragment (MF)', frag, ok4],
    ['an IPv4 fragment (offset)', off, ok4],
    ['an IPv4 header shorter than 20 bytes', ihl4, ok4],
    ['a TCP header shorter than 20 bytes', doff4, ok4],
    ['an IPv6 fragment', v6frag, ok6],
    ['the TCP header cut short', v4.subarray(0, 38 + 25), ok4],
    ['the TCP options cut short', v4.subarray(0, 38 + 30), ok4],
    ['the IPv4 header cut short', v4.subarray(0, 30), ok4],
    ['the IPv6 extension header cut short', v6.subarray(0, 14 + 44), ok6],
    [`more than ${GSO_MAX_SEGS} segments`, v4, { type: XEN_NETIF_GSO_TYPE_TCPV4, size: 1 }],
    ['not even an Ethernet header', v4.subarray(0, 10), ok4],
  ];
  for (const [what, d, g] of cases) assert.equal(gsoHeaders(d, g), null, what);
});
