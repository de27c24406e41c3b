// The host daemon's side of domain creation, against a `xenode daemon` child
// on a temporary state directory:
//
//   node dist/bench/daemon.js [--n 200] [--rate 320] [--idle 1000] [--kills 5] [--pcpus P] [--json FILE]
//
// 1. latency of guests/build/idle.elf with console=pv (writes "idle: blocking"
//    to its PV console ring, the domain's console as on Xen, then blocks until
//    destroyed here): inside the daemon, create request received -> the first
//    bytes from that ring reaching the daemon's console log, with the
//    breakdown the daemon records (host.timings: parse = config check +
//    kernel read, build, xenstore = console backend + skeleton + INTRODUCE,
//    unpause); from the client, the domain.create round trip and the create
//    call -> those bytes through console.attach(replay). The 20 warm-up
//    creates are in none of these rows. (minimal.elf's 0xE9 line goes to the
//    hypervisor console, xl dmesg, not to the domain's console.)
// 2. creation rate: `--rate` creates of the minimal guest, 16 in flight.
// 3. density: `--idle` idle domains (guests/build/idle.elf, memory=4) under
//    one daemon: its memory per domain (RSS without the guests' shared
//    memory: RssAnon + RssFile) and domain.list latency; the daemon's and its
//    xenstored's processes counted together.
// 4. xenstored SIGKILLed K times with those domains introduced: kill -> a new
//    socket connection's read answered, and kill -> a domain.create through
//    the toolstack's own (reconnecting) connection done.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { DaemonClient } from '../src/tools/daemon/client.js';
import { SocketClient } from '../src/tools/xenstored/client.js';
import type { DomainConfig } from '../src/tools/xl/config.js';
import type { CreateRecord } from '../src/tools/daemon/protocol.js';
import { GUESTS, XENODE_JS, benchArgs, fmt, numArg, printMachine, procStatus, stats, statsRow, STATS_HEADERS, table, untilDaemonAnswers, writeJson, sleep } from './common.js';

const USAGE = `
usage: node dist/bench/daemon.js [--n N] [--rate R] [--idle M] [--kills K] [--pcpus P] [--json FILE]

Domain creation through a xenode daemon child: create to the guest's first
PV console output (idle.elf console=pv, "idle: blocking") as the daemon and a
client see it, creation rate (minimal.elf) with 16 in flight, M idle
domains under one daemon, and K kills of its xenstored with them introduced.

  --n N        latency samples (default 200)
  --rate R     creates for the rate case (default 320)
  --idle M     idle domains for the density case (default 1000)
  --kills K    SIGKILLs of xenstored with those domains introduced (default 5)
  --pcpus P    the daemon's pCPU workers (default: one per host CPU)
  --json FILE  also write the figures as JSON
`;
const { values } = benchArgs(USAGE, (args) => parseArgs({
  args,
  options: {
    n: { type: 'string', default: '200' },
    rate: { type: 'string', default: '320' },
    idle: { type: 'string', default: '1000' },
    kills: { type: 'string', default: '5' },
    pcpus: { type: 'string' },
    json: { type: 'string' },
  },
}));
const N = numArg(values.n, '--n', USAGE);
const RATE_N = numArg(values.rate, '--rate', USAGE);
const IDLE = numArg(values.idle, '--idle', USAGE, 0);
const RESTARTS = numArg(values.kills, '--kills', USAGE, 0);
if (values.pcpus !== undefined) numArg(values.pcpus, '--pcpus', USAGE);
const MINIMAL = path.join(GUESTS, 'minimal.elf');
const IDLE_ELF = path.join(GUESTS, 'idle.elf');
for (const f of [MINIMAL, IDLE_ELF]) if (!fs.existsSync(f)) throw new Error(`${f} missing: run 'npm run build'`);

const cfg = (name: string, kernel: string, extra: Partial<DomainConfig> = {}): DomainConfig => ({ name, kernel, memory: 4, ...extra }) as DomainConfig;

async function startDaemon(): Promise<{ pid: number; socket: string; stop: () => Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xdb-'));
  const args = [XENODE_JS, 'daemon', '--restart-delay', '0', ...(values.pcpus ? ['--pcpus', values.pcpus] : [])];
  const p = spawn(process.execPath, args, { env: { ...process.env, XENODE_STATE_DIR: dir, XENODE_SOCKET: '' }, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
  const socket = path.join(dir, 'xenode.sock');
  await untilDaemonAnswers(p, socket, () => err);
  return {
    pid: p.pid!, socket,
    stop: async () => {
      p.kill('SIGTERM');
      await new Promise((r) => p.once('exit', r));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Creates the idle guest writing to its PV console ring (the domain's console as on Xen; the minimal guest's
 * 0xE9 line goes to the hypervisor console, xl dmesg); resolves when its first console line reaches this client.
 */
async function createToFirstByte(c: DaemonClient, name: string): Promise<{ rtt: number; firstByte: number }> {
  const t0 = performance.now();
  // idle blocks after printing: it stays until destroyed below, so attach never races its end
  const r = await c.call('domain.create', { config: cfg(name, IDLE_ELF, { cmdline: 'console=pv' }) });
  const rtt = performance.now() - t0;
  let firstByte = 0;
  await new Promise<void>((resolve, reject) => {
    // replay: the byte may already be in the tail; the domain may even be gone (its end comes then)
    c.attachConsole(r.domid, () => { if (!firstByte) { firstByte = performance.now() - t0; resolve(); } }, { replay: true })
      .then((h) => h.ended.then(() => { if (!firstByte) reject(new Error(`${name}: no console output`)); }))
      .catch((e: unknown) => { if (!firstByte) reject(e as Error); });
  });
  await c.call('domain.destroy', { dom: r.domid });
  return { rtt, firstByte };
}

async function waitGone(c: DaemonClient, names: Set<string>): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const live = (await c.call('domain.list', {})).filter((s) => names.has(s.name));
    if (live.length === 0) return;
    await sleep(25);
  }
  throw new Error('domains did not power off');
}

async function main(): Promise<void> {
  printMachine();
  const out: Record<string, unknown> = {};
  const d = await startDaemon();
  const c = await DaemonClient.connect(d.socket);
  try {
    // 1. latency
    for (let i = 0; i < 20; i++) await createToFirstByte(c, `warm${i}`);
    const rtt: number[] = [];
    const client: number[] = [];
    for (let i = 0; i < N; i++) {
      const r = await createToFirstByte(c, `lat${i}`);
      rtt.push(r.rtt);
      client.push(r.firstByte);
    }
    await sleep(200);
    const recs = (await c.call('host.timings', {})).creates.filter((r) => r.name.startsWith('lat'));
    if (recs.length !== N || recs.some((r) => r.firstByte === null)) throw new Error(`the daemon recorded ${recs.length} of the ${N} timed creates, ${recs.filter((r) => r.firstByte === null).length} without a console line`);
    const col = (f: (r: CreateRecord) => number | null) => stats(recs.map(f).filter((x): x is number => x !== null));
    console.log(`\n1. create -> the guest's first console line ("idle: blocking" on its PV console ring), ${IDLE_ELF.replace(/.*\//, '')} console=pv (memory 4 MiB), n=${N} sequential`);
    const lat = {
      daemonFirstByte: col((r) => r.firstByte), daemonTotal: col((r) => r.total),
      parse: col((r) => r.parse), build: col((r) => r.build), xenstore: col((r) => r.xenstore), unpause: col((r) => r.unpause),
      clientRtt: stats(rtt), clientFirstByte: stats(client),
    };
    table(STATS_HEADERS('ms'), [
      statsRow('daemon: request -> first console line', lat.daemonFirstByte, 3),
      statsRow('daemon: request -> response', lat.daemonTotal, 3),
      statsRow('  parse (config, kernel read)', lat.parse, 3),
      statsRow('  build', lat.build, 3),
      statsRow('  xenstore (console, skeleton, INTRODUCE)', lat.xenstore, 3),
      statsRow('  unpause', lat.unpause, 3),
      statsRow('client: domain.create round trip', lat.clientRtt, 3),
      statsRow('client: create call -> first console line', lat.clientFirstByte, 3),
    ]);
    out.latency = lat;

    // 2. rate, 16 in flight
    const names = new Set<string>();
    let next = 0;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < RATE_N) {
        const name = `rate${next++}`;
        names.add(name);
        await c.call('domain.create', { config: cfg(name, MINIMAL) });
      }
    }));
    const el = performance.now() - t0;
    await waitGone(c, names);
    const el2 = performance.now() - t0;
    console.log(`\n2. creation rate, ${RATE_N} creates of the minimal guest, 16 in flight`);
    table(['', 'value'], [
      ['creates answered per second', fmt(RATE_N / (el / 1000), 0)],
      ['created, ran and destroyed, per second', fmt(RATE_N / (el2 / 1000), 0)],
    ]);
    out.rate = { n: RATE_N, perSecond: RATE_N / (el / 1000), roundTripPerSecond: RATE_N / (el2 / 1000) };

    // 3. density (the daemon and its xenstored, a process of its own)
    await sleep(300);
    const xsPid = Number((await c.call('host.info', {}) as Record<string, unknown>).xenstored_pid);
    const both = (): Record<string, number> => {
      const a = procStatus(d.pid), x = procStatus(xsPid);
      return Object.fromEntries(Object.keys(a).map((k) => [k, a[k]! + (x[k] ?? 0)]));
    };
    const xsBefore = procStatus(xsPid).VmRSS ?? 0;
    const before = both();
    let k = 0;
    const td = performance.now();
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (k < IDLE) await c.call('domain.create', { config: cfg(`idle${k++}`, IDLE_ELF) });
    }));
    const createS = (performance.now() - td) / 1000;
    await sleep(1000);
    const after = both();
    const xsPer = ((procStatus(xsPid).VmRSS ?? 0) - xsBefore) / IDLE;
    const listMs: number[] = [];
    let rows = 0;
    for (let i = 0; i < 30; i++) {
      const t = performance.now();
      rows = (await c.call('domain.list', {})).length;
      listMs.push(performance.now() - t);
    }
    const per = (f: string) => ((after[f] ?? 0) - (before[f] ?? 0)) / IDLE;
    console.log(`\n3. ${IDLE} idle domains (idle.elf, memory 4 MiB) under one daemon (created in ${fmt(createS, 1)} s); the daemon's and xenstored's processes together`);
    table(['per domain (KiB)', 'value'], [
      ['RSS (all)', fmt(per('VmRSS'), 0)],
      ['  of which xenstored\'s RSS', fmt(xsPer, 0)],
      ['RssAnon (daemon heap, KVM structures)', fmt(per('RssAnon'), 0)],
      ['RssFile', fmt(per('RssFile'), 0)],
      ['RssShmem (guest memory touched)', fmt(per('RssShmem'), 0)],
    ]);
    table(STATS_HEADERS('ms'), [statsRow(`domain.list (${rows} rows)`, stats(listMs), 2)]);
    out.density = { n: IDLE, createSeconds: createS, perDomainKiB: { rss: per('VmRSS'), xenstoredRss: xsPer, anon: per('RssAnon'), file: per('RssFile'), shmem: per('RssShmem') }, list: stats(listMs), rows };

    // 4. xenstored killed with every idle domain introduced: how long until the store answers again
    const restart: number[] = [];
    const toolstack: number[] = [];
    const xsSocket = String((await c.call('host.info', {}) as Record<string, unknown>).xenstored_socket);
    for (let i = 0; i < RESTARTS; i++) {
      const pid = Number((await c.call('host.info', {}) as Record<string, unknown>).xenstored_pid);
      const t0 = performance.now();
      process.kill(pid, 'SIGKILL');
      // a new connection's read answered (xenstore-read's view)
      for (;;) {
        try {
          const x = await SocketClient.connect(xsSocket);
          const v = await x.read('/local/domain/0/name').finally(() => x.close());
          if (v === 'Domain-0') break;
        } catch { /* not back yet */ }
        await sleep(2);
      }
      restart.push(performance.now() - t0);
      // the toolstack's own connection back: a domain made through it
      const made = await c.call('domain.create', { config: cfg(`after${i}`, IDLE_ELF) });
      toolstack.push(performance.now() - t0);
      await c.call('domain.destroy', { dom: made.domid });
      await sleep(200);
    }
    console.log(`\n4. xenstored killed (SIGKILL) with ${IDLE + 1} domains introduced, ${RESTARTS} times`);
    table(STATS_HEADERS('ms'), [
      statsRow('kill -> a new socket connection\'s read answered', stats(restart), 0),
      statsRow('kill -> a domain.create through the toolstack\'s reconnected client done', stats(toolstack), 0),
    ]);
    out.xenstoredRestart = { domains: IDLE + 1, kills: RESTARTS, answered: stats(restart), create: stats(toolstack) };
    const ts = performance.now();
    c.close();
    await d.stop();
    console.log(`\ndaemon stop with ${IDLE} domains (SIGTERM -> exit): ${fmt((performance.now() - ts) / 1000, 2)} s`);
  } catch (e) {
    c.close();
    await d.stop();
    throw e;
  }
  writeJson(values.json, out);
}

await main();
