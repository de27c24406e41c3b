// `xenode run <kernel>`: boot one domain in the foreground, stream its
// console (console_io, the 0xE9 debug port and the PV console ring), and exit
// with a code that says how it ended.

import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { Toolstack, ToolstackDomain } from './toolstack.js';
import { SHUTDOWN_NAMES } from '../hv/sched_op.js';
import { PvhLoadError } from '../hv/x86/pvh.js';
import { ACCEL_MODES, AccelError, type AccelMode } from '../hv/accel.js';

/** Exit status of `xenode run` for each SHUTDOWN_* reason (crash distinct from poweroff). */
export const EXIT_CODES: Record<number, number> = { 0: 0, 1: 10, 2: 11, 3: 12, 4: 13, 5: 14 };
export const EXIT_INTERRUPTED = 130;
const USAGE = `usage: xenode run <kernel> [--memory MiB] [--vcpus N] [--cmdline S] [--accel auto|kvm|tcg] [--quiet]

Boots a PVH kernel as one domain and streams its console. Exit status:
  0 poweroff, 10 reboot, 11 suspend, 12 crash, 13 watchdog, 14 soft_reset,
  1 error starting the domain, 2 bad usage, 130 interrupted (domain destroyed).`;

export async function main(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        memory: { type: 'string', short: 'm', default: '32' },
        vcpus: { type: 'string', default: '1' },
        cmdline: { type: 'string', default: '' },
        quiet: { type: 'boolean', short: 'q', default: false },
        accel: { type: 'string', default: 'auto' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    console.error(`xenode run: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (args.values.help) { console.log(USAGE); return 0; }
  const kernelPath = args.positionals[0];
  if (!kernelPath || args.positionals.length > 1) { console.error(USAGE); return 2; }
  const memoryMiB = Number(args.values.memory);
  const vcpus = Number(args.values.vcpus);
  if (!Number.isInteger(memoryMiB) || memoryMiB < 1) { console.error(`xenode run: --memory must be a whole number of MiB, got '${args.values.memory}'`); return 2; }
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > 128) { console.error(`xenode run: --vcpus must be 1..128, got '${args.values.vcpus}'`); return 2; }
  const accel = args.values.accel as AccelMode;
  if (!ACCEL_MODES.includes(accel)) { console.error(`xenode run: --accel must be auto, kvm or tcg, got '${args.values.accel}'`); return 2; }
  let kernel: Uint8Array;
  try {
    kernel = readFileSync(kernelPath);
  } catch (e) {
    console.error(`xenode run: cannot read kernel '${kernelPath}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    return 1;
  }

  // --quiet silences xenode's own messages, never the guest's console.
  const quiet = args.values.quiet;
  const out = (s: string) => process.stdout.write(s);
  let ts: Toolstack;
  try {
    ts = await Toolstack.start({ pcpus: Math.min(vcpus, 2), accel, log: (l) => { if (!quiet) process.stderr.write(`xenstored: ${l}\n`); } });
  } catch (e) {
    if (!(e instanceof AccelError)) throw e;
    console.error(`xenode run: ${e.message}`);
    return 1;
  }
  const hv = ts.hv;
  if (!quiet) process.stderr.write(`(XEN) CPU: ${hv.accel.why}\n`);
  hv.on('log', (level, text) => { if (level !== 'info' || !quiet) process.stderr.write(`(XEN) ${text}\n`); });
  hv.on('console', (_domid, _src, text, eol) => out(eol ? text + '\n' : text));

  let dom: ToolstackDomain;
  const ended = new Promise<number>((resolve) => {
    hv.on('shutdown', (domid, reason, detail) => {
      if (domid !== dom?.domid) return;
      const why = SHUTDOWN_NAMES[reason] ?? `reason ${reason}`;
      if (!quiet || reason !== 0) process.stderr.write(`xenode: domain ${domid} shut down: ${why}${detail ? ` (${detail.split('\n')[0]})` : ''}\n`);
      resolve(EXIT_CODES[reason] ?? 12);
    });
    process.once('SIGINT', () => resolve(EXIT_INTERRUPTED));
    process.once('SIGTERM', () => resolve(EXIT_INTERRUPTED));
  });
  try {
    dom = await ts.create({ name: 'xenode-run', kernel, memoryMiB, vcpus, cmdline: args.values.cmdline }, (b) => out(Buffer.from(b).toString('latin1')));
  } catch (e) {
    await ts.shutdown();
    console.error(`xenode run: ${e instanceof PvhLoadError ? `${kernelPath}: ${e.message}` : (e as Error).message}`);
    return 1;
  }
  const code = await ended;
  await ts.shutdown();
  return code;
}
