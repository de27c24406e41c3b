// The netfront sample (guests/samples/netfront.c), a netif frontend of our
// own that answers ARP and ICMP echo, on netback without Linux: on the
// toolstack, a station on the in-process switch sends it ARP and echo
// requests built here and checks each reply byte by byte (software CPU and
// KVM); and on a host bridge in a network namespace of the test's own, where
// the namespace's ping reaches it through the vif's tap.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { Toolstack } from './toolstack.js';
import type { NetFrame } from './backends/netback.js';
import type { SwitchPort } from './backends/netswitch.js';
import { needsTcg } from '../testing/accel.js';
import { needsKvm } from '../kvm/testing.js';
import { until, within } from '../testing/wait.js';
import { driverDomainPid, guest, xenodeJs } from '../testing/xenode.js';
import { busyboxPath } from '../testing/initramfs.js';
import { havePeer } from '../testing/peers.js';
import { haveNetAdmin, Netns } from '../testing/netns.js';

const NETFRONT = guest('netfront');

const mac = (s: string): Uint8Array => Uint8Array.from(s.split(':').map((h) => parseInt(h, 16)));
const ip4 = (s: string): Uint8Array => Uint8Array.from(s.split('.').map(Number));

/** RFC 1071: the one's complement of the one's complement sum of the 16-bit words (0 over a block holding its right checksum). */
function csum(d: Uint8Array): number {
  let s = 0;
  for (let i = 0; i + 1 < d.length; i += 2) s += (d[i]! << 8) | d[i + 1]!;
  if (d.length & 1) s += d[d.length - 1]! << 8;
  while (s >> 16) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

const put16 = (d: Uint8Array, at: number, v: number) => { d[at] = v >>> 8; d[at + 1] = v & 0xff; };

/** An Ethernet/IPv4 ARP frame (RFC 826): 14 + 28 bytes. */
function arpFrame(op: 1 | 2, dst: Uint8Array, sha: Uint8Array, spa: Uint8Array, tha: Uint8Array, tpa: Uint8Array): Uint8Array {
  const f = new Uint8Array(42);
  f.set(dst, 0); f.set(sha, 6); put16(f, 12, 0x0806);
  put16(f, 14, 1); put16(f, 16, 0x0800); f[18] = 6; f[19] = 4; put16(f, 20, op);
  f.set(sha, 22); f.set(spa, 28); f.set(tha, 32); f.set(tpa, 38);
  return f;
}

/** An ICMP echo request or reply (type 8 or 0) in an IPv4 packet without options, checksums right. */
function icmpFrame(type: 0 | 8, dst: Uint8Array, src: Uint8Array, sip: Uint8Array, dip: Uint8Array, id: number, seq: number, payload: Uint8Array, ipId: number): Uint8Array {
  const f = new Uint8Array(14 + 20 + 8 + payload.length);
  f.set(dst, 0); f.set(src, 6); put16(f, 12, 0x0800);
  const ip = f.subarray(14, 34);
  ip[0] = 0x45; put16(ip, 2, 20 + 8 + payload.length); put16(ip, 4, ipId); put16(ip, 6, 0x4000); ip[8] = 64; ip[9] = 1;
  ip.set(sip, 12); ip.set(dip, 16);
  put16(ip, 10, csum(ip));
  const icmp = f.subarray(34);
  icmp[0] = type; put16(icmp, 4, id); put16(icmp, 6, seq); icmp.set(payload, 8);
  put16(icmp, 2, csum(icmp));
  return f;
}

const hex = (d: Uint8Array): string => Buffer.from(d).toString('hex');

/** A station on the switch: what it receives, in order. */
function station(name: string): SwitchPort & { got: Uint8Array[] } {
  const got: Uint8Array[] = [];
  return { name, got, receive(f: NetFrame) { got.push(Uint8Array.from(f.data)); } };
}

/** `xenode run` of the netfront sample inside `ns` (put in `procs` to be killed), its console and log kept; `fail` says both. */
function netfrontInNetns(ns: Netns, procs: ChildProcess[], cmdline: string, vif: string) {
  const p = ns.spawn(process.execPath, [xenodeJs, 'run', NETFRONT, '--cmdline', cmdline, '--vif', vif]);
  procs.push(p);
  const x = {
    out: '', err: '',
    exited: new Promise<number | null>((r) => p.on('exit', (code) => r(code))),
    fail: (e: Error): never => { throw new Error(`${e.message}; console:\n${x.out.slice(-3000)}\nstderr:\n${x.err.slice(-3000)}`); },
  };
  p.stdout!.on('data', (b: Buffer) => { x.out += b.toString('latin1'); });
  p.stderr!.on('data', (b: Buffer) => { x.err += b.toString('latin1'); });
  return x;
}

const GUEST_MAC = mac('00:16:3e:00:00:21'), GUEST_IP = ip4('10.0.0.2');
const ST_MAC = mac('00:16:3e:7f:00:01'), ST_IP = ip4('10.0.0.1');
const BCAST = mac('ff:ff:ff:ff:ff:ff'), ZERO = new Uint8Array(6);

async function onToolstack(t: TestContext, accel: 'tcg' | 'kvm'): Promise<void> {
  const ts = await Toolstack.start({ pcpus: 1, accel, log: () => {} });
  try {
    let out = '';
    const append = (s: string) => { out += s; };
    const onConsole = (_d: number, _src: string, s: string, eol: boolean) => append(eol ? `${s}\n` : s);
    ts.hv.on('console', onConsole);
    const down = new Map<number, number>();
    ts.hv.on('shutdown', (domid: number, reason: number) => down.set(domid, reason));
    const st = station('test-station');
    const sw = ts.switches.attach('xenbr0', st);
    const send = (f: Uint8Array) => sw.input(st, { data: f });
    const t0 = performance.now();
    const d = await ts.create({ name: 'netfront', kernel: readFileSync(NETFRONT), memoryMiB: 8, vcpus: 1, cmdline: 'ip=10.0.0.2 pings=3 idle_ms=30000 look_ms=5000' },
      (b) => append(Buffer.from(b).toString('latin1')), { vifs: [{ mac: '00:16:3e:00:00:21', bridge: 'xenbr0' }] });
    const fail = (e: Error): never => { throw new Error(`${e.message}; console:\n${out.slice(-3000)}`); };
    await until('the netfront to connect', () => /netfront: connected/.test(out) || undefined, 30_000, 5).catch(fail);
    const tConnected = performance.now();
    assert.match(out, /netfront: mac 00:16:3e:00:00:21 backend \/local\/domain\/0\/backend\/vif\/\d+\/0 \(d0\) ip 10\.0\.0\.2/);
    // the handshake as Linux's netfront does it, and both ends Connected
    const v = d.vifs[0]!, fe = v.frontendPath, be = v.backendPath;
    assert.deepEqual([await ts.client.read(`${fe}/state`), await ts.client.read(`${be}/state`)], ['4', '4']);
    for (const [k, want] of [['request-rx-copy', '1'], ['feature-rx-notify', '1'], ['feature-sg', '0'], ['tx-ring-ref', '8'], ['rx-ring-ref', '9']]) {
      assert.equal(await ts.client.read(`${fe}/${k}`), want, k);
    }
    assert.match(await ts.client.read(`${fe}/event-channel`), /^\d+$/);
    assert.deepEqual(v.backend.lastConnection, { splitEventChannels: false, sg: false, gsoTcpv4: false, gsoTcpv6: false, queues: 1 });

    const next = async (what: string): Promise<Uint8Array> => {
      const n = st.got.length;
      await until(what, () => st.got.length > n || undefined, 10_000, 1).catch(fail);
      return st.got[n]!;
    };
    // ARP: a request for another address is not answered (the reply that comes is to the second one)
    send(arpFrame(1, BCAST, ST_MAC, ST_IP, ZERO, ip4('10.0.0.99')));
    let at = performance.now();
    send(arpFrame(1, BCAST, ST_MAC, ST_IP, ZERO, GUEST_IP));
    const arp = await next('the ARP reply');
    const arpMs = performance.now() - at;
    assert.equal(hex(arp), hex(arpFrame(2, ST_MAC, GUEST_MAC, GUEST_IP, ST_MAC, ST_IP)), 'the ARP reply: to the asker, opcode 2, our addresses, the asker\'s as target');
    assert.equal(st.got.length, 1);

    // ICMP: one with a bad checksum and one to another address are not answered; three good ones are
    const bad = icmpFrame(8, GUEST_MAC, ST_MAC, ST_IP, GUEST_IP, 0x4242, 99, new Uint8Array(8), 1);
    bad[bad.length - 1] ^= 0xff;
    send(bad);
    send(icmpFrame(8, GUEST_MAC, ST_MAC, ST_IP, ip4('10.0.0.98'), 0x4242, 98, new Uint8Array(8), 2));
    const rtts: number[] = [];
    for (const [seq, size] of [[1, 56], [2, 1000], [3, 1472]] as const) {
      const payload = Uint8Array.from({ length: size }, (_, i) => (i * 7 + seq) & 0xff);
      const req = icmpFrame(8, GUEST_MAC, ST_MAC, ST_IP, GUEST_IP, 0x4242, seq, payload, 100 + seq);
      at = performance.now();
      send(req);
      const r = await next(`the echo reply ${seq}`);
      rtts.push(performance.now() - at);
      // MACs and addresses swapped, type 0, the same id, sequence and payload, both checksums right
      assert.equal(r.length, req.length);
      assert.equal(hex(r.subarray(0, 6)), hex(ST_MAC));
      assert.equal(hex(r.subarray(6, 12)), hex(GUEST_MAC));
      assert.equal(csum(r.subarray(14, 34)), 0, 'the IPv4 header checksum');
      assert.equal(csum(r.subarray(34)), 0, 'the ICMP checksum');
      assert.equal(hex(r), hex(icmpFrame(0, ST_MAC, GUEST_MAC, GUEST_IP, ST_IP, 0x4242, seq, payload, 100 + seq)), `echo reply ${seq}`);
    }
    assert.equal(st.got.length, 4, 'nothing else came');
    // between its 5 s looks at xenstore only the event channel wakes the guest: a reply within 2 s means
    // netback notified it of the request (rsp_event armed by RING_FINAL_CHECK_FOR_RESPONSES), and it
    // notified netback of the reply (RING_PUSH_REQUESTS_AND_CHECK_NOTIFY against req_event)
    for (const ms of [arpMs, ...rtts]) assert.ok(ms < 2000, `answered in ${ms.toFixed(0)} ms`);
    await until('the guest to power off', () => down.has(d.domid) || undefined, 30_000, 5).catch(fail);
    const tDone = performance.now();
    assert.equal(down.get(d.domid), 0, out);
    assert.match(out, /netfront: answered 3 pings \(count\), 1 ARP requests; rx 7 frames \(0 errors, 2 ignored, 1 bad checksums\), tx 4 frames \(0 errors, 0 dropped\)/, out);
    assert.match(out, /RESULT: \d+ passed, 0 failed/, out);
    assert.match(out, /^PASS netfront-rings-revoked-after-close$/m);
    // netback counted them; the guest closed its vif and the backend followed (rings unmapped)
    const s = v.backend.stats;
    assert.deepEqual([s.rxPackets, s.txPackets, s.txErrors, s.rxDropped], [7, 4, 0, 0], JSON.stringify(s));
    assert.equal(s.txBytes, 42 + 98 + 1042 + 1514);
    assert.deepEqual([await ts.client.read(`${fe}/state`), await ts.client.read(`${be}/state`)], ['6', '6']);
    assert.equal(ts.hv.gntdev.maptrack.inUse, 0, 'the rings unmapped');
    ts.hv.off('console', onConsole);
    t.diagnostic(`${accel}: connected ${(tConnected - t0).toFixed(0)} ms after create; ARP reply ${arpMs.toFixed(1)} ms; echo replies ${rtts.map((x) => x.toFixed(1)).join(', ')} ms; powered off ${(tDone - t0).toFixed(0)} ms after create`);
    await ts.destroy(d.domid);
  } finally {
    await ts.shutdown();
  }
}

for (const accel of ['tcg', 'kvm'] as const) {
  test(`the netfront sample on netback (${accel === 'tcg' ? 'software CPU' : 'KVM'}): a station on the switch gets byte-exact ARP and echo replies, three pings end it, and it closes its vif`,
    { ...(accel === 'tcg' ? needsTcg() : needsKvm()), timeout: 120_000 }, (t) => onToolstack(t, accel));
}

test('the netfront sample on a host bridge: `xenode run --vif bridge=br0` in a network namespace, whose ping gets 3 of 3 answers through the tap', { timeout: 120_000 }, async (t) => {
  if (!havePeer(t, existsSync(busyboxPath), "busybox (its ping) in .cache/linux", 'scripts/fetch-linux.sh')) return;
  if (!haveNetAdmin(t)) return;
  const ns = Netns.create('xenode-nfront');
  const procs: ChildProcess[] = [];
  try {
    ns.ip('link', 'add', 'br0', 'type', 'bridge');
    ns.ip('addr', 'add', '10.77.3.1/24', 'dev', 'br0');
    ns.ip('link', 'set', 'br0', 'up');
    const t0 = performance.now();
    const x = netfrontInNetns(ns, procs, 'ip=10.77.3.2 pings=3 idle_ms=60000', 'mac=00:16:3e:00:00:22,bridge=br0');
    const { exited, fail } = x;
    const tapName = await until('the vif\'s tap', () => /tap (vif\d+\.0) on host bridge br0/.exec(x.err)?.[1], 30_000, 20).catch(fail);
    assert.equal(ns.link(tapName)?.['master'], 'br0', 'the tap is on br0');
    await until('the netfront to connect', () => /netfront: connected/.test(x.out) || undefined, 30_000, 10).catch(fail);
    const tConnected = performance.now();
    const ping = ns.exec(busyboxPath, ['ping', '-c', '3', '-W', '5', '10.77.3.2'], 30_000);
    assert.match(ping, /3 packets transmitted, 3 packets received, 0% packet loss/, ping);
    const code = await within('xenode to exit after the guest powered off', exited, 30_000).catch(fail);
    assert.equal(code, 0, `${x.out}\n${x.err}`);
    assert.match(x.out, /netfront: answered 3 pings \(count\)/);
    assert.match(x.out, /RESULT: \d+ passed, 0 failed/);
    assert.equal(ns.link(tapName), null, 'the tap went with the domain');
    t.diagnostic(`connected ${(tConnected - t0).toFixed(0)} ms after start; ${ping.trim().split('\n').slice(-1)[0]!}`);
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill();
    ns.delete();
  }
});

test('script=vif-route: the vif\'s tap is routed, not bridged (the host\'s address, proxy ARP, a route to ip=); the namespace\'s ping reaches the guest; the route goes with the tap', { timeout: 120_000 }, async (t) => {
  if (!havePeer(t, existsSync(busyboxPath), "busybox (its ping) in .cache/linux", 'scripts/fetch-linux.sh')) return;
  if (!haveNetAdmin(t)) return;
  const ns = Netns.create('xenode-vroute');
  const procs: ChildProcess[] = [];
  try {
    // the host's side: an interface with the address the routed tap takes (vif-route's gatewaydev)
    ns.ip('link', 'add', 'gw0', 'type', 'bridge'); // any interface with an address will do (no dummy driver everywhere)
    ns.ip('addr', 'add', '10.77.6.1/24', 'dev', 'gw0');
    ns.ip('link', 'set', 'gw0', 'up');
    const x = netfrontInNetns(ns, procs, 'ip=10.77.6.2 pings=3 idle_ms=60000', 'mac=00:16:3e:00:00:24,script=vif-route,ip=10.77.6.2,gatewaydev=gw0');
    const { exited, fail } = x;
    const tapName = await until('the routed tap', () => /tap (vif\d+\.0) routed: 10\.77\.6\.2 via 10\.77\.6\.1 \(gw0\)/.exec(x.err)?.[1], 30_000, 20).catch(fail);
    assert.equal(ns.link(tapName)?.['master'], undefined, 'on no bridge');
    assert.match(ns.ip('route', 'show', '10.77.6.2'), new RegExp(`^10\\.77\\.6\\.2 dev ${tapName.replace('.', '\\.')} scope link src 10\\.77\\.6\\.1`));
    assert.equal(ns.exec('cat', [`/proc/sys/net/ipv4/conf/${tapName}/proxy_arp`]).trim(), '1');
    await until('the netfront to connect', () => /netfront: connected/.test(x.out) || undefined, 30_000, 10).catch(fail);
    const ping = ns.exec(busyboxPath, ['ping', '-c', '3', '-W', '5', '10.77.6.2'], 30_000);
    assert.match(ping, /3 packets transmitted, 3 packets received, 0% packet loss/, ping);
    const code = await within('xenode to exit after the guest powered off', exited, 30_000).catch(fail);
    assert.equal(code, 0, `${x.out}\n${x.err}`);
    assert.equal(ns.link(tapName), null, 'the tap went with the domain');
    assert.equal(ns.ip('route', 'show', '10.77.6.2').trim(), '', 'and its route with it');
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill();
    ns.delete();
  }
});


test('netback in a driver domain: `--vif ...,backend=<name>` puts the vif\'s tap on the host bridge from the driver domain; killed with SIGKILL, it is started again and the ping goes on', { timeout: 150_000 }, async (t) => {
  if (!havePeer(t, existsSync(busyboxPath), "busybox (its ping) in .cache/linux", 'scripts/fetch-linux.sh')) return;
  if (!haveNetAdmin(t)) return;
  const ns = Netns.create('xenode-netdd');
  const procs: ChildProcess[] = [];
  const name = `netdd${process.pid}`;
  try {
    ns.ip('link', 'add', 'br0', 'type', 'bridge');
    ns.ip('addr', 'add', '10.77.4.1/24', 'dev', 'br0');
    ns.ip('link', 'set', 'br0', 'up');
    const x = netfrontInNetns(ns, procs, 'ip=10.77.4.2 pings=6 idle_ms=60000', `mac=00:16:3e:00:00:23,bridge=br0,backend=${name}`);
    const { exited, fail } = x;
    // the tap is the driver domain's: its log line comes through the toolstack with its domid and name
    const tapName = await until('the vif\'s tap', () => new RegExp(`d\\d+ \\(${name}\\): .*tap (vif\\d+\\.0) on host bridge br0`).exec(x.err)?.[1], 30_000, 20).catch(fail);
    assert.equal(ns.link(tapName)?.['master'], 'br0', 'the tap is on br0');
    await until('the netfront to connect', () => /netfront: connected/.test(x.out) || undefined, 30_000, 10).catch(fail);
    assert.match(x.out, /netfront: mac 00:16:3e:00:00:23 backend \/local\/domain\/(\d+)\/backend\/vif\/\d+\/0 \(d\1\)/, 'the frontend names the driver domain as its backend');
    const first = ns.exec(busyboxPath, ['ping', '-c', '3', '-W', '5', '10.77.4.2'], 30_000);
    assert.match(first, /3 packets transmitted, 3 packets received, 0% packet loss/, first);
    const pid = driverDomainPid(name);
    assert.ok(pid, 'the driver domain is a process of its own');
    process.kill(pid, 'SIGKILL');
    await until('the driver domain to be started again', () => /driver domain started again/.test(x.err) || undefined, 20_000, 20).catch(fail);
    await until('its tap back on br0', () => (ns.link(tapName)?.['master'] === 'br0' && driverDomainPid(name) !== pid) || undefined, 20_000, 20).catch(fail);
    // the frontend never saw its backend go: the new netback took up its rings where the old one left them
    const second = ns.exec(busyboxPath, ['ping', '-c', '3', '-W', '5', '10.77.4.2'], 30_000);
    assert.match(second, /3 packets transmitted, 3 packets received, 0% packet loss/, `${second}\n${x.err.slice(-2000)}`);
    const code = await within('xenode to exit after the guest powered off', exited, 30_000).catch(fail);
    assert.equal(code, 0, `${x.out}\n${x.err}`);
    assert.match(x.out, /netfront: answered 6 pings \(count\)/);
    assert.equal(ns.link(tapName), null, 'the tap went with the domain');
    assert.equal(driverDomainPid(name), undefined, 'the driver domain stopped with the toolstack');
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill();
    const left = driverDomainPid(name);
    if (left) process.kill(left, 'SIGKILL');
    ns.delete();
  }
});

test('ip= on the vif: netback drops the IPv4 the guest sends from another address (vif-bridge\'s anti-spoofing); its ARP still goes out', needsTcg(), async () => {
  const ts = await Toolstack.start({ pcpus: 1, accel: 'tcg', log: () => {} });
  try {
    let out = '';
    ts.hv.on('console', (_d: number, _src: string, s: string, eol: boolean) => { out += eol ? `${s}\n` : s; });
    const st = station('spoof-station');
    const sw = ts.switches.attach('xenbr0', st);
    // the guest uses 10.0.0.2; the toolstack says it has 10.0.0.9
    const d = await ts.create({ name: 'netfront-ip', kernel: readFileSync(NETFRONT), memoryMiB: 8, vcpus: 1, cmdline: 'ip=10.0.0.2 pings=1 idle_ms=30000 look_ms=5000' },
      (b) => { out += Buffer.from(b).toString('latin1'); }, { vifs: [{ mac: '00:16:3e:00:00:21', bridge: 'xenbr0', ip: '10.0.0.9' }] });
    const fail = (e: Error): never => { throw new Error(`${e.message}; console:\n${out.slice(-3000)}`); };
    const v = d.vifs[0]!;
    assert.equal(await ts.client.read(`${v.backendPath}/ip`), '10.0.0.9', 'libxl\'s ip node, for the hotplug script\'s rules');
    await until('the netfront to connect', () => /netfront: connected/.test(out) || undefined, 30_000, 5).catch(fail);
    sw.input(st, { data: arpFrame(1, BCAST, ST_MAC, ST_IP, ZERO, GUEST_IP) });
    await until('the ARP reply (ARP is not filtered)', () => st.got.length > 0 || undefined, 10_000, 1).catch(fail);
    assert.equal(hex(st.got[0]!), hex(arpFrame(2, ST_MAC, GUEST_MAC, GUEST_IP, ST_MAC, ST_IP)));
    sw.input(st, { data: icmpFrame(8, GUEST_MAC, ST_MAC, ST_IP, GUEST_IP, 0x4242, 1, new Uint8Array(56), 7) });
    // the guest answers (it says so), and netback drops the answer: its source is not the vif's
    await until('the guest to answer its ping', () => /netfront: answered 1 pings/.test(out) || undefined, 10_000, 5).catch(fail);
    await until('netback to drop the answer', () => v.backend.stats.txSpoofed > 0 || undefined, 5000, 5).catch(fail);
    assert.equal(st.got.length, 1, 'no echo reply reached the switch');
    assert.equal(v.backend.stats.txSpoofed, 1, JSON.stringify(v.backend.stats));
  } finally {
    await ts.shutdown();
  }
});

test('the netfront sample closes its vif when asked: on control/shutdown, and when xl network-detach closes the backend', needsTcg(), async () => {
  const ts = await Toolstack.start({ pcpus: 1, accel: 'tcg', log: () => {} });
  try {
    const down = new Map<number, number>();
    ts.hv.on('shutdown', (domid: number, reason: number) => down.set(domid, reason));
    const text = new Map<number, string>();
    ts.hv.on('console', (domid: number, _src: string, s: string, eol: boolean) => text.set(domid, (text.get(domid) ?? '') + (eol ? `${s}\n` : s)));
    for (const how of ['control/shutdown', 'network-detach'] as const) {
      const d = await ts.create({ name: `netfront-${how.replace('/', '-')}`, kernel: readFileSync(NETFRONT), memoryMiB: 8, vcpus: 1, cmdline: 'pings=0 idle_ms=30000 look_ms=20' },
        () => {}, { vifs: [{ bridge: 'xenbr0' }] });
      const out = () => text.get(d.domid) ?? '';
      const fail = (e: Error): never => { throw new Error(`${how}: ${e.message}; console:\n${out().slice(-3000)}`); };
      await until('the netfront to connect', () => /netfront: connected/.test(out()) || undefined, 30_000, 5).catch(fail);
      const v = d.vifs[0]!;
      if (how === 'control/shutdown') {
        await ts.client.write(`/local/domain/${d.domid}/control/shutdown`, 'poweroff');
      } else {
        await ts.detachVif(d.domid, '0');
        assert.equal(await ts.client.tryRead(`${v.frontendPath}/state`), undefined, 'the device removed once its frontend closed');
      }
      await until('the guest to power off', () => down.has(d.domid) || undefined, 30_000, 5).catch(fail);
      assert.equal(down.get(d.domid), 0, out());
      assert.match(out(), how === 'control/shutdown' ? /netfront: control\/shutdown poweroff/ : /netfront: the backend is closing \(5\)/);
      assert.match(out(), /netfront: answered 0 pings \((shutdown|backend)\)/);
      assert.match(out(), /^PASS netfront-rings-revoked-after-close$/m);
      assert.match(out(), /RESULT: \d+ passed, 0 failed/, out());
      if (how === 'control/shutdown') assert.deepEqual([await ts.client.read(`${v.frontendPath}/state`), await ts.client.read(`${v.backendPath}/state`)], ['6', '6']);
      assert.equal(ts.hv.gntdev.maptrack.inUse, 0, 'the rings unmapped');
      await ts.destroy(d.domid);
    }
  } finally {
    await ts.shutdown();
  }
});
