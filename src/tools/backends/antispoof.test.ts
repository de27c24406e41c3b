// vif-bridge's anti-spoofing (vif-common.sh's iptables rules) as netback
// applies it: IPv4 from the addresses the vif's `ip` names (or their
// networks), and a DHCP client's request, go on; other IPv4 sources are
// dropped; ARP and IPv6 are not filtered, as the script's iptables does not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allowedNets, antispoofFilter } from './antispoof.js';

/** An Ethernet frame carrying IPv4 from `src`, protocol `proto`, with UDP ports when given. */
function ipv4(src: string, proto = 1, ports?: [number, number]): Uint8Array {
  const f = new Uint8Array(14 + 20 + 8);
  f[12] = 0x08; f[13] = 0x00;
  f[14] = 0x45; f[23] = proto;
  f.set(src.split('.').map(Number), 26);
  f.set([10, 0, 0, 1], 30);
  if (ports) { f[34] = ports[0] >> 8; f[35] = ports[0] & 0xff; f[36] = ports[1] >> 8; f[37] = ports[1] & 0xff; }
  return f;
}
const ethertype = (t: number, len = 60) => { const f = new Uint8Array(len); f[12] = t >> 8; f[13] = t & 0xff; return f; };

test('no ip, or none that is IPv4: nothing is filtered', () => {
  assert.equal(antispoofFilter(undefined), null);
  assert.equal(antispoofFilter(''), null);
  assert.equal(antispoofFilter('fe80::1 2001:db8::5/64'), null);
});

test('the ip node\'s IPv4 addresses and networks; bad entries are left out', () => {
  assert.deepEqual(allowedNets('10.0.0.2 192.168.1.0/24 fe80::1 300.1.1.1 10.1.1.1/33 0.0.0.0/0'), [
    { addr: 0x0a000002, bits: 32 }, { addr: 0xc0a80100, bits: 24 }, { addr: 0, bits: 0 },
  ]);
});

test('IPv4 from a named address or network goes on; from any other is dropped, but for a DHCP client\'s request', () => {
  const f = antispoofFilter('10.0.0.2 192.168.7.0/24')!;
  assert.equal(f(ipv4('10.0.0.2')), true);
  assert.equal(f(ipv4('192.168.7.200')), true);
  assert.equal(f(ipv4('10.0.0.3')), false);
  assert.equal(f(ipv4('192.168.8.1')), false);
  assert.equal(f(ipv4('0.0.0.0', 17, [68, 67])), true, 'DHCPDISCOVER has no address yet');
  assert.equal(f(ipv4('0.0.0.0', 17, [67, 68])), false, 'a DHCP server it is not');
  assert.equal(f(ipv4('10.9.9.9', 6, [68, 67])), false, 'TCP is not DHCP');
  assert.equal(f(ipv4('10.0.0.3').subarray(0, 30)), false, 'an IPv4 frame too short to carry its source');
  assert.equal(f(ethertype(0x0806)), true, 'ARP');
  assert.equal(f(ethertype(0x86dd)), true, 'IPv6');
  assert.equal(f(new Uint8Array(10)), true, 'a runt without an ethertype is not IPv4');
});
