// `xenode run <kernel>`: boot one domain in the foreground, stream its
// console (console_io, the 0xE9 debug port and the PV console ring), and exit
// with a code that says how it ended.

import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { Toolstack, ToolstackDomain } from './toolstack.js';
import { SHUTDOWN_NAMES } from '../hv/sched_op.js';
import { PvhLoadError } from '../hv/x86/pvh.js';
import { EVTCHN_FIFO_NR_CHANNELS } from '../hv/abi/event_channel.js';

/** Exit status of `xenode run` for each SHUTDOWN_* reason (crash distinct from poweroff). */
export const EXIT_CODES: Record<number, number> = { 0: 0, 1: 10, 2: 11, 3: 12, 4: 13, 5: 14 };
export const EXIT_INTERRUPTED = 130;
const USAGE = `usage: xenode run <kernel> [--memory MiB] [--vcpus N] [--cmdline S] [--max-event-channels N] [--quiet]

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
        'max-event-channels': { type: 'string', default: '1024' },
        quiet: { type: 'boolean', short: 'q', default: false },
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
  // xl.cfg's max_event_channels: ports 0..N-1 (above 4096 usable once the guest switches to FIFO).
  const channels = Number(args.values['max-event-channels']);
  if (!Number.isInteger(channels) || channels < 2 || channels > EVTCHN_FIFO_NR_CHANNELS) {
    console.error(`xenode run: --max-event-channels must be 2..${EVTCHN_FIFO_NR_CHANNELS}, got '${args.values['max-event-channels']}'`);
    return 2;
  }
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
  const ts = await Toolstack.start({ pcpus: Math.min(vcpus, 2), log: (l) => { if (!quiet) process.stderr.write(`xenstored: ${l}\n`); } });
  const hv = ts.hv;
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
    dom = await ts.create({ name: 'xenode-run', kernel, memoryMiB, vcpus, cmdline: args.values.cmdline, maxEvtchnPort: channels - 1 }, (b) => out(Buffer.from(b).toString('latin1')));
  } catch (e) {
    await ts.shutdown();
    console.error(`xenode run: ${e instanceof PvhLoadError ? `${kernelPath}: ${e.message}` : (e as Error).message}`);
    return 1;
  }
  const code = await ended;
  await ts.shutdown();
  return code;
}
