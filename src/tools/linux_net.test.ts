// Two Debian Linux guests, each with Debian's own xen-netfront (loaded from
// the initramfs) on a vif served by the control domain's netback, both on
// the bridge xenbr0: the in-process switch joins them; one pings the other,
// sends it 2 MiB over TCP that arrive intact (as GSO packets of up to 64 KiB
// both ways through netback), and pings it with 9000-byte frames that take
// several ring slots each way. A third guest has a vif
// attached while it runs and pings a station on the switch, then has it
// detached.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { busyboxInitramfs, haveLinux, linuxBzImage, NETFRONT_INIT, netfrontModule } from '../testing/initramfs.js';
import { havePeer } from '../testing/peers.js';
import { until } from '../testing/wait.js';
import type { Toolstack, ToolstackDomain } from './toolstack.js';
import type { NetFrame } from './backends/netback.js';
import type { SwitchPort } from './backends/netswitch.js';

/** A boot under the software CPU on a loaded 2-CPU host: ~60-90 s to /init. */
const BOOT_MS = 200_000;
const netfront = netfrontModule;

const up = (ip: string) => `${NETFRONT_INIT}ifconfig lo 127.0.0.1 up
ifconfig eth0 ${ip} netmask 255.255.255.0 up && echo "net: up ${ip}"
`;

/** A waits for B to answer at all (it may still be booting), then pings it three times. */
const INIT_A = `${up('10.0.0.1')}
for i in $(seq 1 120); do ping -c 1 -W 1 10.0.0.2 >/dev/null 2>&1 && break; done
echo "net: ping begins"
ping -c 3 -W 5 10.0.0.2
echo "net: ping done"
# 2 MiB over TCP: checksums left blank by the sender (CHECKSUM_PARTIAL), frames across page boundaries
dd if=/dev/urandom of=/tmp/data bs=1k count=2048 2>/dev/null
echo "net: sent $(wc -c < /tmp/data) $(md5sum < /tmp/data | cut -c1-32)"
for i in $(seq 1 20); do nc 10.0.0.2 5000 < /tmp/data && break; sleep 0.5; done
echo "net: send done"
# 8000-byte pings in 9000-byte frames: several slots a packet both ways (feature-sg)
ifconfig eth0 mtu 9000
echo "net: big ping begins"
ping -c 2 -W 5 -s 8000 10.0.0.2
echo "net: big ping done"
poweroff -f
`;

/** B answers until it is destroyed; bounded, so a lost guest still ends. */
const INIT_B = `${up('10.0.0.2')}
ifconfig eth0 mtu 9000
nc -l -p 5000 > /tmp/got
echo "net: got $(wc -c < /tmp/got) $(md5sum < /tmp/got | cut -c1-32)"
for i in $(seq 1 400); do sleep 1; done
poweroff -f
`;

test("two Linux guests' xen-netfronts on one bridge: A pings B three times through netback and the switch, then sends it 2 MiB over TCP and pings it in 9000-byte frames", { timeout: 2 * BOOT_MS + 60_000 }, async (t) => {
  if (!haveLinux(t)) return;
  if (!havePeer(t, existsSync(netfront), "xen-netfront.ko from Debian's kernel package", 'scripts/fetch-linux.sh')) return;
  const { Toolstack } = await import('./toolstack.js');
  let ts: Toolstack | undefined;
  try {
    ts = await Toolstack.start({ pcpus: 2, log: () => {} });
    const down = new Map<number, number>();
    ts.hv.on('shutdown', (domid: number, reason: number) => down.set(domid, reason));
    const kernel = readFileSync(linuxBzImage), ko = readFileSync(netfront);
    const boot = async (name: string, init: string, mac: string, trusted = true): Promise<{ d: ToolstackDomain; out: () => string }> => {
      let out = '';
      const d = await ts!.create({ name, kernel, ramdisk: busyboxInitramfs({ init, files: { 'xen-netfront.ko': ko } }), memoryMiB: 256, vcpus: 1, cmdline: 'console=hvc0' },
        (b) => { out += Buffer.from(b).toString('latin1'); }, { vifs: [{ mac, bridge: 'xenbr0', trusted }] });
      return { d, out: () => out };
    };
    // B does not trust its backend: its netfront shares bounce pages only (the same path, other pages)
    const b = await boot('linux-net-b', INIT_B, '00:16:3e:00:00:02', false);
    const a = await boot('linux-net-a', INIT_A, '00:16:3e:00:00:01');
    const consoles = () => `A:\n${a.out().slice(-3000)}\nB:\n${b.out().slice(-2000)}`;
    await until('guest A to power off', () => down.has(a.d.domid) || undefined, 2 * BOOT_MS - 20_000, 200).catch((e: Error) => { throw new Error(`${e.message}; consoles:\n${consoles()}`); });
    const outA = a.out(), outB = b.out();
    assert.doesNotMatch(outA + outB, /insmod failed/, consoles());
    assert.match(outA, /net: mac 00:16:3e:00:00:01/, consoles());
    assert.match(outB, /net: mac 00:16:3e:00:00:02/, consoles());
    assert.match(outA, /net: up 10\.0\.0\.1/);
    assert.match(outB, /net: up 10\.0\.0\.2/);
    const ping = /net: ping begins([^]*)net: ping done/.exec(outA);
    assert.ok(ping, consoles());
    assert.equal((ping[1]!.match(/bytes from 10\.0\.0\.2: seq=\d+ ttl=64/g) ?? []).length, 3, ping[1]);
    assert.match(ping[1]!, /3 packets transmitted, 3 packets received, 0% packet loss/);
    const sent = /net: sent (\d+) ([0-9a-f]{32})/.exec(outA);
    assert.ok(sent, consoles());
    assert.equal(sent[1], String(2 << 20));
    assert.match(outA, /net: send done/);
    const got = await until('guest B to have it all', () => /net: got (\d+) ([0-9a-f]{32})/.exec(b.out()) ?? undefined, 30_000, 100).catch((e: Error) => { throw new Error(`${e.message}; consoles:\n${consoles()}`); });
    assert.deepEqual([got[1], got[2]], [sent[1], sent[2]], 'B received what A sent');
    const big = /net: big ping begins([^]*)net: big ping done/.exec(outA);
    assert.ok(big, consoles());
    assert.equal((big[1]!.match(/8008 bytes from 10\.0\.0\.2: seq=\d+ ttl=64/g) ?? []).length, 2, big[1]);
    assert.match(big[1]!, /2 packets transmitted, 2 packets received, 0% packet loss/);
    // both vifs connected through the handshake (A's closed again by Linux's shutdown, and the backend
    // followed), and what crossed them was counted
    const [stA, stB] = [a.d.vifs[0]!.backend.stats, b.d.vifs[0]!.backend.stats];
    assert.ok(stA.txBytes > 2 << 20 && stB.rxBytes > 2 << 20, 'the data crossed the vifs');
    // TCP went as GSO (feature-gso-tcpv4 both ways): A's netfront sent segments larger than the MTU in one
    // packet with a GSO extra, and B's netfront took them whole, the extra in a slot of its own
    assert.ok(stA.txGsoPackets > 0 && stB.rxGsoPackets > 0, `GSO used: ${JSON.stringify({ stA, stB })}`);
    assert.equal(stB.rxGsoSegmented, 0, 'nothing cut for a frontend that takes GSO');
    assert.ok(stA.txMaxSlots >= 3 && stB.rxMaxSlots >= 3, JSON.stringify({ stA, stB }));
    assert.ok(stA.txBytes / stA.txPackets > 1514, `frames larger than the MTU on average: ${stA.txBytes / stA.txPackets}`);
    for (const g of [a, b]) assert.deepEqual(g.d.vifs[0]!.backend.lastConnection, { splitEventChannels: true, sg: true, gsoTcpv4: true, gsoTcpv6: true, queues: 1 });
    // 8042-byte pings: two receive buffers each (B's replies to A), and at least as many transmit slots
    // (more where the sender's buffer straddles pages)
    assert.ok(stB.txMaxSlots >= 2 && stA.rxMaxSlots === 2, JSON.stringify(stA));
    for (const [g, state] of [[a, '6'], [b, '4']] as const) {
      const fe = `/local/domain/${g.d.domid}/device/vif/0`, be = `/local/domain/0/backend/vif/${g.d.domid}/0`;
      assert.deepEqual([await ts.client.read(`${fe}/state`), await ts.client.read(`${be}/state`)], [state, state]);
      assert.equal(await ts.client.read(`${fe}/request-rx-copy`), '1');
      assert.ok(g.d.vifs[0]!.backend.lastConnection, 'connected once');
      const st = g.d.vifs[0]!.backend.stats;
      t.diagnostic(`${g.d.domid}: ${JSON.stringify(st)} ${JSON.stringify(g.d.vifs[0]!.backend.lastConnection)}`);
      assert.ok(st.txPackets >= 4 && st.rxPackets >= 4 && st.txErrors === 0 && st.rxDropped === 0, JSON.stringify(st));
    }
    assert.equal(await ts.client.read(`/local/domain/${b.d.domid}/device/vif/0/trusted`), '0');
    assert.equal(ts.switches.get('xenbr0')?.portCount, 1, 'A left the switch when it closed its vif');
    await ts.destroy(b.d.domid);
    await ts.destroy(a.d.domid);
    assert.equal(ts.switches.get('xenbr0'), undefined, 'the switch went with its last port');
    assert.equal(await ts.client.tryRead(`/local/domain/0/backend/vif/${b.d.domid}`), undefined);
    assert.equal(ts.hv.gntdev.maptrack.inUse, 0, 'the rings unmapped');
  } finally {
    await ts?.shutdown();
  }
});

/** Waits for a NIC, pings 10.0.0.1 over it, waits for it to go, powers off; bounded throughout. */
const INIT_HOTPLUG = `
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
insmod /xen-netfront.ko || echo "net: insmod failed"
echo "hotplug: waiting"
for i in $(seq 1 1000); do [ -e /sys/class/net/eth0 ] && break; sleep 0.2; done
echo "hotplug: eth0 $(cat /sys/class/net/eth0/address)"
ifconfig eth0 10.0.0.2 netmask 255.255.255.0 up
ping -c 3 -W 5 10.0.0.1
echo "hotplug: pinged"
for i in $(seq 1 1000); do [ -e /sys/class/net/eth0 ] || break; sleep 0.2; done
echo "hotplug: gone"
poweroff -f
`;

/** A station on the switch that answers ARP for `ip` and ICMP echo requests to it, as a host on the bridge would. */
function echoStation(mac: Uint8Array, ip: Uint8Array, send: (f: Uint8Array) => void): SwitchPort & { answered: number } {
  const st = {
    name: 'test-station',
    answered: 0,
    receive(f: NetFrame): void {
      const d = f.data;
      const type = (d[12]! << 8) | d[13]!;
      const eq = (a: Uint8Array, at: number) => a.every((b, i) => d[at + i] === b);
      if (type === 0x0806 && d.length >= 42 && d[21] === 1 && eq(ip, 38)) {
        // ARP request for us: a reply with our address, to the asker
        const r = Uint8Array.from(d.subarray(0, 42));
        r.set(d.subarray(6, 12), 0); r.set(mac, 6);
        r[21] = 2;
        r.set(mac, 22); r.set(ip, 28); r.set(d.subarray(22, 32), 32);
        send(r);
      } else if (type === 0x0800 && d.length >= 42 && d[23] === 1 && eq(ip, 30) && d[14 + ((d[14]! & 15) * 4)] === 8) {
        // ICMP echo request: the same packet back as an echo reply (RFC 1624's incremental checksum for the type)
        const r = Uint8Array.from(d);
        const icmp = 14 + (d[14]! & 15) * 4;
        r.set(d.subarray(6, 12), 0); r.set(mac, 6);
        r.set(d.subarray(30, 34), 26); r.set(d.subarray(26, 30), 30);
        r[icmp] = 0;
        let sum = ((r[icmp + 2]! << 8) | r[icmp + 3]!) + 0x0800;
        sum = (sum & 0xffff) + (sum >>> 16);
        r[icmp + 2] = sum >>> 8; r[icmp + 3] = sum & 0xff;
        st.answered++;
        send(r);
      }
    },
  };
  return st;
}

test('xl network-attach while Linux runs: its netfront finds eth0 with the MAC given and pings across it; network-detach: Linux closes it and it goes', { timeout: BOOT_MS + 90_000 }, async (t) => {
  if (!haveLinux(t)) return;
  if (!havePeer(t, existsSync(netfront), "xen-netfront.ko from Debian's kernel package", 'scripts/fetch-linux.sh')) return;
  const { Toolstack } = await import('./toolstack.js');
  const log: string[] = [];
  const ts = await Toolstack.start({ pcpus: 1, log: (l) => log.push(l) });
  try {
    const down = new Map<number, number>();
    ts.hv.on('shutdown', (domid: number, reason: number) => down.set(domid, reason));
    let out = '';
    const d = await ts.create({ name: 'linux-vif-hotplug', kernel: readFileSync(linuxBzImage), ramdisk: busyboxInitramfs({ init: INIT_HOTPLUG, files: { 'xen-netfront.ko': readFileSync(netfront) } }), memoryMiB: 256, vcpus: 1, cmdline: 'console=hvc0' },
      (b) => { out += Buffer.from(b).toString('latin1'); });
    const fail = (e: Error): never => { throw new Error(`${e.message}; console:\n${out.slice(-4000)}`); };
    await until('the guest to wait for its NIC', () => /hotplug: waiting/.test(out) || undefined, BOOT_MS, 50).catch(fail);
    const station = echoStation(Uint8Array.from([0x00, 0x16, 0x3e, 0x7f, 0x00, 0x01]), Uint8Array.from([10, 0, 0, 1]), (f) => sw.input(station, { data: f }));
    const sw = ts.switches.attach('xenbr0', station);
    const v = await ts.attachVif(d.domid, { mac: '00:16:3e:00:00:05', bridge: 'xenbr0' });
    assert.equal(v.devid, 0, 'the first free devid');
    await until('Linux to ping across it', () => /hotplug: pinged/.test(out) || undefined, 60_000, 50).catch(fail);
    assert.match(out, /hotplug: eth0 00:16:3e:00:00:05/);
    assert.match(out, /3 packets transmitted, 3 packets received, 0% packet loss/, out.slice(-2000));
    assert.equal(station.answered, 3);
    assert.equal(await ts.client.read(`${v.backendPath}/state`), '4');
    await assert.rejects(ts.attachVif(d.domid, { devid: 0, bridge: 'xenbr0' }), /devid 0 is already used/);
    await ts.detachVif(d.domid, '00:16:3E:00:00:05');
    assert.deepEqual(log.filter((l) => /removed anyway/.test(l)), [], 'Linux closed the device itself');
    assert.equal(await ts.client.tryRead(`${v.frontendPath}/state`), undefined, 'the frontend directory is gone');
    assert.equal(await ts.client.tryRead(`${v.backendPath}/state`), undefined, 'the backend directory is gone');
    assert.equal(ts.switches.get('xenbr0')?.portCount, 1, 'the vif left the switch');
    assert.equal(ts.hv.gntdev.maptrack.inUse, 0, 'the rings unmapped');
    await until('Linux to power off', () => down.has(d.domid) || undefined, 90_000, 100).catch(fail);
    assert.match(out, /hotplug: gone/);
    await assert.rejects(ts.detachVif(d.domid, '0'), /Unknown device 0/);
  } finally {
    await ts.shutdown();
  }
});
