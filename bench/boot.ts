// Boot latency of a whole `xenode run` process against QEMU microvm.
//
//   node dist/bench/boot.js [--n 30] [--phases 10] [--json FILE] [--no-qemu] [--timeout S]
//
// The guest is guests/build/minimal.elf on both sides: it writes the line
// "M\n" to port 0xE9 and powers off. xenode passes 0xE9 output on a line at a
// time, QEMU's -debugcon a byte at a time, so the event compared is the same
// on both: the guest's first whole line on the process's stdout.
// In one run, interleaved (one of each per round, N rounds):
//   * node -e 0                                   the floor of any Node process
//   * xenode run guests/build/minimal.elf --quiet spawn -> exit
//   * xenode run guests/build/minimal.elf         spawn -> "M\n" on stdout -> exit
//   * qemu-system-x86_64 -M microvm -accel kvm ... -kernel minimal.elf
//                                                 spawn -> "M\n" on stdout (-debugcon stdio) -> exit
// Then where xenode's process time goes: the same steps as `xenode run`
// (src/tools/run.ts), re-done in a child process of this file with a
// timestamp after each (node start, module loading, Hypervisor.start, domain
// build, guest run, teardown, process exit), and the parts of
// Hypervisor.start measured on their own (KVM setup, a bare worker, a worker
// loading the pCPU module graph).

import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { GUESTS, REPO_ROOT, XENODE_JS, benchArgs, fmt, machine, numArg, printMachine, stats, statsRow, STATS_HEADERS, table, writeJson, Stats } from './common.js';

const MINIMAL = path.join(GUESTS, 'minimal.elf');
const QEMU = 'qemu-system-x86_64';
const QEMU_ARGS = ['-M', 'microvm', '-accel', 'kvm', '-m', '32', '-nodefaults', '-no-user-config', '-nographic',
  '-debugcon', 'stdio', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-kernel', MINIMAL];

const nowAbs = () => performance.timeOrigin + performance.now();

// --- child modes: run inside a fresh process ---------------------------------

/** The steps of `xenode run minimal.elf --quiet`, with a timestamp (ms since this process's time origin) after each. */
async function childPhases(): Promise<void> {
  const t: Record<string, number> = { entered: performance.now() };
  await import('koffi');
  t.koffi = performance.now();
  const { Hypervisor } = await import('../src/hv/hypervisor.js');
  const { buildPvhDomain, startBuiltDomain, specialPageOffset } = await import('../src/tools/builder.js');
  const { ConsoleBackend } = await import('../src/tools/console.js');
  t.modules = performance.now();
  const hv = await Hypervisor.start({ pcpus: 1 });
  t.hvStart = performance.now();
  const kernel = fs.readFileSync(MINIMAL);
  const built = buildPvhDomain(hv, { name: 'boot-phases', kernel, memoryMiB: 32, vcpus: 1, cmdline: '' });
  const con = new ConsoleBackend(hv, built.domid, specialPageOffset(built.build, built.consoleGfn), built.consolePort, () => {});
  t.built = performance.now();
  let firstLine = 0;
  hv.on('console', () => { if (!firstLine) firstLine = performance.now(); });
  const down = new Promise<void>((resolve) => hv.on('shutdown', () => resolve()));
  startBuiltDomain(hv, built);
  await down;
  t.shutdown = performance.now();
  t.console = firstLine;
  con.close();
  await hv.shutdownAll();
  t.teardown = performance.now();
  process.stdout.write(JSON.stringify({ origin: performance.timeOrigin, t }) + '\n');
}

/** The parts of Hypervisor.start on their own. */
async function childParts(): Promise<void> {
  const r: Record<string, number> = {};
  let t0 = performance.now();
  const { Kvm } = await import('../src/kvm/kvm.js');
  r.importKvm = performance.now() - t0;
  t0 = performance.now();
  const kvm = Kvm.open();
  kvm.requireCapabilities();
  const vm = kvm.createVm();
  const v = vm.createVcpu(0);
  void v.tscKhz;
  v.close();
  vm.close();
  r.kvmProbe = performance.now() - t0;
  t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    const w = new Worker('require("node:worker_threads").parentPort.postMessage(1)', { eval: true });
    w.once('message', () => { r.bareWorker = performance.now() - t0; void w.terminate().then(() => resolve()); });
    w.once('error', reject);
  });
  t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    // Without workerData the pCPU module only loads its module graph (no scheduler loop) and the worker exits.
    const w = new Worker(new URL('../src/hv/pcpu.js', import.meta.url));
    w.once('exit', () => { r.pcpuWorkerLoad = performance.now() - t0; resolve(); });
    w.once('error', reject);
  });
  kvm.close();
  process.stdout.write(JSON.stringify(r) + '\n');
}

// --- the parent ----------------------------------------------------------------

interface Sample { exit: number; firstLine: number; code: number | null; out: string; hung: boolean }

let timeoutMs = 10_000;

/** Runs a process, timing spawn -> the first newline on stdout and spawn -> exit; SIGKILLs it after timeoutMs (a hang). */
function timeProcess(cmd: string, args: string[]): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let firstLine = NaN;
    let out = '';
    let hung = false;
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO_ROOT });
    const timer = setTimeout(() => { hung = true; p.kill('SIGKILL'); }, timeoutMs);
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString('latin1');
      if (Number.isNaN(firstLine) && out.includes('\n')) firstLine = performance.now() - t0;
    });
    p.stderr.resume();
    p.once('error', reject);
    p.once('exit', (code) => { clearTimeout(timer); resolve({ exit: performance.now() - t0, firstLine, code, out, hung }); });
  });
}

function runChild(mode: string): { json: Record<string, unknown>; spawnAbs: number; exitAbs: number } | null {
  const spawnAbs = nowAbs();
  const r = spawnSync(process.execPath, [new URL(import.meta.url).pathname, mode], { cwd: REPO_ROOT, encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL' });
  const exitAbs = nowAbs();
  if (r.status !== 0) {
    console.log(`!!! child ${mode} ${r.signal ? `killed (${r.signal}, hung > ${timeoutMs / 1000} s)` : `failed (${r.status})`}: not counted ${r.stderr}`);
    return null;
  }
  return { json: JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>, spawnAbs, exitAbs };
}

const USAGE = `
usage: node dist/bench/boot.js [--n N] [--phases P] [--no-qemu] [--timeout S] [--json FILE]

Whole-process boot of guests/build/minimal.elf (prints the line "M\\n" on port
0xE9, powers off): \`xenode run\` against QEMU microvm (-accel kvm), spawn to
that line on stdout and spawn to exit, interleaved; then where \`xenode run\`
spends its time.

  --n N        rounds (default 30)
  --phases P   runs of the phase breakdown (default 10)
  --no-qemu    xenode alone
  --timeout S  a process still running after S seconds is a hang (default 10)
  --json FILE  also write the figures as JSON
`;

async function main(): Promise<void> {
  const { values } = benchArgs(USAGE, (args) => parseArgs({
    args,
    options: {
      n: { type: 'string', default: '30' },
      phases: { type: 'string', default: '10' },
      json: { type: 'string' },
      'no-qemu': { type: 'boolean', default: false },
      timeout: { type: 'string', default: '10' },
    },
  }));
  timeoutMs = numArg(values.timeout, '--timeout', USAGE, 0.1) * 1000;
  const N = numArg(values.n, '--n', USAGE);
  const P = numArg(values.phases, '--phases', USAGE, 0);
  const m = machine();
  printMachine(m);
  if (!fs.existsSync(XENODE_JS) || !fs.existsSync(MINIMAL)) throw new Error('build first: npm run build');
  const haveQemu = !values['no-qemu'] && spawnSync(QEMU, ['--version'], { encoding: 'utf8' }).status === 0;
  if (!haveQemu && !values['no-qemu']) {
    console.log('\n' + '!'.repeat(78));
    console.log(`!!! ${QEMU} NOT FOUND: reporting xenode alone, NO QEMU COMPARISON (apt-get install qemu-system-x86)`);
    console.log('!'.repeat(78) + '\n');
  }
  const qemuVersion = haveQemu ? spawnSync(QEMU, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0] : null;
  if (qemuVersion) console.log(`qemu: ${qemuVersion}`);

  const kinds: { name: string; cmd: string; args: string[]; okCode: number; expectM: boolean }[] = [
    { name: 'node -e 0', cmd: process.execPath, args: ['-e', '0'], okCode: 0, expectM: false },
    { name: 'xenode run --quiet', cmd: process.execPath, args: [XENODE_JS, 'run', MINIMAL, '--quiet'], okCode: 0, expectM: false },
    { name: 'xenode run', cmd: process.execPath, args: [XENODE_JS, 'run', MINIMAL], okCode: 0, expectM: true },
  ];
  if (haveQemu) kinds.push({ name: 'qemu microvm', cmd: QEMU, args: QEMU_ARGS, okCode: 1, expectM: true });

  // one warm-up of each (page cache), not counted
  for (const k of kinds) await timeProcess(k.cmd, k.args);
  const exit: Record<string, number[]> = {};
  const firstLine: Record<string, number[]> = {};
  const hangs: Record<string, number> = {};
  for (const k of kinds) { exit[k.name] = []; firstLine[k.name] = []; hangs[k.name] = 0; }
  console.log(`\n${N} rounds, interleaved: ${kinds.map((k) => k.name).join(' | ')}`);
  for (let i = 0; i < N; i++) {
    // rotate the order each round so no kind always follows another
    for (let j = 0; j < kinds.length; j++) {
      const k = kinds[(i + j) % kinds.length]!;
      const s = await timeProcess(k.cmd, k.args);
      if (s.hung) {
        hangs[k.name]!++;
        console.log(`!!! ${k.name}: no exit after ${timeoutMs / 1000} s (killed; not counted). stdout ${JSON.stringify(s.out)}`);
        continue;
      }
      if (s.code !== k.okCode) throw new Error(`${k.name}: exit status ${s.code}, expected ${k.okCode}`);
      if (k.expectM && !s.out.startsWith('M\n')) throw new Error(`${k.name}: stdout ${JSON.stringify(s.out)} does not start with the guest's line "M\\n"`);
      exit[k.name]!.push(s.exit);
      if (k.expectM) firstLine[k.name]!.push(s.firstLine);
    }
  }
  const st: Record<string, { exit: Stats; firstLine?: Stats }> = {};
  for (const k of kinds) st[k.name] = { exit: stats(exit[k.name]!), ...(k.expectM ? { firstLine: stats(firstLine[k.name]!) } : {}) };

  console.log('\nwall time from spawn (ms)');
  const rows: string[][] = [];
  for (const k of kinds) {
    if (st[k.name]!.firstLine) rows.push(statsRow(`${k.name}: "M\\n" on stdout`, st[k.name]!.firstLine!, 1));
    rows.push(statsRow(`${k.name}: exit`, st[k.name]!.exit, 1));
  }
  table(STATS_HEADERS('ms'), rows);
  for (const k of kinds) if (hangs[k.name]) console.log(`!!! ${k.name}: ${hangs[k.name]} of ${N} runs hung (killed after ${timeoutMs / 1000} s), excluded above`);
  const ratios: Record<string, number> = {};
  if (haveQemu) {
    const q = st['qemu microvm']!;
    ratios.exitQuiet = st['xenode run --quiet']!.exit.median / q.exit.median;
    ratios.exit = st['xenode run']!.exit.median / q.exit.median;
    ratios.firstLine = st['xenode run']!.firstLine!.median / q.firstLine!.median;
    console.log(`\nratio xenode/QEMU (medians): exit ${fmt(ratios.exitQuiet)}x (--quiet), ${fmt(ratios.exit)}x; the guest's line on stdout ${fmt(ratios.firstLine)}x`);
    console.log(`target xenode median <= QEMU's: ${ratios.exitQuiet <= 1 ? 'MET' : 'NOT MET'}`);
  }

  // --- where xenode's time goes ---
  console.log(`\nwhere \`xenode run minimal.elf --quiet\` spends its time (the steps of run.ts in a child process, ${P} runs, ms)`);
  const phaseNames: [string, string][] = [
    ['spawn', 'spawn -> node time origin'], ['entered', 'node bootstrap -> bench module running'],
    ['koffi', 'import koffi (native addon)'], ['modules', 'import hypervisor/builder/console graph'],
    ['hvStart', 'Hypervisor.start({pcpus:1})'], ['built', 'buildPvhDomain + console backend'],
    ['shutdown', 'startDomain -> guest shutdown event (its line came before)'], ['teardown', 'shutdownAll (destroy, stop worker)'],
    ['exit', 'end of main -> process exit'], ['total', 'total spawn -> exit'],
  ];
  const ph: Record<string, number[]> = Object.fromEntries(phaseNames.map(([k]) => [k, []]));
  const order = ['entered', 'koffi', 'modules', 'hvStart', 'built', 'shutdown', 'teardown'];
  for (let i = 0; i < P; i++) {
    const c = runChild('--child-phases');
    if (!c) continue;
    const { json, spawnAbs, exitAbs } = c;
    const origin = json.origin as number;
    const t = json.t as Record<string, number>;
    ph.spawn!.push(origin - spawnAbs);
    let prev = 0;
    for (const k of order) { ph[k]!.push(t[k]! - prev); prev = t[k]!; }
    ph.exit!.push(exitAbs - (origin + t.teardown!));
    ph.total!.push(exitAbs - spawnAbs);
  }
  const phStats = Object.fromEntries(phaseNames.map(([k]) => [k, stats(ph[k]!)]));
  table(['step (ms)', 'median', 'p10', 'p90', 'min', 'max', 'n'], phaseNames.map(([k, label]) => statsRow(label, phStats[k]!, 1)));

  console.log(`\nparts of Hypervisor.start, each on its own in a fresh process (${P} runs, ms)`);
  const parts: Record<string, number[]> = { importKvm: [], kvmProbe: [], bareWorker: [], pcpuWorkerLoad: [] };
  for (let i = 0; i < P; i++) {
    const c = runChild('--child-parts');
    if (!c) continue;
    const { json } = c;
    for (const k of Object.keys(parts)) parts[k]!.push(json[k] as number);
  }
  const partLabels: Record<string, string> = {
    importKvm: 'import kvm.js (koffi + libc bindings)', kvmProbe: 'open /dev/kvm, caps, throw-away VM + vCPU',
    bareWorker: 'bare worker_thread to first message', pcpuWorkerLoad: 'worker loading pcpu.js graph, to exit',
  };
  const partStats = Object.fromEntries(Object.keys(parts).map((k) => [k, stats(parts[k]!)]));
  table(['part (ms)', 'median', 'p10', 'p90', 'min', 'max', 'n'], Object.keys(parts).map((k) => statsRow(partLabels[k]!, partStats[k]!, 1)));

  writeJson(values.json, { bench: 'boot', machine: m, qemu: qemuVersion, n: N, wallMs: st, hangs, ratios, phasesMs: phStats, startPartsMs: partStats });
}

const mode = process.argv[2];
if (mode === '--child-phases') await childPhases();
else if (mode === '--child-parts') await childParts();
else await main();
