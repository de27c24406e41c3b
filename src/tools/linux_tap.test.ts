// A Debian Linux guest (2 vCPUs, so its xen-netfront uses two queues) on a Linux bridge of
// the host: `xenode run --vif bridge=br0` is started inside a network
// namespace of the test's own that holds br0 with 10.77.1.1, so its vif gets
// a tap there (vif<domid>.0) joined to br0. The guest pings the host end of
// the bridge, downloads 1 MiB over HTTP from a server in the namespace (the
// host's TCP leaves its checksums to the tap's offload, the guest's netfront
// takes them as blank), sends it back under the vif's rate limit, and the
// host pings the guest; when the guest powers off, xenode exits and the tap
// is gone with the vif.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { busyboxInitramfs, busyboxPath, haveLinux, linuxBzImage, NETFRONT_INIT, netfrontModule } from '../testing/initramfs.js';
import { havePeer } from '../testing/peers.js';
import { haveNetAdmin, Netns } from '../testing/netns.js';
import { until, within } from '../testing/wait.js';
import { driverDomainPid, xenodeJs } from '../testing/xenode.js';

/** A boot under the software CPU on a loaded 2-CPU host: ~60-90 s to /init. */
const BOOT_MS = 200_000;
const netfront = netfrontModule;
const MIB = 1 << 20;

const INIT = `${NETFRONT_INIT}echo "net: queues $(ls -d /sys/class/net/eth0/queues/tx-* | wc -l)"
ifconfig lo 127.0.0.1 up
ifconfig eth0 10.77.1.2 netmask 255.255.255.0 up && echo "net: up"
for i in $(seq 1 60); do ping -c 1 -W 1 10.77.1.1 >/dev/null 2>&1 && break; done
echo "net: ping begins"
ping -c 3 -W 5 10.77.1.1
echo "net: ping done"
busybox wget -q -O /tmp/data http://10.77.1.1:8077/data && echo "net: got $(wc -c < /tmp/data) $(md5sum < /tmp/data | cut -c1-32)"
# the same MiB back up: the vif's rate= holds the guest's transmissions to 8 Mbit/s
nc 10.77.1.1 7001 < /tmp/data
echo "net: uploaded"
echo "net: ready"
# the host pings, then says goodbye on port 7000
nc -l -p 7000 > /tmp/bye
echo "net: bye $(cat /tmp/bye)"
poweroff -f
`;

test('a Linux guest on a host bridge through its tap: it pings 10.77.1.1 on br0 and downloads 1 MiB over HTTP from the namespace, the host pings it, and the tap goes with the domain', { timeout: BOOT_MS + 60_000 }, async (t) => {
  if (!haveLinux(t)) return;
  if (!havePeer(t, existsSync(netfront), "xen-netfront.ko from Debian's kernel package", 'scripts/fetch-linux.sh')) return;
  if (!haveNetAdmin(t)) return;
  const ns = Netns.create('xenode-ltap');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'xenode-ltap-'));
  const procs: ChildProcess[] = [];
  try {
    ns.ip('link', 'add', 'br0', 'type', 'bridge');
    ns.ip('addr', 'add', '10.77.1.1/24', 'dev', 'br0');
    ns.ip('link', 'set', 'br0', 'up');
    const data = randomBytes(MIB);
    writeFileSync(path.join(dir, 'data'), data);
    const md5 = createHash('md5').update(data).digest('hex');
    const server = ns.spawn(process.execPath, ['-e', `const fs=require('fs');require('http').createServer((q,r)=>{r.end(fs.readFileSync(${JSON.stringify(path.join(dir, 'data'))}))}).listen(8077,'10.77.1.1',()=>console.log('serving'))`]);
    procs.push(server);
    let serverOut = '';
    server.stdout!.on('data', (b: Buffer) => { serverOut += b.toString(); });
    await until('the HTTP server to listen', () => serverOut.includes('serving'), 10_000, 20);
    // the upload's receiver: the bytes, their md5, and the time from the first to the last
    const sink = ns.spawn(process.execPath, ['-e', `const c=require('crypto');require('net').createServer((s)=>{const h=c.createHash('md5');let n=0,t0=0;s.on('data',(b)=>{if(!n)t0=Date.now();n+=b.length;h.update(b);if(n>=${MIB}){console.log('upload '+n+' '+h.digest('hex')+' '+(Date.now()-t0));s.end()}})}).listen(7001,'10.77.1.1',()=>console.log('sinking'))`]);
    procs.push(sink);
    let sinkOut = '';
    sink.stdout!.on('data', (b: Buffer) => { sinkOut += b.toString(); });
    await until('the upload sink to listen', () => sinkOut.includes('sinking'), 10_000, 20);

    const initrd = path.join(dir, 'initrd.gz');
    writeFileSync(initrd, busyboxInitramfs({ init: INIT, files: { 'xen-netfront.ko': readFileSync(netfront) } }));
    const xenode = ns.spawn(process.execPath, [xenodeJs, 'run', linuxBzImage, '--ramdisk', initrd, '--memory', '256', '--vcpus', '2', '--cmdline', 'console=hvc0', '--vif', 'mac=00:16:3e:00:00:09,bridge=br0,rate=8Mb/s@20ms,vifname=web0']);
    procs.push(xenode);
    let out = '', err = '';
    xenode.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
    xenode.stderr!.on('data', (b: Buffer) => { err += b.toString('latin1'); });
    const exited = new Promise<number | null>((r) => xenode.on('exit', (code) => r(code)));
    const consoles = () => `console:\n${out.slice(-3000)}\nstderr:\n${err.slice(-2000)}`;
    const fail = (e: Error) => { throw new Error(`${e.message}; ${consoles()}`); };

    const tapName = await until('the vif\'s tap', () => /tap (\S+) on host bridge br0/.exec(err)?.[1], 60_000, 50).catch(fail);
    assert.equal(tapName, 'web0', 'named as vifname= asks, as vif-bridge renames it');
    assert.equal(ns.link(tapName)?.['master'], 'br0', 'the tap is on br0');
    await until('the guest to be ready', () => out.includes('net: ready'), BOOT_MS - 20_000, 200).catch(fail);
    assert.doesNotMatch(out, /insmod failed/, consoles());
    assert.match(out, /net: mac 00:16:3e:00:00:09/, consoles());
    assert.match(out, /net: queues 2\b/, 'netfront took a queue a vCPU (multi-queue-num-queues 2)');
    const ping = /net: ping begins([^]*)net: ping done/.exec(out);
    assert.ok(ping, consoles());
    assert.match(ping[1]!, /3 packets transmitted, 3 packets received, 0% packet loss/, ping[1]);
    assert.match(out, new RegExp(`net: got ${MIB} ${md5}`), consoles());
    // 1 MiB at 8 Mbit/s (20000 bytes a 20 ms window) takes at least 1 s less the first window, however fast the host
    const up = /upload (\d+) ([0-9a-f]{32}) (\d+)/.exec(sinkOut);
    assert.ok(up, `the upload arrived: ${sinkOut}; ${consoles()}`);
    assert.deepEqual([Number(up[1]), up[2]], [MIB, md5], 'what the guest sent is what it got');
    assert.ok(Number(up[3]) >= 950, `1 MiB under rate=8Mb/s must take at least 950 ms; it took ${up[3]} ms`);
    t.diagnostic(`1 MiB upload under rate=8Mb/s@20ms: ${up[3]} ms`);

    // the host's side: ping the guest from the namespace
    const hostPing = ns.exec(busyboxPath, ['ping', '-c', '3', '-W', '5', '10.77.1.2'], 30_000);
    assert.match(hostPing, /3 packets transmitted, 3 packets received, 0% packet loss/, hostPing);
    ns.exec(process.execPath, ['-e', `const c=require('net').connect(7000,'10.77.1.2',()=>c.end('done'));c.on('error',(e)=>{console.error(e.message);process.exit(1)})`], 20_000);
    const code = await within('xenode to exit after the guest powered off', exited, 60_000).catch(fail);
    assert.equal(code, 0, consoles());
    assert.match(out, /net: bye done/, consoles());
    assert.equal(ns.link(tapName), null, 'the tap went with the domain');
    t.diagnostic(hostPing.trim().split('\n').slice(-1)[0]!);
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill();
    ns.delete();
    rmSync(dir, { recursive: true, force: true });
  }
});

/** The download the driver domain dies in the middle of: big enough to take seconds through the software CPU. */
const BIG = 8 * MIB;

const INIT_DD = `${NETFRONT_INIT}ifconfig lo 127.0.0.1 up
ifconfig eth0 10.77.2.2 netmask 255.255.255.0 up && echo "net: up"
for i in $(seq 1 60); do ping -c 1 -W 1 10.77.2.1 >/dev/null 2>&1 && break; done
echo "net: downloading"
busybox wget -q -O /tmp/data http://10.77.2.1:8078/big && echo "net: got $(wc -c < /tmp/data) $(md5sum < /tmp/data | cut -c1-32)"
poweroff -f
`;

test('netback in a driver domain killed with SIGKILL in the middle of a Linux guest\'s TCP download: it is started again, the guest\'s netfront never notices, and the download completes intact', { timeout: BOOT_MS + 90_000 }, async (t) => {
  if (!haveLinux(t)) return;
  if (!havePeer(t, existsSync(netfront), "xen-netfront.ko from Debian's kernel package", 'scripts/fetch-linux.sh')) return;
  if (!haveNetAdmin(t)) return;
  const ns = Netns.create('xenode-lnetdd');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'xenode-lnetdd-'));
  const procs: ChildProcess[] = [];
  const name = `lnetdd${process.pid}`;
  try {
    ns.ip('link', 'add', 'br0', 'type', 'bridge');
    ns.ip('addr', 'add', '10.77.2.1/24', 'dev', 'br0');
    ns.ip('link', 'set', 'br0', 'up');
    const data = randomBytes(BIG);
    writeFileSync(path.join(dir, 'big'), data);
    const md5 = createHash('md5').update(data).digest('hex');
    // the server says how far it got: 64 KiB at a time, as fast as TCP takes them
    const server = ns.spawn(process.execPath, ['-e', `const d=require('fs').readFileSync(${JSON.stringify(path.join(dir, 'big'))});require('http').createServer((q,r)=>{r.writeHead(200,{'content-length':d.length});let at=0;const next=()=>{if(at>=d.length)return r.end();const c=d.subarray(at,at+65536);at+=c.length;console.log('sent '+at);r.write(c,next)};next()}).listen(8078,'10.77.2.1',()=>console.log('serving'))`]);
    procs.push(server);
    let served = '';
    server.stdout!.on('data', (b: Buffer) => { served += b.toString(); });
    await until('the HTTP server to listen', () => served.includes('serving'), 10_000, 20);
    const sent = () => Math.max(0, ...[...served.matchAll(/sent (\d+)/g)].map((m) => Number(m[1])));

    const initrd = path.join(dir, 'initrd.gz');
    writeFileSync(initrd, busyboxInitramfs({ init: INIT_DD, files: { 'xen-netfront.ko': readFileSync(netfront) } }));
    const xenode = ns.spawn(process.execPath, [xenodeJs, 'run', linuxBzImage, '--ramdisk', initrd, '--memory', '256', '--vcpus', '1', '--cmdline', 'console=hvc0', '--vif', `mac=00:16:3e:00:00:0a,bridge=br0,backend=${name}`]);
    procs.push(xenode);
    let out = '', err = '';
    xenode.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
    xenode.stderr!.on('data', (b: Buffer) => { err += b.toString('latin1'); });
    const exited = new Promise<number | null>((r) => xenode.on('exit', (code) => r(code)));
    const consoles = () => `console:\n${out.slice(-3000)}\nstderr:\n${err.slice(-2000)}\nserver: ${sent()} bytes sent`;
    const fail = (e: Error) => { throw new Error(`${e.message}; ${consoles()}`); };
    await until('the download to be a quarter through', () => sent() >= BIG / 4 || undefined, BOOT_MS - 20_000, 20).catch(fail);
    const pid = driverDomainPid(name);
    assert.ok(pid, 'the driver domain is a process of its own');
    const at = sent();
    process.kill(pid, 'SIGKILL');
    await until('the driver domain to be started again', () => /driver domain started again/.test(err) || undefined, 20_000, 20).catch(fail);
    const code = await within('the guest to finish its download and power off', exited, BOOT_MS).catch(fail);
    assert.equal(code, 0, consoles());
    assert.match(out, new RegExp(`net: got ${BIG} ${md5}`), `the whole download, intact; ${consoles()}`);
    assert.ok(at < BIG, `killed mid-transfer (${at} of ${BIG} bytes sent)`);
    t.diagnostic(`driver domain pid ${pid} killed with ${at} of ${BIG} bytes sent`);
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill();
    ns.delete();
    rmSync(dir, { recursive: true, force: true });
  }
});
