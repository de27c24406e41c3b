// Two Debian Linux guests, each with Debian's own xen-netfront (loaded from
// the initramfs) on a vif served by the control domain's netback, both on
// the bridge xenbr0: the in-process switch joins them; one pings the other,
// sends it 2 MiB over TCP that arrive intact, and pings it with 9000-byte
// frames that take several ring slots each way.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { busyboxInitramfs, haveLinux, linuxBzImage, linuxDir } from '../testing/initramfs.js';
import { havePeer } from '../testing/peers.js';
import { until } from '../testing/wait.js';
import type { Toolstack, ToolstackDomain } from './toolstack.js';

/** A boot under the software CPU on a loaded 2-CPU host: ~60-90 s to /init. */
const BOOT_MS = 200_000;
const netfront = path.join(linuxDir, 'modules', 'xen-netfront.ko');

const up = (ip: string) => `
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
insmod /xen-netfront.ko || echo "net: insmod failed"
for i in $(seq 1 200); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
echo "net: mac $(cat /sys/class/net/eth0/address)"
ifconfig lo 127.0.0.1 up
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
    // 8042-byte frames: two receive buffers each, and at least as many transmit slots (more where the
    // sender's buffer straddles pages)
    for (const st of [stA, stB]) assert.ok(st.txMaxSlots >= 2 && st.rxMaxSlots === 2, JSON.stringify(st));
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
