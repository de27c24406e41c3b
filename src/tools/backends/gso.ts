// TCP segmentation offload in software, for a frame too large for where it
// goes: a netfront that did not say feature-gso-tcpv4/6, or one without
// feature-sg for a frame of several pages. The segments are what Linux's
// skb_segment gives (tcp_gso_segment with inet_gso_segment or
// ipv6_gso_segment): the headers copied to each, each segment `size` bytes of
// payload but the last, IPv4's total length, id (one more each) and header
// checksum, IPv6's payload length, TCP's sequence number advanced, FIN and
// PSH on the last segment only, CWR on the first only, and the TCP checksum
// left partial (the pseudo-header's sum, for a receiver that takes a blank
// checksum) or filled in.
//
// Every frame that claims GSO is checked here first (gsoHeaders): TCP of the
// IP version its GSO type names, its headers whole, a size that is not zero
// and not so small that the frame would become more than GSO_MAX_SEGS
// segments. Anything else is null, never an exception.

/** io/netif.h: netif_extra_info.u.gso.type */
export const XEN_NETIF_GSO_TYPE_NONE = 0;
export const XEN_NETIF_GSO_TYPE_TCPV4 = 1;
export const XEN_NETIF_GSO_TYPE_TCPV6 = 2;

/** A large TCP frame's segmentation: its GSO type (XEN_NETIF_GSO_TYPE_TCPV4/6) and the payload bytes of each segment */
export interface GsoInfo {
  type: number;
  size: number;
}

/** Where a GSO frame's headers are: the IP header, the TCP header, and the end of the TCP header (the payload's start). */
export interface GsoHeaders {
  v6: boolean;
  l3: number;
  l4: number;
  hlen: number;
  /** segments the frame makes (1 when its payload fits in one) */
  segs: number;
}

const ETH_HLEN = 14;
/** The most segments one frame may make: a 64 KiB frame cut into segments of 32 payload bytes; smaller sizes are refused, not multiplied */
export const GSO_MAX_SEGS = 2048;
/** linux/tcp.h: flag bits in byte 13 of the TCP header */
const TCP_FIN = 0x01, TCP_PSH = 0x08, TCP_CWR = 0x80;
const IPPROTO_TCP = 6;

/**
 * The headers of a frame claiming GSO of `g`, or null: not TCP over the IP version of its type (IPv4 not
 * fragmented, IPv6 after hop-by-hop, routing and destination options), a header cut short, a size of 0
 * or too small for the frame (more than GSO_MAX_SEGS segments).
 */
export function gsoHeaders(d: Uint8Array, g: GsoInfo): GsoHeaders | null {
  if (!Number.isInteger(g.size) || g.size < 1 || d.length < ETH_HLEN + 20) return null;
  const type = (d[12]! << 8) | d[13]!;
  let l4: number, proto: number;
  const l3 = ETH_HLEN;
  if (g.type === XEN_NETIF_GSO_TYPE_TCPV4) {
    if (type !== 0x0800 || d[l3]! >> 4 !== 4) return null;
    const ihl = (d[l3]! & 15) * 4;
    // a fragment (MF or an offset) has no TCP header of its own
    if (ihl < 20 || ((d[l3 + 6]! << 8 | d[l3 + 7]!) & 0x3fff)) return null;
    proto = d[l3 + 9]!;
    l4 = l3 + ihl;
  } else if (g.type === XEN_NETIF_GSO_TYPE_TCPV6) {
    if (type !== 0x86dd || d.length < l3 + 40 || d[l3]! >> 4 !== 6) return null;
    proto = d[l3 + 6]!;
    l4 = l3 + 40;
    while (proto === 0 || proto === 43 || proto === 60) {
      if (d.length < l4 + 8) return null;
      proto = d[l4]!;
      l4 += (d[l4 + 1]! + 1) * 8;
    }
  } else {
    return null;
  }
  if (proto !== IPPROTO_TCP || d.length < l4 + 20) return null;
  const doff = (d[l4 + 12]! >> 4) * 4;
  const hlen = l4 + doff;
  if (doff < 20 || d.length < hlen) return null;
  const segs = Math.max(1, Math.ceil((d.length - hlen) / g.size));
  if (segs > GSO_MAX_SEGS) return null;
  return { v6: g.type === XEN_NETIF_GSO_TYPE_TCPV6, l3, l4, hlen, segs };
}

/** The one's complement sum of d[start, end) as 16-bit big-endian words (an odd last byte padded), added to `sum`, unfolded. */
function sum16(d: Uint8Array, start: number, end: number, sum = 0): number {
  let i = start;
  for (; i + 1 < end; i += 2) sum += (d[i]! << 8) | d[i + 1]!;
  if (i < end) sum += d[i]! << 8;
  return sum;
}

function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/** The TCP pseudo-header's sum (RFC 793, RFC 8200 8.1) for a TCP segment of `tcpLen` bytes, folded to 16 bits. */
function pseudoSum(d: Uint8Array, h: GsoHeaders, tcpLen: number): number {
  const s = h.v6 ? sum16(d, h.l3 + 8, h.l3 + 40) : sum16(d, h.l3 + 12, h.l3 + 20);
  return fold(s + IPPROTO_TCP + (tcpLen & 0xffff) + Math.floor(tcpLen / 0x10000));
}

function put16(d: Uint8Array, at: number, v: number): void {
  d[at] = (v >> 8) & 0xff;
  d[at + 1] = v & 0xff;
}

/**
 * Makes the TCP checksum field partial (CHECKSUM_PARTIAL): the pseudo-header's sum, for the receiver to
 * finish over the segment. What Linux's netback does to a GSO packet sent without NETTXF_csum_blank.
 */
export function setPartialCsum(d: Uint8Array, h: GsoHeaders): void {
  put16(d, h.l4 + 16, pseudoSum(d, h, d.length - h.l4));
}

/** Fills in the TCP checksum of a frame whose headers are `h` (whatever its checksum field held). */
export function fillTcpCsum(d: Uint8Array, h: GsoHeaders): void {
  put16(d, h.l4 + 16, 0);
  const s = sum16(d, h.l4, d.length, pseudoSum(d, h, d.length - h.l4));
  put16(d, h.l4 + 16, ~fold(s) & 0xffff);
}

/** The IPv4 header checksum of the header at `l3` (RFC 791), written in place. */
function ipv4Csum(d: Uint8Array, l3: number): void {
  const ihl = (d[l3]! & 15) * 4;
  put16(d, l3 + 10, 0);
  put16(d, l3 + 10, ~fold(sum16(d, l3, l3 + ihl)) & 0xffff);
}

/**
 * The segments of a GSO frame whose headers gsoHeaders found: `size` payload bytes each (the last what
 * is left), their TCP checksums partial (`fill` false: for a receiver that takes a blank checksum) or
 * filled in. A frame whose payload fits in one segment comes back as one, its lengths and checksums
 * set the same way.
 */
export function segmentTcp(d: Uint8Array, h: GsoHeaders, size: number, fill: boolean): Uint8Array[] {
  const payload = d.length - h.hlen;
  const id0 = (d[h.l3 + 4]! << 8) | d[h.l3 + 5]!;
  const seq0 = ((d[h.l4 + 4]! << 24) | (d[h.l4 + 5]! << 16) | (d[h.l4 + 6]! << 8) | d[h.l4 + 7]!) >>> 0;
  const out: Uint8Array[] = [];
  for (let i = 0; i < h.segs; i++) {
    const at = i * size, len = Math.min(size, payload - at);
    const s = new Uint8Array(h.hlen + Math.max(0, len));
    s.set(d.subarray(0, h.hlen));
    if (len > 0) s.set(d.subarray(h.hlen + at, h.hlen + at + len), h.hlen);
    if (h.v6) {
      // payload length: everything after the fixed header, extension headers included
      put16(s, h.l3 + 4, s.length - h.l3 - 40);
    } else {
      put16(s, h.l3 + 2, s.length - h.l3);
      put16(s, h.l3 + 4, (id0 + i) & 0xffff);
      ipv4Csum(s, h.l3);
    }
    const seq = (seq0 + at) >>> 0;
    s[h.l4 + 4] = seq >>> 24; s[h.l4 + 5] = (seq >>> 16) & 0xff; s[h.l4 + 6] = (seq >>> 8) & 0xff; s[h.l4 + 7] = seq & 0xff;
    let flags = s[h.l4 + 13]!;
    if (i < h.segs - 1) flags &= ~(TCP_FIN | TCP_PSH);
    if (i > 0) flags &= ~TCP_CWR;
    s[h.l4 + 13] = flags;
    if (fill) fillTcpCsum(s, h);
    else setPartialCsum(s, h);
    out.push(s);
  }
  return out;
}
