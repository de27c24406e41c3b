// `xenode demo`: the built-in default system. Boots the repository's sample
// guests side by side under one hypervisor and one xenstored, prefixes each
// domain's console with its name, and ends with a table of how each domain
// shut down (the crash guest crashing is part of the demo).

import { parseArgs } from 'node:util';
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ACCEL_MODES, AccelError, type AccelMode } from '../hv/accel.js';
import { Toolstack } from './toolstack.js';
import { SHUTDOWN_NAMES } from '../hv/sched_op.js';

interface DemoGuest { name: string; elf: string; cmdline?: string; expect: string }

export const DEMO: DemoGuest[] = [
  { name: 'hello', elf: 'hello.elf', expect: 'poweroff' },
  { name: 'hypercalls', elf: 'hypercalls.elf', expect: 'poweroff' },
  { name: 'spin', elf: 'spin.elf', cmdline: 'rounds=2', expect: 'poweroff' },
  { name: 'reboot', elf: 'shutdown-reboot.elf', expect: 'reboot' },
  { name: 'crash', elf: 'crash.elf', expect: 'crash' },
];

const USAGE = 'usage: xenode demo [--guests DIR] [--accel auto|kvm|tcg|kvm+tcg]\n\nBoots the sample guests (hello, hypercalls, spin, reboot, crash) together.';

export async function main(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs({ args: argv, options: { guests: { type: 'string' }, accel: { type: 'string', default: 'auto' }, help: { type: 'boolean', short: 'h' } } });
  } catch (e) {
    console.error(`xenode demo: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (args.values.help) { console.log(USAGE); return 0; }
  const accel = args.values.accel as AccelMode;
  if (!ACCEL_MODES.includes(accel)) { console.error(`xenode demo: --accel must be auto, kvm, tcg or kvm+tcg, got '${args.values.accel}'\n${USAGE}`); return 2; }
  const dir = args.values.guests ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../guests/build');
  const missing = DEMO.filter((g) => !existsSync(path.join(dir, g.elf)));
  if (missing.length) {
    console.error(`xenode demo: sample guests not built in ${dir} (${missing.map((g) => g.elf).join(', ')}): run 'npm run build'`);
    return 1;
  }
  let ts: Toolstack;
  try {
    ts = await Toolstack.start({ accel, log: (l) => process.stderr.write(`xenstored: ${l}\n`), backendLog: (l) => process.stderr.write(`xenode: ${l}\n`) });
  } catch (e) {
    if (!(e instanceof AccelError)) throw e;
    console.error(`xenode demo: ${e.message}`);
    return 1;
  }
  const hv = ts.hv;
  process.stderr.write(`(XEN) CPU: ${hv.accel.why}\n`);
  const names = new Map<number, string>();
  const width = Math.max(...DEMO.map((g) => g.name.length));
  const partial = new Map<number, string>();
  const print = (domid: number, text: string) => {
    const buf = (partial.get(domid) ?? '') + text;
    const lines = buf.split('\n');
    partial.set(domid, lines.pop()!);
    for (const l of lines) process.stdout.write(`[${(names.get(domid) ?? `d${domid}`).padEnd(width)}] ${l}\n`);
  };
  hv.on('console', (domid, _src, text, eol) => print(domid, eol ? text + '\n' : text));
  hv.on('log', (level, text) => process.stderr.write(`(XEN) ${level}: ${text}\n`));
  const results = new Map<number, string>();
  const allDone = new Promise<void>((resolve) => {
    hv.on('shutdown', (domid, reason) => {
      results.set(domid, SHUTDOWN_NAMES[reason] ?? `reason ${reason}`);
      if (results.size === DEMO.length) resolve();
    });
  });
  const t0 = performance.now();
  const started: { g: DemoGuest; domid: number }[] = [];
  for (const g of DEMO) {
    const d = await ts.create(
      { name: g.name, kernel: readFileSync(path.join(dir, g.elf)), memoryMiB: 32, vcpus: 1, cmdline: g.cmdline },
      (b) => print(d.domid, Buffer.from(b).toString('latin1')),
    );
    names.set(d.domid, g.name);
    started.push({ g, domid: d.domid });
  }
  let interrupted = false;
  await Promise.race([allDone, new Promise<void>((r) => process.once('SIGINT', () => { interrupted = true; r(); }))]);
  for (const [domid, rest] of partial) if (rest) process.stdout.write(`[${(names.get(domid) ?? '').padEnd(width)}] ${rest}\n`);
  const ms = performance.now() - t0;
  console.log(`\n${'Name'.padEnd(12)} ${'ID'.padStart(3)}  ${'Expected'.padEnd(9)} Result`);
  let ok = !interrupted;
  for (const { g, domid } of started) {
    const r = results.get(domid) ?? 'running';
    if (r !== g.expect) ok = false;
    console.log(`${g.name.padEnd(12)} ${String(domid).padStart(3)}  ${g.expect.padEnd(9)} ${r}${r === g.expect ? '' : '   <-- unexpected'}`);
  }
  console.log(`\n${started.length} domains in ${(ms / 1000).toFixed(2)} s on ${hv.nrPcpus} pCPU worker(s): ${ok ? 'all ended as expected' : 'SOME DID NOT END AS EXPECTED'}`);
  await ts.shutdown();
  return ok ? 0 : 1;
}
