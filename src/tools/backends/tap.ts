// A tap device (Linux's drivers/net/tun.c) standing for a vif on the host,
// as the interface Linux's netback makes for each vif (vif<domid>.<devid>)
// stands for it in dom0: the frames the guest transmits are written to it,
// the frames the host's stack or bridge sends it are read and go to the
// guest. It is opened with the virtio-net header (IFF_VNET_HDR) and checksum
// offload (TUN_F_CSUM), so a checksum left blank crosses as CHECKSUM_PARTIAL
// either way, as netback hands such packets to the bridge, instead of being
// summed here; and TCP segmentation offload (TUN_F_TSO4/6, while the guest's
// netfront takes GSO), so a 64 KiB TCP frame crosses whole either way with
// its GSO type and size in the header. Closing the descriptor removes the
// device (no IFF_PERSIST): nothing outlives the vif, not even a killed
// process's.
//
// Reads never block: one thread (tap_poll.ts) polls every tap of the process
// and says which are readable; each is read dry here, a bounded number of
// frames at a time, and only while its guest has room for them.

import { Worker } from 'node:worker_threads';
import * as libc from '../../kvm/libc.js';
import { ETH_HLEN, type NetFrame } from './netback.js';
import { gsoHeaders, segmentTcp, setPartialCsum, XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6, type GsoInfo } from './gso.js';

export class TapError extends Error {
  constructor(message: string, readonly errno?: number) {
    super(message);
    this.name = 'TapError';
  }
}

// linux/if_tun.h, linux/sockios.h, linux/if.h, linux/virtio_net.h
const TUNSETIFF = 0x400454ca;
const TUNSETOFFLOAD = 0x400454d0;
const TUNSETCARRIER = 0x400454e2;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;
const TUN_F_CSUM = 0x01;
const TUN_F_TSO4 = 0x02;
const TUN_F_TSO6 = 0x04;
const SIOCGIFFLAGS = 0x8913;
const SIOCSIFFLAGS = 0x8914;
const SIOCSIFMTU = 0x8922;
const SIOCSIFHWADDR = 0x8924;
const SIOCGIFINDEX = 0x8933;
const SIOCBRADDIF = 0x89a2;
const IFF_UP = 0x1;
const ARPHRD_ETHER = 1;
const AF_INET = 2;
const SOCK_DGRAM = 2;
const IFREQ_SIZE = 40;
/** struct virtio_net_hdr: flags (u8) at 0, gso_type (u8) at 1, hdr_len at 2, gso_size at 4, csum_start at 6, csum_offset at 8 (u16, the host's order) */
export const VNET_HDR_LEN = 10;
const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
const VIRTIO_NET_HDR_F_DATA_VALID = 2;
/** linux/virtio_net.h: gso_type */
const VIRTIO_NET_HDR_GSO_NONE = 0;
const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
const VIRTIO_NET_HDR_GSO_ECN = 0x80;
/** the TCP header's checksum field */
const TCP_CSUM_OFFSET = 16;
const EPERM = 1, ENOENT = 2, ENODEV = 19, EACCES = 13, EOPNOTSUPP = 95, EBUSY = 16;
/** Linux's IFNAMSIZ less its NUL */
export const IFNAME_MAX = 15;
/** The largest frame either way: netif's 64 KiB */
const FRAME_MAX = 65_535;
/** Room to read a GSO frame larger than that (an IP packet of 64 KiB behind its Ethernet header) */
const READ_MAX = FRAME_MAX + 64;
/** Frames read from one tap before the others (and the event loop) get a turn */
const READ_BUDGET = 64;
/** How soon a tap whose guest had no room is looked at again */
const ROOM_RETRY_MS = 2;

/** Linux's netback gives its vif interfaces this address, so a bridge never takes it for its own (the lowest port's). */
export const VIF_HWADDR = 'fe:ff:ff:ff:ff:ff';

function ifreq(name: string): Uint8Array {
  const b = new Uint8Array(IFREQ_SIZE);
  b.set(Buffer.from(name, 'latin1'));
  return b;
}

/** A socket to hand interface ioctls to; in the calling thread's network namespace, as the interfaces are looked up. */
function ctlSocket(): number {
  return libc.check(libc.socket(AF_INET, SOCK_DGRAM | libc.O_CLOEXEC, 0), 'socket');
}

/** The interface's index in this network namespace, or null when there is none of that name. */
export function ifIndex(name: string): number | null {
  if (!name || name.length > IFNAME_MAX) return null;
  const s = ctlSocket();
  try {
    const r = ifreq(name);
    if (libc.ioctlPtr(s, SIOCGIFINDEX, r) < 0) {
      const e = libc.errno();
      if (e === ENODEV) return null;
      throw new libc.OsError(`SIOCGIFINDEX ${name}`, e);
    }
    return new DataView(r.buffer).getInt32(16, true);
  } finally {
    libc.close(s);
  }
}

/**
 * Where a blank checksum goes, as Linux's skb_checksum_setup finds it (netback's checksum_setup,
 * netfront's too): the TCP or UDP header of an unfragmented IPv4 packet, or of an IPv6 one after its
 * hop-by-hop, routing and destination options. Null for anything else (netback drops such a packet).
 */
export function csumPlace(d: Uint8Array): { start: number; offset: number } | null {
  if (d.length < ETH_HLEN) return null;
  const type = (d[12]! << 8) | d[13]!;
  let at = ETH_HLEN, proto: number;
  if (type === 0x0800) {
    if (d.length < at + 20 || d[at]! >> 4 !== 4) return null;
    const ihl = (d[at]! & 15) * 4;
    if (ihl < 20 || ((d[at + 6]! << 8 | d[at + 7]!) & 0x3fff)) return null; // a fragment: its checksum is not its own
    proto = d[at + 9]!;
    at += ihl;
  } else if (type === 0x86dd) {
    if (d.length < at + 40) return null;
    proto = d[at + 6]!;
    at += 40;
    while (proto === 0 || proto === 43 || proto === 60) {
      if (d.length < at + 8) return null;
      proto = d[at]!;
      at += (d[at + 1]! + 1) * 8;
    }
  } else {
    return null;
  }
  const offset = proto === 6 ? 16 : proto === 17 ? 6 : -1;
  if (offset < 0 || at + offset + 2 > d.length) return null;
  return { start: at, offset };
}

/** Finishes a partial checksum: the one's complement sum from `start` to the end, folded in at start + offset. */
export function fillCsum(d: Uint8Array, start: number, offset: number): boolean {
  const at = start + offset;
  if (start < 0 || at + 2 > d.length) return false;
  let sum = 0;
  const end = d.length;
  for (let i = start; i + 1 < end; i += 2) sum += (d[i]! << 8) | d[i + 1]!;
  if ((end - start) & 1) sum += d[end - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  // the field holds the pseudo-header's sum, which the sum above took in
  const c = ~sum & 0xffff;
  d[at] = c >> 8;
  d[at + 1] = c & 0xff;
  return true;
}

/**
 * A frame as a tap's read gives it (a virtio_net_hdr, then the frame; `n` the length read, which tun makes
 * the frame's whole length even when it did not fit), as the frames to pass on, or null (counted, dropped):
 * - no GSO: the frame, its checksum blank when the host left it partial where the guest's netfront will
 *   look (skb_checksum_setup), summed here when elsewhere;
 * - TCPv4 or TCPv6 GSO: the frame whole with its GSO type and size (its checksum partial, made so when the
 *   header did not say NEEDS_CSUM); with the ECN bit, which netif cannot carry, its segments instead;
 * - UDP (UFO, USO) or any other type, a GSO frame that is not TCP of its type, a frame too short or too
 *   long: null.
 */
export function vnetFrames(b: Uint8Array, n: number): { frames: NetFrame[]; gso: 'none' | 'whole' | 'segmented' } | null {
  if (n < VNET_HDR_LEN + ETH_HLEN || n > b.length) return null;
  const h = new DataView(b.buffer, b.byteOffset, VNET_HDR_LEN);
  const flags = h.getUint8(0), gsoType = h.getUint8(1);
  const data = b.slice(VNET_HDR_LEN, n);
  if (gsoType !== VIRTIO_NET_HDR_GSO_NONE) {
    const base = gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
    const type = base === VIRTIO_NET_HDR_GSO_TCPV4 ? XEN_NETIF_GSO_TYPE_TCPV4 : base === VIRTIO_NET_HDR_GSO_TCPV6 ? XEN_NETIF_GSO_TYPE_TCPV6 : 0;
    const g: GsoInfo = { type, size: h.getUint16(4, true) };
    const hd = type ? gsoHeaders(data, g) : null;
    if (!hd) return null;
    if (!(flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)) setPartialCsum(data, hd);
    if (gsoType & VIRTIO_NET_HDR_GSO_ECN) return { frames: segmentTcp(data, hd, g.size, false).map((d) => ({ data: d, csumBlank: true })), gso: 'segmented' };
    // whole even when larger than netif carries (an IP packet of 64 KiB behind its Ethernet header): netback cuts that
    return { frames: [{ data, csumBlank: true, gso: g }], gso: 'whole' };
  }
  if (data.length > FRAME_MAX) return null;
  const f: NetFrame = { data };
  if (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
    const start = h.getUint16(6, true), offset = h.getUint16(8, true);
    const p = csumPlace(data);
    // the guest's netfront finds the place itself (skb_checksum_setup); where it would not, it is summed here
    if (p && p.start === start && p.offset === offset) f.csumBlank = true;
    else if (!fillCsum(data, start, offset)) return null;
  } else if (flags & VIRTIO_NET_HDR_F_DATA_VALID) {
    f.dataValidated = true;
  }
  return { frames: [f], gso: 'none' };
}

export interface TapOptions {
  /** the interface's name (vif<domid>.<devid>) */
  name: string;
  /** a frame the host sent the tap */
  onFrame: (f: NetFrame) => void;
  /** whether a frame read now has somewhere to go (default: always); while not, the tap is not read */
  room?: () => boolean;
}

export interface TapStats {
  /** frames written to the tap (from the guest) and their bytes */
  written: number;
  writtenBytes: number;
  /** frames not written: a blank checksum with no place for it, or the write refused (the device down) */
  writeDropped: number;
  /** frames read from the tap (for the guest) and their bytes */
  read: number;
  readBytes: number;
  /** frames read that could not be passed on (a GSO type not handled, a GSO frame that is not TCP, a bad header) */
  readDropped: number;
  /** GSO frames written whole, read whole, and read and cut into segments here (a type netif cannot carry: ECN) */
  writtenGso: number;
  readGso: number;
  readSegmented: number;
}

export class TapDevice {
  readonly stats: TapStats = { written: 0, writtenBytes: 0, writeDropped: 0, read: 0, readBytes: 0, readDropped: 0, writtenGso: 0, readGso: 0, readSegmented: 0 };
  private closed = false;
  private readonly wbuf = new Uint8Array(VNET_HDR_LEN + FRAME_MAX);
  private readonly rbuf = new Uint8Array(VNET_HDR_LEN + READ_MAX);
  private readonly wview = new DataView(this.wbuf.buffer);
  private slot = -1;
  private retry: NodeJS.Timeout | null = null;

  private constructor(readonly name: string, private readonly fd: number, readonly ifindex: number, private readonly o: TapOptions) {}

  /**
   * Opens /dev/net/tun as the tap `o.name` (made by the open, in the calling thread's network namespace),
   * with its carrier off until setCarrier(true). Needs CAP_NET_ADMIN: a TapError with errno EPERM without.
   */
  static open(o: TapOptions): TapDevice {
    if (!/^[^\s/:]+$/.test(o.name) || o.name.length > IFNAME_MAX) throw new TapError(`tap '${o.name}': not an interface name (1 to ${IFNAME_MAX} characters, no '/', ':' or space)`);
    const fd = libc.open('/dev/net/tun', libc.O_RDWR | libc.O_NONBLOCK | libc.O_CLOEXEC, 0);
    if (fd < 0) {
      const e = libc.errno();
      throw new TapError(`tap ${o.name}: opening /dev/net/tun: ${libc.strerror(e)}${e === ENOENT ? ' (no tun driver: modprobe tun)' : ''}`, e);
    }
    try {
      const r = ifreq(o.name);
      new DataView(r.buffer).setInt16(16, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, true);
      if (libc.ioctlPtr(fd, TUNSETIFF, r) < 0) {
        const e = libc.errno();
        const why = e === EPERM || e === EACCES ? ' (needs CAP_NET_ADMIN)' : e === EBUSY ? ' (an interface of that name exists)' : '';
        throw new TapError(`tap ${o.name}: TUNSETIFF: ${libc.strerror(e)}${why}`, e);
      }
      libc.check(libc.ioctlInt(fd, TUNSETOFFLOAD, TUN_F_CSUM), `tap ${o.name}: TUNSETOFFLOAD`);
      const index = ifIndex(o.name);
      if (index === null) throw new TapError(`tap ${o.name}: gone as soon as made`);
      const t = new TapDevice(o.name, fd, index, o);
      t.setCarrier(false);
      t.slot = TapWatcher.get().add(t, fd);
      return t;
    } catch (e) {
      libc.close(fd);
      throw e instanceof libc.OsError ? new TapError(e.message, e.errno) : e;
    }
  }

  private ifioctl(req: number, fill: (v: DataView) => void, what: string, target = this.name): void {
    const s = ctlSocket();
    try {
      const r = ifreq(target);
      const v = new DataView(r.buffer);
      if (req === SIOCSIFFLAGS) {
        libc.check(libc.ioctlPtr(s, SIOCGIFFLAGS, r), `${what}: SIOCGIFFLAGS`);
      }
      fill(v);
      if (libc.ioctlPtr(s, req, r) < 0) throw new TapError(`${what}: ${libc.strerror(libc.errno())}`, libc.errno());
    } finally {
      libc.close(s);
    }
  }

  /** `ip link set <tap> up` */
  up(): void {
    this.ifioctl(SIOCSIFFLAGS, (v) => v.setInt16(16, v.getInt16(16, true) | IFF_UP, true), `tap ${this.name}: up`);
  }

  setMtu(mtu: number): void {
    this.ifioctl(SIOCSIFMTU, (v) => v.setInt32(16, mtu, true), `tap ${this.name}: mtu ${mtu}`);
  }

  /** The interface's own address (aa:bb:cc:dd:ee:ff), not the guest's. */
  setHwaddr(mac: string): void {
    const bytes = mac.split(':').map((h) => parseInt(h, 16));
    this.ifioctl(SIOCSIFHWADDR, (v) => {
      v.setUint16(16, ARPHRD_ETHER, true);
      bytes.forEach((b, i) => v.setUint8(18 + i, b));
    }, `tap ${this.name}: address ${mac}`);
  }

  /**
   * Which large TCP frames the host's stack may hand the tap whole (TUNSETOFFLOAD TUN_F_TSO4/6, with
   * TUN_F_CSUM always): those the guest's netfront takes; the stack segments the others itself. The
   * reason, when the tun driver refused.
   */
  setTso(v4: boolean, v6: boolean): string | null {
    if (this.closed) return null;
    const flags = TUN_F_CSUM | (v4 ? TUN_F_TSO4 : 0) | (v6 ? TUN_F_TSO6 : 0);
    // refused, the tap keeps checksum offload alone and the host's stack segments everything: slower, not wrong
    return libc.ioctlInt(this.fd, TUNSETOFFLOAD, flags) < 0 ? `tap ${this.name}: TUNSETOFFLOAD ${flags}: ${libc.strerror(libc.errno())}` : null;
  }

  /** Carrier on while the guest's netfront is connected (netback's netif_carrier_on/off): the bridge forwards to it only then. */
  setCarrier(on: boolean): void {
    if (this.closed) return; // the descriptor's number may be another file's by now
    const v = new Uint8Array(4);
    new DataView(v.buffer).setInt32(0, on ? 1 : 0, true);
    // TUNSETCARRIER is Linux 4.19's: without it the carrier stays on and the bridge floods to a vif no guest reads
    libc.ioctlPtr(this.fd, TUNSETCARRIER, v);
  }

  /**
   * `ip link set <tap> master <bridge>` (brctl addif): the bridge must exist in this network namespace
   * and be a bridge.
   */
  joinBridge(bridge: string): void {
    if (ifIndex(bridge) === null) throw new TapError(bridgeMissing(bridge), ENODEV);
    try {
      this.ifioctl(SIOCBRADDIF, (v) => v.setInt32(16, this.ifindex, true), `tap ${this.name}: adding it to bridge ${bridge}`, bridge);
    } catch (e) {
      if (e instanceof TapError && e.errno === EOPNOTSUPP) throw new TapError(`${bridge} is not a bridge (ip -d link show ${bridge}); cannot add ${this.name} to it`, EOPNOTSUPP);
      throw e;
    }
  }

  /** A frame from the guest, onto the host's side; false (counted) when it could not be written. */
  send(f: NetFrame): boolean {
    if (this.closed) return false;
    const d = f.data, len = d.length;
    if (len < ETH_HLEN || len > FRAME_MAX) { this.stats.writeDropped++; return false; }
    const h = this.wview;
    for (let i = 0; i < VNET_HDR_LEN; i++) this.wbuf[i] = 0;
    if (f.gso) {
      // netback checked it (gsoHeaders); a frame from elsewhere is checked here
      const g = gsoHeaders(d, f.gso);
      if (!g) { this.stats.writeDropped++; return false; }
      h.setUint8(0, VIRTIO_NET_HDR_F_NEEDS_CSUM);
      h.setUint8(1, f.gso.type === XEN_NETIF_GSO_TYPE_TCPV4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6);
      h.setUint16(2, g.hlen, true);
      h.setUint16(4, f.gso.size, true);
      h.setUint16(6, g.l4, true);
      h.setUint16(8, TCP_CSUM_OFFSET, true);
    } else if (f.csumBlank) {
      const p = csumPlace(d);
      if (!p) { this.stats.writeDropped++; return false; }
      h.setUint8(0, VIRTIO_NET_HDR_F_NEEDS_CSUM);
      h.setUint16(6, p.start, true);
      h.setUint16(8, p.offset, true);
    } else if (f.dataValidated) {
      h.setUint8(0, VIRTIO_NET_HDR_F_DATA_VALID);
    }
    this.wbuf.set(d, VNET_HDR_LEN);
    if (libc.write(this.fd, this.wbuf, VNET_HDR_LEN + len) < 0) { this.stats.writeDropped++; return false; }
    if (f.gso) this.stats.writtenGso++;
    this.stats.written++;
    this.stats.writtenBytes += len;
    return true;
  }

  /** Reads what the tap holds, up to READ_BUDGET frames, then asks to be told of more. */
  drain(): void {
    if (this.closed) return;
    if (this.retry) return;
    for (let i = 0; i < READ_BUDGET; i++) {
      if (this.o.room && !this.o.room()) {
        this.retry = setTimeout(() => { this.retry = null; this.drain(); }, ROOM_RETRY_MS);
        this.retry.unref();
        return;
      }
      const n = libc.read(this.fd, this.rbuf, this.rbuf.length);
      if (n < 0) break; // EAGAIN: read dry (anything else: the device is going away)
      this.frame(n);
    }
    TapWatcher.get().arm(this.slot);
  }

  private frame(n: number): void {
    const r = vnetFrames(this.rbuf, n);
    if (!r) { this.stats.readDropped++; return; }
    this.stats.read++;
    this.stats.readBytes += n - VNET_HDR_LEN;
    if (r.gso === 'whole') this.stats.readGso++;
    if (r.gso === 'segmented') this.stats.readSegmented++;
    for (const f of r.frames) this.o.onFrame(f);
  }

  get isClosed(): boolean { return this.closed; }

  /** Removes the device (with the descriptor's close); what it was bridged to lets go of it. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    TapWatcher.get().remove(this.slot);
    libc.close(this.fd);
  }
}

/** How the message for a bridge that is not there reads (vif-bridge's "Could not find bridge device"). */
export function bridgeMissing(bridge: string): string {
  return `Could not find bridge device ${bridge} in this network namespace: create it with 'ip link add ${bridge} type bridge && ip link set ${bridge} up'`;
}

/** Taps one poll thread watches at most */
const MAX_TAPS = 1024;
const HDR = 1;

/**
 * The process's poll thread and its table of taps (shared memory: an fd and an armed flag per slot):
 * started with the first tap, stopped with the last.
 */
class TapWatcher {
  private static current: TapWatcher | null = null;
  private readonly ctl = new Int32Array(new SharedArrayBuffer(4 * (HDR + 2 * MAX_TAPS)));
  private readonly taps: (TapDevice | null)[] = new Array<TapDevice | null>(MAX_TAPS).fill(null);
  private count = 0;
  private readonly wakeFd: number;
  private readonly worker: Worker;
  private readonly one = new Uint8Array(8);

  static get(): TapWatcher {
    return (TapWatcher.current ??= new TapWatcher());
  }

  private constructor() {
    for (let i = 0; i < MAX_TAPS; i++) this.ctl[HDR + 2 * i] = -1;
    this.one[0] = 1;
    this.wakeFd = libc.check(libc.eventfd(0, libc.EFD_NONBLOCK | libc.EFD_CLOEXEC), 'eventfd');
    const wakeFd = this.wakeFd;
    this.worker = new Worker(new URL('./tap_poll.js', import.meta.url), { workerData: { ctl: this.ctl.buffer, wakeFd, hdr: HDR } });
    this.worker.on('message', (m: number[] | { error: string }) => {
      if (!Array.isArray(m)) { process.emitWarning(`tap poll thread: ${m.error}`); return; }
      for (const s of m) this.taps[s]?.drain();
    });
    this.worker.on('exit', () => libc.close(wakeFd));
    this.worker.on('error', (e) => process.emitWarning(`tap poll thread: ${e.message}`));
    this.worker.unref();
  }

  add(t: TapDevice, fd: number): number {
    const s = this.taps.indexOf(null);
    if (s < 0) throw new TapError(`more than ${MAX_TAPS} taps in one process`);
    this.taps[s] = t;
    this.count++;
    Atomics.store(this.ctl, HDR + 2 * s, fd);
    this.arm(s);
    return s;
  }

  arm(s: number): void {
    if (s < 0 || !this.taps[s]) return;
    Atomics.store(this.ctl, HDR + 2 * s + 1, 1);
    libc.write(this.wakeFd, this.one, 8);
  }

  remove(s: number): void {
    if (s < 0 || !this.taps[s]) return;
    this.taps[s] = null;
    Atomics.store(this.ctl, HDR + 2 * s + 1, 0);
    Atomics.store(this.ctl, HDR + 2 * s, -1);
    if (--this.count === 0) {
      Atomics.store(this.ctl, 0, 1);
      libc.write(this.wakeFd, this.one, 8);
      TapWatcher.current = null;
    } else {
      libc.write(this.wakeFd, this.one, 8);
    }
  }
}
