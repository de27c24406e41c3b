// xl-network-configuration(5): vif specs, their defaults and checks.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VifSpecError, parseMac, parseVifRate, parseVifSpec, randomXenMac, serialiseVifSpec } from './vif.js';

const fixed = () => new Uint8Array([0xab, 0xcd, 0xef]);
const vif = (spec: string, warnings: string[] = []) => parseVifSpec(spec, { devid: 0, random: fixed, warn: (w) => warnings.push(w) });

function fails(spec: string): string {
  try {
    vif(spec);
  } catch (e) {
    assert.ok(e instanceof VifSpecError, String(e));
    return e.message;
  }
  assert.fail(`'${spec}' was accepted`);
}

test('an empty spec gets the defaults: a Xen-OUI MAC, bridge xenbr0, dom0 backend, devid = list index', () => {
  assert.deepEqual(vif(''), { mac: '00:16:3e:2b:cd:ef', bridge: 'xenbr0', backend: '0', trusted: true, devid: 0 });
  assert.equal(parseVifSpec('', { devid: 3, random: fixed }).devid, 3);
});

test('generated MACs are 00:16:3e with the first random byte below 0x80', () => {
  for (let i = 0; i < 50; i++) assert.match(randomXenMac(), /^00:16:3e:[0-7][0-9a-f]:[0-9a-f]{2}:[0-9a-f]{2}$/);
});

test('mac is validated and lower-cased; multicast and zero addresses are refused', () => {
  assert.equal(vif('mac=00:16:3E:5F:00:0A').mac, '00:16:3e:5f:00:0a');
  assert.equal(parseMac('aa:bb:cc:dd:ee:ff'.replace('aa', 'a8')), 'a8:bb:cc:dd:ee:ff');
  assert.equal(fails('mac=00:16:3e:00:01'), "invalid mac '00:16:3e:00:01' (six hex bytes separated by ':')");
  assert.equal(fails('mac=00-16-3e-00-01-02'), "invalid mac '00-16-3e-00-01-02' (six hex bytes separated by ':')");
  assert.equal(fails('mac=ff:ff:ff:ff:ff:ff'), "mac 'ff:ff:ff:ff:ff:ff' is a multicast address");
  assert.equal(fails('mac=00:00:00:00:00:00'), 'mac 00:00:00:00:00:00 is not a valid address');
});

test('the man page example: mac, bridge, ip, rate, and spaces after commas', () => {
  const v = vif('mac=00:16:3e:00:00:01, bridge=xenbr1, ip=192.168.1.10, rate=10Mb/s, script=vif-route, vifname=web0');
  assert.deepEqual(v, { mac: '00:16:3e:00:00:01', bridge: 'xenbr1', backend: '0', trusted: true, devid: 0,
    ip: '192.168.1.10', rate: '10Mb/s', script: 'vif-route', vifname: 'web0' });
});

test('values are checked', () => {
  assert.equal(vif('ip=10.0.0.1 fd00::1/64').ip, '10.0.0.1 fd00::1/64');
  assert.equal(fails('ip=10.0.0.300'), "invalid ip address '10.0.0.300'");
  assert.equal(fails('ip=10.0.0.1/33'), "invalid ip address '10.0.0.1/33'");
  assert.equal(vif('rate=1MB/s@20ms').rate, '1MB/s@20ms');
  assert.equal(fails('rate=fast'), "invalid rate 'fast' (e.g. 10Mb/s or 1MB/s@20ms)");
  assert.equal(fails('rate=10Mb/s@fortnight'), "invalid replenishment interval in '10Mb/s@fortnight'");
  assert.equal(fails('rate=@20ms'), "no rate specified in '@20ms'");
  assert.equal(fails('rate=0Mb/s'), "rate overflow in '0Mb/s'");
  assert.equal(fails('rate=10Mb/s@0ms'), "replenishment interval overflow in '10Mb/s@0ms'");
  assert.equal(fails('rate=1MB/s@5000s'), "replenishment interval overflow in '1MB/s@5000s'");
  assert.equal(fails('rate=1b/s@1ms'), "rate '1b/s@1ms' allows less than one byte per interval");
  assert.equal(vif('mtu=9000').mtu, 9000);
  assert.equal(fails('mtu=20'), "mtu '20' must be a whole number from 68 to 65535");
  assert.equal(vif('devid=5').devid, 5);
  assert.equal(fails('devid=-1'), "devid '-1' must be a whole number from 0 to 65535");
  assert.equal(fails('vifname=a-very-long-interface'), "invalid vifname 'a-very-long-interface' (at most 15 characters, no '/', ':' or spaces)");
  assert.equal(fails('bridge=br/0'), "invalid bridge name 'br/0'");
  assert.equal(fails('type=tap'), "unknown type 'tap' (vif or ioemu)");
  assert.equal(fails('xenbr0'), "expected key=value, found 'xenbr0'");
  assert.equal(fails('trusted=yes'), "trusted 'yes' must be 0 or 1");
});

test('trusted/untrusted as flags or trusted=0|1', () => {
  assert.equal(vif('untrusted').trusted, false);
  assert.equal(vif('trusted=0').trusted, false);
  assert.equal(vif('untrusted, trusted').trusted, true);
});

test('unknown keys and emulated-NIC settings are warned about, not refused', () => {
  const warnings: string[] = [];
  const v = vif('model=e1000, type=ioemu, accel=x, colour=blue', warnings);
  assert.deepEqual([v.model, v.type], ['e1000', 'ioemu']);
  assert.deepEqual(warnings, [
    'model=e1000 selects an emulated NIC, which needs a device model: a PVH guest has none',
    'type=ioemu asks for an emulated NIC, which needs a device model: a PVH guest has none',
    "the vif parameter 'accel' is no longer supported by xl; ignored",
    "unknown vif parameter 'colour' ignored",
  ]);
});

test('serialised specs parse back to the same VifSpec', () => {
  for (const spec of ['', 'mac=00:16:3e:00:00:02, bridge=br1, type=vif, vifname=v, script=s, ip=1.2.3.4, backend=nd, rate=1Gb/s, devid=9, mtu=1500, vlan=10, gatewaydev=eth1, untrusted']) {
    const v = vif(spec);
    assert.deepEqual(vif(serialiseVifSpec(v)), v, spec);
  }
});

test('rate= as libxlu reads it: decimal multiples, b for bits, the interval in s, ms or us (seconds bare, 50 ms by default)', () => {
  assert.deepEqual(parseVifRate('10Mb/s'), { bytes: 62_500, usec: 50_000 });
  assert.deepEqual(parseVifRate('1MB/s@20ms'), { bytes: 20_000, usec: 20_000 });
  assert.deepEqual(parseVifRate('100KB/s@2'), { bytes: 200_000, usec: 2_000_000 });
  assert.deepEqual(parseVifRate('5Gb/s@500us'), { bytes: 312_500, usec: 500 });
  assert.deepEqual(parseVifRate('8b/s@1s'), { bytes: 1, usec: 1_000_000 });
});
