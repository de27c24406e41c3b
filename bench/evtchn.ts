// Event-channel ping-pong round trip between two domains, on one pCPU worker
// and on two, and the cost of one upcall.
//
//   node dist/bench/evtchn.js [--n 2000] [--runs 5] [--waits hlt,block,poll] [--upcall-n 2000] [--json FILE]
//
// 1. Round trip: guests/build/pingpong.elf as pong and ping (src/testing/pingpong.ts wires them through
//    xenstore as the toolstack does); ping sends, sleeps until the answer's upcall, and times each of
//    --n round trips with the TSC (its own figures, µs). `Hypervisor.start({pcpus: 1})` puts both on
//    the one worker; with 2 pCPUs the placement puts them on different workers (checked through
//    Hypervisor.vcpus(domid).pcpu). Waits: hlt (`sti; hlt`, the upcall through the callback vector),
//    block (SCHEDOP_block), poll (SCHEDOP_poll on the masked port: no upcall, no handler).
// 2. Guest <-> backend: pingpong.elf as ping against an answering backend instead of a pong guest:
//    in the control domain's process (its event-channel device, the in-process path a backend there
//    takes) and in a process domain of its own (bench/helpers/evtchn_pong.ts over its privileged stream, the
//    path a driver domain's backend takes). The difference is what the process split adds to an event.
// 3. Upcall cost: pingpong.elf role=upcall sends --upcall-n events to its own IPI port with the
//    upcall delivered on each return, then as many with the port masked (the handler's pending-bit
//    clear done inline): the difference per event is injection + vector entry + handler + iretq.

import os from 'node:os';
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { Toolstack } from '../src/tools/toolstack.js';
import { runPingPong, PINGPONG_ELF } from '../src/testing/pingpong.js';
import { benchArgs, fmt, machine, printMachine, stats, table, writeJson } from './common.js';

const USAGE = `
usage: node dist/bench/evtchn.js [--n N] [--runs R] [--waits hlt,block,poll] [--upcall-n U] [--json FILE]

Event-channel ping-pong round trip between two domains (pingpong.elf, its own
TSC figures) on one pCPU worker and on two, per way of waiting; then the cost
of one upcall.

  --n N         round trips per run, 10..100000 (default 2000)
  --runs R      runs per case (default 5)
  --waits LIST  how both sides wait: hlt, block, poll (default all three)
  --upcall-n U  events for the upcall cost, 10..100000 (default 2000)
  --json FILE   also write the figures as JSON
`;
const { values } = benchArgs(USAGE, (args) => parseArgs({
  args,
  options: {
    n: { type: 'string', default: '2000' },
    runs: { type: 'string', default: '5' },
    waits: { type: 'string', default: 'hlt,block,poll' },
    'upcall-n': { type: 'string', default: '2000' },
    json: { type: 'string' },
  },
}));
const N = Number(values.n);
const RUNS = Number(values.runs);
const WAITS = values.waits.split(',');
const UPCALL_N = Number(values['upcall-n']);
if (!(N >= 10 && N <= 100000) || !(RUNS >= 1) || !(UPCALL_N >= 10 && UPCALL_N <= 100000)) {
  console.error(`bench/evtchn: --n and --upcall-n must be 10..100000, --runs >= 1\n${USAGE}`);
  process.exit(2);
}
if (WAITS.some((w) => !['hlt', 'block', 'poll'].includes(w))) {
  console.error(`bench/evtchn: --waits takes hlt, block and poll, not ${JSON.stringify(values.waits)}\n${USAGE}`);
  process.exit(2);
}

type Rtt = Record<string, number>;
interface Config { pcpus: number; wait: string; runs: Rtt[]; placements: string[] }

async function pingPong(pcpus: number): Promise<Config[]> {
  const ts = await Toolstack.start({ pcpus, log: () => {} });
  const out = WAITS.map((wait) => ({ pcpus, wait, runs: [] as Rtt[], placements: [] as string[] }));
  try {
    for (let r = 0; r < RUNS; r++) {
      for (const c of out) {
        const res = await runPingPong(ts, { n: N, wait: c.wait, timeoutMs: 300_000 });
        if (!res.rtt || res.ping.reason !== 0 || res.pong.reason !== 0) throw new Error(`pingpong failed (${c.wait}, ${pcpus} pCPUs)\n${res.ping.output}\n${res.pong.output}`);
        c.runs.push(res.rtt);
        c.placements.push(res.pcpus.ping === res.pcpus.pong ? 'same' : 'different');
      }
    }
  } finally {
    await ts.shutdown();
  }
  return out;
}

/** Ping round trips against a backend that answers: in the control domain's process, or a process domain of its own. */
async function backendPingPong(where: 'control' | 'process'): Promise<Rtt[]> {
  const { spawn } = await import('node:child_process');
  const path = await import('node:path');
  const { fileURLToPath } = await import('node:url');
  const { parseRtt } = await import('../src/testing/pingpong.js');
  const ts = await Toolstack.start({ pcpus: 2, log: () => {} });
  const kernel = readFileSync(PINGPONG_ELF);
  const out: Rtt[] = [];
  try {
    for (let r = 0; r < RUNS; r++) {
      let text = '', domid = -1;
      let onShutdown!: (d: number, reason: number) => void;
      const done = new Promise<number>((resolve) => { onShutdown = (d, reason) => { if (d === domid) resolve(reason); }; ts.hv.on('shutdown', onShutdown); });
      const onConsole = (d: number, _s: string, t: string, eol: boolean) => { if (d === domid) text += eol ? t + '\n' : t; };
      ts.hv.on('console', onConsole);
      let backend = 0;
      let child: import('node:child_process').ChildProcess | null = null;
      if (where === 'process') backend = ts.hv.createProcessDomain({ name: `pong-${r}` }).domid;
      const g = await ts.create({ name: `ping-${where}-${r}`, kernel, memoryMiB: 8, vcpus: 1, cmdline: `role=ping n=${N} peer=${backend}` }, (b) => { text += Buffer.from(b).toString('latin1'); });
      domid = g.domid;
      let port: number;
      if (where === 'control') {
        port = await ts.devices.evtchn.allocUnbound(domid, () => ts.devices.evtchn.notify(port));
      } else {
        const js = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers', 'evtchn_pong.js');
        const c = spawn(process.execPath, [js, String(backend), String(domid)], { stdio: ['ignore', 'pipe', 'inherit', 'pipe'] });
        child = c;
        ts.hv.servePrivcmd(backend, c.stdio[3] as import('node:net').Socket, { mayMap: false });
        port = await new Promise<number>((resolve, reject) => {
          let said = '';
          c.stdout!.on('data', (b: Buffer) => { said += b.toString(); const m = /port (\d+)/.exec(said); if (m) resolve(Number(m[1])); });
          c.once('exit', (code) => reject(new Error(`evtchn_pong exited with ${code}`)));
        });
      }
      // where the ping guest looks for its peer's port, readable by it
      await ts.client.write(`/local/domain/${backend}/data/port`, String(port));
      await ts.client.setPerms(`/local/domain/${backend}/data/port`, ['n0', `r${domid}`]);
      const reason = await done;
      ts.hv.off('console', onConsole);
      ts.hv.off('shutdown', onShutdown);
      await ts.destroy(domid);
      child?.kill();
      if (where === 'process') ts.hv.destroyProcessDomain(backend);
      const rtt = parseRtt(text);
      if (reason !== 0 || !rtt) throw new Error(`ping against the ${where} backend failed (reason ${reason})\n${text}`);
      out.push(rtt);
    }
  } finally {
    await ts.shutdown();
  }
  return out;
}

interface Upcall { upcallNs: number; withNs: number; maskedNs: number }

async function upcallCost(): Promise<Upcall[]> {
  const ts = await Toolstack.start({ pcpus: 1, log: () => {} });
  const kernel = readFileSync(PINGPONG_ELF);
  const res: Upcall[] = [];
  try {
    for (let r = 0; r < RUNS; r++) {
      let text = '';
      let domid = -1;
      const done = new Promise<number>((resolve) => {
        ts.hv.on('shutdown', (d, reason) => { if (d === domid) resolve(reason); });
      });
      ts.hv.on('console', (d, _src, s, eol) => { if (d === domid) text += eol ? s + '\n' : s; });
      const dom = await ts.create({ name: `upcall-${r}`, kernel, memoryMiB: 8, vcpus: 1, cmdline: `role=upcall n=${UPCALL_N}` },
        (b) => { text += Buffer.from(b).toString('latin1'); });
      domid = dom.domid;
      const reason = await done;
      ts.hv.removeAllListeners('console');
      ts.hv.removeAllListeners('shutdown');
      await ts.destroy(dom.domid);
      const m = /upcalls=(\d+) send\+upcall_ns=(\d+) send_masked_ns=(\d+) upcall_ns=(-?\d+)/.exec(text);
      if (reason !== 0 || !m || Number(m[1]) !== UPCALL_N) throw new Error(`upcall run failed (reason ${reason})\n${text}`);
      res.push({ withNs: Number(m[2]), maskedNs: Number(m[3]), upcallNs: Number(m[4]) });
    }
  } finally {
    await ts.shutdown();
  }
  return res;
}

const m = machine();
printMachine(m);
console.log(`load average before: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
console.log(`ping-pong: ${RUNS} runs x ${N} round trips per configuration; upcall: ${RUNS} runs x ${UPCALL_N} sends\n`);

const configs = [...(await pingPong(1)), ...(await pingPong(2))];
const rows: string[][] = [];
for (const c of configs) {
  const med = stats(c.runs.map((r) => r.median!));
  const pooled = (k: string) => stats(c.runs.map((r) => r[k]!)).median;
  const place = [...new Set(c.placements)].join('/');
  rows.push([`${c.pcpus} pCPU${c.pcpus > 1 ? 's' : ''}, ${place} worker, wait=${c.wait}`, fmt(med.median), `${fmt(med.min)}-${fmt(med.max)}`,
    fmt(pooled('p10')), fmt(pooled('p90')), fmt(pooled('p99')), fmt(Math.max(...c.runs.map((r) => r.max!))), String(c.runs.length)]);
}
console.log('round trip (µs): median of the runs\' medians, their range, and the median over runs of each run\'s percentile');
table(['(µs)', 'median', 'range of medians', 'p10', 'p90', 'p99', 'max', 'runs'], rows);

const backends = { control: await backendPingPong('control'), process: await backendPingPong('process') };
const brow = (name: string, runs: Rtt[]) => {
  const med = stats(runs.map((r) => r.median!));
  const pooled = (k: string) => stats(runs.map((r) => r[k]!)).median;
  return [name, fmt(med.median), `${fmt(med.min)}-${fmt(med.max)}`, fmt(pooled('p10')), fmt(pooled('p90')), fmt(pooled('p99')), fmt(Math.max(...runs.map((r) => r.max!))), String(runs.length)];
};
console.log('\nguest <-> backend round trip (µs), ping wait=hlt, 2 pCPUs: the backend answers each event at once');
table(['(µs)', 'median', 'range of medians', 'p10', 'p90', 'p99', 'max', 'runs'], [
  brow('backend in the control domain\'s process', backends.control),
  brow('backend in a process domain (its stream)', backends.process),
]);

const up = await upcallCost();
const s = (k: keyof Upcall) => stats(up.map((u) => u[k] / 1000));
console.log('\nupcall cost (µs per event)');
table(['(µs per event)', 'median', 'min', 'max', 'runs'], [
  ['send to own IPI port, upcall delivered', fmt(s('withNs').median), fmt(s('withNs').min), fmt(s('withNs').max), String(up.length)],
  ['send to own IPI port, port masked', fmt(s('maskedNs').median), fmt(s('maskedNs').min), fmt(s('maskedNs').max), String(up.length)],
  ['difference: the upcall', fmt(s('upcallNs').median), fmt(s('upcallNs').min), fmt(s('upcallNs').max), String(up.length)],
]);
console.log(`\nload average after: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
writeJson(values.json, { bench: 'evtchn', machine: m, n: N, runs: RUNS, configs, backends, upcall: up });
