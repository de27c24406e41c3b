// One `vif = [...]` entry in xl-network-configuration(5) syntax: comma
// separated `key=value` settings (xl's parse_nic_config). Unknown keys are
// warned about and ignored, as xl does; bad values are errors.

import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import type { VifSpec } from './config.js';

export class VifSpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VifSpecError';
  }
}

export const DEFAULT_BRIDGE = 'xenbr0';
/** The control domain, the default backend (libxl: backend_domid 0). */
export const DEFAULT_VIF_BACKEND = '0';

export interface VifParseOptions {
  /** devid when the spec gives none: the entry's index in the list, as libxl numbers them (none: a hotplugged vif, numbered by the toolstack) */
  devid?: number;
  warn?: (msg: string) => void;
  /** source of the 3 random bytes of a generated MAC (tests pass a fixed one) */
  random?: (n: number) => Uint8Array;
}

/** Xen's OUI 00:16:3e with 3 random bytes, the first below 0x80 (as libxl generates them). */
export function randomXenMac(random: (n: number) => Uint8Array = randomBytes): string {
  const r = random(3);
  return ['00', '16', '3e', r[0] & 0x7f, r[1], r[2]]
    .map((b) => (typeof b === 'string' ? b : b.toString(16).padStart(2, '0'))).join(':');
}

/** Canonical lower-case aa:bb:cc:dd:ee:ff, or a VifSpecError. */
export function parseMac(mac: string): string {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(mac)) throw new VifSpecError(`invalid mac '${mac}' (six hex bytes separated by ':')`);
  const canonical = mac.toLowerCase();
  if (parseInt(canonical.slice(0, 2), 16) & 1) throw new VifSpecError(`mac '${mac}' is a multicast address`);
  if (canonical === '00:00:00:00:00:00') throw new VifSpecError('mac 00:00:00:00:00:00 is not a valid address');
  return canonical;
}

const IFNAME = /^[^\s/:]{1,15}$/; // Linux IFNAMSIZ - 1, no separators

/** A vif's `rate=` as libxl keeps it: bytes allowed per replenishment interval. */
export interface VifRate {
  bytes: number;
  usec: number;
}

const U32_MAX = 0xffffffffn;

/**
 * `rate=` as libxlu_vif.c's xlu_vif_parse_rate reads it: `<n>[GMK](B|b)/s` (decimal multiples; `b` is
 * bits) and an optional `@<n>[m|u][s]` interval (seconds when it has no unit; default 50 ms), giving
 * bytes per interval. A rate that comes to no byte in an interval is refused: it would stop the vif.
 */
export function parseVifRate(rate: string): VifRate {
  const at = rate.indexOf('@');
  const speed = at < 0 ? rate : rate.slice(0, at);
  if (speed === '') throw new VifSpecError(`no rate specified in '${rate}'`);
  const s = /^([0-9]+)([GMK]?)([Bb])\/s$/.exec(speed);
  if (!s) throw new VifSpecError(`invalid rate '${rate}' (e.g. 10Mb/s or 1MB/s@20ms)`);
  let perSec = BigInt(s[1]!);
  if (perSec === 0n || perSec > U32_MAX) throw new VifSpecError(`rate overflow in '${rate}'`);
  perSec *= { G: 1_000_000_000n, M: 1_000_000n, K: 1000n, '': 1n }[s[2] as 'G' | 'M' | 'K' | '']!;
  if (s[3] === 'b') perSec /= 8n;
  let usec = 50_000n;
  if (at >= 0) {
    const i = /^([0-9]+)([mu]?)s?$/.exec(rate.slice(at + 1));
    if (!i) throw new VifSpecError(`invalid replenishment interval in '${rate}'`);
    usec = BigInt(i[1]!);
    if (usec === 0n || usec > U32_MAX) throw new VifSpecError(`replenishment interval overflow in '${rate}'`);
    usec *= i[2] === 'm' ? 1000n : i[2] === 'u' ? 1n : 1_000_000n;
    if (usec > U32_MAX) throw new VifSpecError(`replenishment interval overflow in '${rate}'`);
  }
  const bytes = (perSec * usec) / 1_000_000n;
  if (bytes === 0n) throw new VifSpecError(`rate '${rate}' allows less than one byte per interval`);
  return { bytes: Number(bytes), usec: Number(usec) };
}

function int(key: string, v: string, min: number, max: number): number {
  if (!/^(0|[1-9][0-9]*)$/.test(v) || Number(v) < min || Number(v) > max) {
    throw new VifSpecError(`${key} '${v}' must be a whole number from ${min} to ${max}`);
  }
  return Number(v);
}

export function parseVifSpec(spec: string, opts: VifParseOptions): VifSpec {
  const warn = opts.warn ?? (() => {});
  const vif: VifSpec = { mac: '', bridge: DEFAULT_BRIDGE, backend: DEFAULT_VIF_BACKEND, trusted: true, devid: opts.devid };
  let mac: string | undefined;
  for (const raw of spec.split(',')) {
    const param = raw.trim();
    if (param === '') continue;
    if (param === 'trusted' || param === 'untrusted') { vif.trusted = param === 'trusted'; continue; }
    const eq = param.indexOf('=');
    if (eq < 0) throw new VifSpecError(`expected key=value, found '${param}'`);
    const key = param.slice(0, eq).trim();
    const v = param.slice(eq + 1).trim();
    switch (key) {
      case 'mac': mac = parseMac(v); break;
      case 'bridge':
        if (!IFNAME.test(v)) throw new VifSpecError(`invalid bridge name '${v}'`);
        vif.bridge = v; break;
      case 'type':
        if (v !== 'vif' && v !== 'ioemu') throw new VifSpecError(`unknown type '${v}' (vif or ioemu)`);
        if (v === 'ioemu') warn("type=ioemu asks for an emulated NIC, which needs a device model: a PVH guest has none");
        vif.type = v; break;
      case 'model':
        warn(`model=${v} selects an emulated NIC, which needs a device model: a PVH guest has none`);
        vif.model = v; break;
      case 'vifname':
        if (!IFNAME.test(v)) throw new VifSpecError(`invalid vifname '${v}' (at most 15 characters, no '/', ':' or spaces)`);
        vif.vifname = v; break;
      case 'script':
        if (v === '') throw new VifSpecError('empty script');
        vif.script = v; break;
      case 'ip': {
        const addrs = v.split(/\s+/).filter((s) => s);
        for (const a of addrs) {
          const [addr, prefix, ...more] = a.split('/');
          const bits = isIP(addr);
          if (!bits || more.length || (prefix !== undefined && !(/^[0-9]{1,3}$/.test(prefix) && Number(prefix) <= (bits === 4 ? 32 : 128)))) {
            throw new VifSpecError(`invalid ip address '${a}'`);
          }
        }
        if (!addrs.length) throw new VifSpecError('empty ip');
        vif.ip = addrs.join(' '); break;
      }
      case 'backend':
        if (v === '') throw new VifSpecError('empty backend');
        vif.backend = v; break;
      case 'rate':
        parseVifRate(v);
        vif.rate = v; break;
      case 'devid': vif.devid = int('devid', v, 0, 0xffff); break;
      case 'mtu': vif.mtu = int('mtu', v, 68, 65535); break;
      case 'vlan':
        if (v === '') throw new VifSpecError('empty vlan');
        vif.vlan = v; break;
      case 'gatewaydev':
        if (!IFNAME.test(v)) throw new VifSpecError(`invalid gatewaydev '${v}'`);
        vif.gatewaydev = v; break;
      case 'trusted':
        if (v !== '0' && v !== '1') throw new VifSpecError(`trusted '${v}' must be 0 or 1`);
        vif.trusted = v === '1'; break;
      case 'accel':
        warn(`the vif parameter 'accel' is no longer supported by xl; ignored`); break;
      default:
        warn(`unknown vif parameter '${key}' ignored`);
    }
  }
  vif.mac = mac ?? randomXenMac(opts.random);
  return vif;
}

/** The spec text parseVifSpec reads back into the same VifSpec. */
export function serialiseVifSpec(v: VifSpec): string {
  const parts = [`mac=${v.mac}`, `bridge=${v.bridge}`];
  if (v.type) parts.push(`type=${v.type}`);
  if (v.model) parts.push(`model=${v.model}`);
  if (v.vifname) parts.push(`vifname=${v.vifname}`);
  if (v.script) parts.push(`script=${v.script}`);
  if (v.ip) parts.push(`ip=${v.ip}`);
  if (v.backend !== DEFAULT_VIF_BACKEND) parts.push(`backend=${v.backend}`);
  if (v.rate) parts.push(`rate=${v.rate}`);
  if (v.devid !== undefined) parts.push(`devid=${v.devid}`);
  if (v.mtu !== undefined) parts.push(`mtu=${v.mtu}`);
  if (v.vlan) parts.push(`vlan=${v.vlan}`);
  if (v.gatewaydev) parts.push(`gatewaydev=${v.gatewaydev}`);
  if (!v.trusted) parts.push('untrusted');
  return parts.join(', ');
}
