// What vif-bridge does with a vif's `ip=` (Xen's tools/hotplug/Linux/
// vif-common.sh, handle_iptable): once the toolstack names the addresses a
// guest has, an IPv4 packet the guest transmits from any other source is
// dropped, except a DHCP client's request (UDP 68 -> 67), which has none
// yet. As with the script's iptables rules, only IPv4 is filtered: ARP and
// IPv6 frames pass, and so does everything when `ip` is absent.

/** One allowed IPv4 network: the address with its prefix length (32 for an address alone). */
interface Net4 { addr: number; bits: number }

const ETH_P_IP = 0x0800;
const IPPROTO_UDP = 17;

function parse4(s: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  const b = m.slice(1, 5).map(Number);
  if (b.some((x) => x > 255)) return null;
  return ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
}

/** The IPv4 networks of an `ip` node (space-separated addresses, each with an optional /prefix); IPv6 ones are left out. */
export function allowedNets(ip: string | undefined): Net4[] {
  const out: Net4[] = [];
  for (const a of (ip ?? '').split(/\s+/).filter(Boolean)) {
    const [addr, prefix] = a.split('/');
    const v = parse4(addr!);
    if (v === null) continue;
    const bits = prefix === undefined ? 32 : Number(prefix);
    if (!Number.isInteger(bits) || bits < 0 || bits > 32) continue;
    out.push({ addr: v, bits });
  }
  return out;
}

const inNet = (a: number, n: Net4): boolean => n.bits === 0 || (a ^ n.addr) >>> (32 - n.bits) === 0;

/**
 * A filter for what the guest transmits on a vif whose `ip` node is `ip`
 * (true: let it through), or null when there is nothing to filter (no
 * IPv4 address named).
 */
export function antispoofFilter(ip: string | undefined): ((frame: Uint8Array) => boolean) | null {
  const nets = allowedNets(ip);
  if (!nets.length) return null;
  return (f) => {
    if (f.length < 14 || ((f[12]! << 8) | f[13]!) !== ETH_P_IP) return true;
    if (f.length < 34) return false; // an IPv4 frame too short to have a source is nobody's
    const src = ((f[26]! << 24) | (f[27]! << 16) | (f[28]! << 8) | f[29]!) >>> 0;
    if (nets.some((n) => inNet(src, n))) return true;
    // a DHCP client's request: UDP from port 68 to 67
    const ihl = (f[14]! & 0x0f) * 4;
    if (f[23] !== IPPROTO_UDP || f.length < 14 + ihl + 4) return false;
    const sport = (f[14 + ihl]! << 8) | f[15 + ihl]!, dport = (f[16 + ihl]! << 8) | f[17 + ihl]!;
    return sport === 68 && dport === 67;
  };
}
