// A Linux guest's vif on a host bridge through its tap, against a veth pair
// between two network namespaces, in one run: ping round trip from the host
// and TCP throughput from the host to the peer.
//
//   node dist/bench/net.js [--n 3] [--pings 20] [--mib 16] [--json FILE]
//
// Namespace A holds the bridge br0 (10.77.2.1), which `xenode run --vif
// bridge=br0` (run in A) puts the guest's tap on; the guest (Debian's cloud
// kernel, its xen-netfront, busybox) is 10.77.2.2. A also holds one end of a
// veth pair (10.77.3.1) whose other end is namespace B's (10.77.3.2). From A:
// busybox ping (-i 0.2) to each peer, and a node TCP sender that writes
// --mib MiB and times connect to the peer's close after the last byte (the
// guest's sink is busybox nc, B's a node server). A second guest (10.77.2.3)
// has its vif served by a driver domain (`--vif bridge=br0,backend=netdd`:
// netback in a process of its own, its tap on br0), measured the same way:
// the cost of the split. Root only.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { XENODE_JS, benchArgs, fmt, machine, numArg, printMachine, sleep, stats, statsRow, STATS_HEADERS, table, writeJson, type Stats } from './common.js';
import { busyboxInitramfs, busyboxPath, linuxBzImage, linuxDir } from '../src/testing/initramfs.js';

const USAGE = `
usage: node dist/bench/net.js [--n N] [--pings P] [--mib M] [--json FILE]

A Debian Linux guest's vif on a Linux bridge through its tap (xenode run
--vif bridge=br0, in a network namespace of its own) against a veth pair
between two namespaces, same run: host -> peer ping round trip (busybox ping
-i 0.2) and host -> peer TCP throughput (M MiB, connect to the peer's close).
Needs root (namespaces, bridge, tap) and scripts/fetch-linux.sh's kernel.

  --n N        rounds of each measurement on each path (default 3)
  --pings P    pings per round (default 20)
  --mib M      MiB per TCP round (default 16)
  --json FILE  also write the figures as JSON
`;

const guestInit = (addr: string) => `
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
insmod /xen-netfront.ko
for i in $(seq 1 200); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
ifconfig lo 127.0.0.1 up
ifconfig eth0 ${addr} netmask 255.255.255.0 up
echo "bench: up"
while true; do nc -l -p 5001 > /dev/null; done
`;

/** Writes argv[3] MiB to argv[1]:argv[2]; prints ms from connect to the peer's close (every byte taken). */
const SENDER = `const net=require('net');const [h,p,m]=process.argv.slice(1);const b=Buffer.alloc(1<<16,0x5a);let left=m*16;let t0;
const c=net.connect(+p,h,()=>{t0=process.hrtime.bigint();const w=()=>{while(left>0){left--;if(!c.write(b)){c.once('drain',w);return}}c.end()};w()});
c.resume();c.on('close',()=>{if(t0===undefined)process.exit(1);console.log(Number(process.hrtime.bigint()-t0)/1e6)});c.on('error',(e)=>{console.error(e.message);process.exit(1)});`;

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe', timeout: 10_000 });
const inNs = (ns: string, cmd: string, args: string[], timeout = 120_000) => execFileSync('ip', ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8', stdio: 'pipe', timeout });

function pingRound(ns: string, to: string, count: number): number {
  const out = inNs(ns, busyboxPath, ['ping', '-q', '-c', String(count), '-i', '0.2', '-W', '5', to]);
  const m = /min\/avg\/max = [\d.]+\/([\d.]+)\/[\d.]+ ms/.exec(out);
  if (!m || !/ 0% packet loss/.test(out)) throw new Error(`ping ${to}: ${out}`);
  return Number(m[1]) * 1000;
}

async function tcpRound(ns: string, to: string, mib: number): Promise<number> {
  // the guest's nc takes a moment to listen again after the last round
  for (let tries = 0; ; tries++) {
    try {
      return Number(inNs(ns, process.execPath, ['-e', SENDER, to, '5001', String(mib)]).trim());
    } catch (e) {
      if (tries >= 20) throw e;
      await sleep(250);
    }
  }
}

async function main(): Promise<void> {
  const { values } = benchArgs(USAGE, (args) => parseArgs({
    args,
    options: { n: { type: 'string', default: '3' }, pings: { type: 'string', default: '20' }, mib: { type: 'string', default: '16' }, json: { type: 'string' } },
  }));
  const N = numArg(values.n, '--n', USAGE), pings = numArg(values.pings, '--pings', USAGE), mib = numArg(values.mib, '--mib', USAGE);
  const m = machine();
  printMachine(m);
  if (process.getuid?.() !== 0) throw new Error('needs root: network namespaces, a bridge and taps');
  const netfront = path.join(linuxDir, 'modules', 'xen-netfront.ko');
  for (const f of [XENODE_JS, linuxBzImage, busyboxPath, netfront]) if (!fs.existsSync(f)) throw new Error(`${f} is missing (npm run build; scripts/fetch-linux.sh)`);

  const tag = randomBytes(2).toString('hex');
  const A = `xenode-bench-a-${tag}`, B = `xenode-bench-b-${tag}`;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-net-'));
  const procs: ChildProcess[] = [];
  try {
    for (const ns of [A, B]) { ip('netns', 'add', ns); ip('-n', ns, 'link', 'set', 'lo', 'up'); }
    ip('-n', A, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', A, 'addr', 'add', '10.77.2.1/24', 'dev', 'br0');
    ip('-n', A, 'link', 'set', 'br0', 'up');
    ip('-n', A, 'link', 'add', 'veth-a', 'type', 'veth', 'peer', 'name', 'veth-b', 'netns', B);
    ip('-n', A, 'addr', 'add', '10.77.3.1/24', 'dev', 'veth-a');
    ip('-n', B, 'addr', 'add', '10.77.3.2/24', 'dev', 'veth-b');
    ip('-n', A, 'link', 'set', 'veth-a', 'up');
    ip('-n', B, 'link', 'set', 'veth-b', 'up');

    const sink = spawn('ip', ['netns', 'exec', B, process.execPath, '-e', `require('net').createServer((s)=>{s.resume();s.on('end',()=>s.end())}).listen(5001,'10.77.3.2',()=>console.log('ready'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
    procs.push(sink);
    await new Promise<void>((r) => sink.stdout!.once('data', () => r()));

    /** A guest at `addr` with its vif on br0 (`vif` the rest of its spec): up, and the name of its tap. */
    const startGuest = async (addr: string, vif: string): Promise<string> => {
      const initrd = path.join(tmp, `initrd-${addr}.gz`);
      fs.writeFileSync(initrd, busyboxInitramfs({ init: guestInit(addr), files: { 'xen-netfront.ko': fs.readFileSync(netfront) } }));
      // --quiet keeps the guest's console out; the driver domain's log lines (its tap) still come on stderr
      const xenode = spawn('ip', ['netns', 'exec', A, process.execPath, XENODE_JS, 'run', linuxBzImage, '--ramdisk', initrd, '--memory', '256', '--cmdline', 'console=hvc0', '--quiet', '--vif', `bridge=br0${vif}`], { stdio: ['ignore', 'pipe', 'pipe'] });
      procs.push(xenode);
      let out = '';
      xenode.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
      xenode.stderr!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
      const t0 = performance.now();
      while (!out.includes('bench: up')) {
        if (performance.now() - t0 > 300_000 || xenode.exitCode !== null) throw new Error(`the guest ${addr} did not come up; its output:\n${out.slice(-3000)}`);
        await sleep(100);
      }
      const tap = /tap (vif\S+) on host bridge br0/.exec(out)?.[1] ?? '(none?)';
      console.log(`guest ${addr} up with ${tap} on br0 after ${fmt((performance.now() - t0) / 1000)} s`);
      return tap;
    };
    const tap = await startGuest('10.77.2.2', '');
    // its own xenode run numbers its guest 1 too: a tap name of its own
    const ddTap = await startGuest('10.77.2.3', ',backend=netdd,vifname=vifdd.0');
    // the first pings also settle ARP on every path
    for (const to of ['10.77.2.2', '10.77.2.3', '10.77.3.2']) pingRound(A, to, 3);

    const paths = [
      { name: `tap ${tap} -> Linux guest (netback)`, to: '10.77.2.2' },
      { name: `tap ${ddTap} -> Linux guest (netback in a driver domain)`, to: '10.77.2.3' },
      { name: 'veth -> namespace', to: '10.77.3.2' },
    ];
    const rtt: Record<string, number[]> = {}, mbps: Record<string, number[]> = {};
    for (const p of paths) { rtt[p.name] = []; mbps[p.name] = []; }
    for (let i = 0; i < N; i++) {
      for (const p of i % 2 ? [...paths].reverse() : paths) {
        const us = pingRound(A, p.to, pings);
        const ms = await tcpRound(A, p.to, mib);
        rtt[p.name]!.push(us);
        mbps[p.name]!.push((mib * 8 * 1.048576) / (ms / 1000));
        console.log(`  round ${i + 1}: ${p.name}: ping avg ${fmt(us, 0)} us, TCP ${fmt((mib * 8 * 1.048576) / (ms / 1000), 0)} Mbit/s`);
      }
    }
    const rs: Record<string, Stats> = {}, ts: Record<string, Stats> = {};
    for (const p of paths) { rs[p.name] = stats(rtt[p.name]!); ts[p.name] = stats(mbps[p.name]!); }
    console.log(`\nhost -> peer ping round trip, average of ${pings} per round (us)`);
    table(STATS_HEADERS('us'), paths.map((p) => statsRow(p.name, rs[p.name]!, 0)));
    console.log(`\nhost -> peer TCP, ${mib} MiB a round (Mbit/s)`);
    table(STATS_HEADERS('Mbit/s'), paths.map((p) => statsRow(p.name, ts[p.name]!, 0)));
    const [cd, dd] = [paths[0]!.name, paths[1]!.name];
    console.log(`\nratio driver domain / control domain netback (medians): TCP ${fmt(ts[dd]!.median / ts[cd]!.median)}x, ping ${fmt(rs[dd]!.median / rs[cd]!.median)}x`);
    writeJson(values.json, { bench: 'net', machine: m, n: N, pings, mib, tap, rttUs: rs, tcpMbps: ts });
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill();
    await sleep(200);
    for (const ns of [A, B]) { try { ip('netns', 'delete', ns); } catch { /* not made */ } }
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
