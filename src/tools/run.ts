// `xenode run <kernel>`: boot one domain in the foreground, stream its
// console (console_io, the 0xE9 debug port and the PV console ring), and exit
// with a code that says how it ended.

import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { Hypervisor } from '../hv/hypervisor.js';
import { randomUUID } from 'node:crypto';
import { buildPvhDomain, startBuiltDomain, specialPageOffset, BuiltDomain } from './builder.js';
import { Xenstored, LocalClient } from './xenstored/index.js';
import { XenstoreRings, connectServices } from './services.js';
import { SHUTDOWN_NAMES } from '../hv/sched_op.js';
import { PvhLoadError } from '../hv/x86/pvh.js';

/** Exit status of `xenode run` for each SHUTDOWN_* reason (crash distinct from poweroff). */
export const EXIT_CODES: Record<number, number> = { 0: 0, 1: 10, 2: 11, 3: 12, 4: 13, 5: 14 };
export const EXIT_INTERRUPTED = 130;
const USAGE = `usage: xenode run <kernel> [--memory MiB] [--vcpus N] [--cmdline S] [--quiet]

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
  let kernel: Uint8Array;
  try {
    kernel = readFileSync(kernelPath);
  } catch (e) {
    console.error(`xenode run: cannot read kernel '${kernelPath}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    return 1;
  }

  const hv = await Hypervisor.start({ pcpus: Math.min(vcpus, 2) });
  // --quiet silences xenode's own messages, never the guest's console.
  const quiet = args.values.quiet;
  const out = (s: string) => process.stdout.write(s);
  hv.on('log', (level, text) => { if (level !== 'info' || !quiet) process.stderr.write(`(XEN) ${text}\n`); });
  hv.on('console', (_domid, _src, text, eol) => out(eol ? text + '\n' : text));

  // The control domain's xenstored (in memory: `run` keeps no state).
  const builds = new Map<number, BuiltDomain>();
  const rings = new XenstoreRings(hv, (domid, gfn) => {
    const b = builds.get(domid);
    return b && gfn === b.storeGfn ? specialPageOffset(b.build, gfn) : null;
  });
  const xs = new Xenstored({ hooks: rings, log: (l) => { if (!quiet) process.stderr.write(`xenstored: ${l}\n`); } });
  rings.xs = xs;
  await xs.start();
  const client = new LocalClient(xs);

  let built: BuiltDomain;
  const name = 'xenode-run';
  try {
    built = buildPvhDomain(hv, { name, kernel, memoryMiB, vcpus, cmdline: args.values.cmdline });
  } catch (e) {
    await xs.stop();
    await hv.shutdownAll();
    console.error(`xenode run: ${e instanceof PvhLoadError ? `${kernelPath}: ${e.message}` : (e as Error).message}`);
    return 1;
  }
  builds.set(built.domid, built);
  let services;
  try {
    services = await connectServices(hv, xs, client, built, {
      name, uuid: randomUUID(), vcpus, memoryKiB: memoryMiB * 1024,
      output: (b) => out(Buffer.from(b).toString('latin1')),
    });
  } catch (e) {
    client.close();
    await xs.stop();
    await hv.shutdownAll();
    console.error(`xenode run: connecting the domain's console and xenstore failed: ${(e as Error).message}`);
    return 1;
  }
  const con = services.console;
  const ended = new Promise<number>((resolve) => {
    hv.on('shutdown', (domid, reason, detail) => {
      if (domid !== built.domid) return;
      con.drain();
      xs.domainDied(domid);
      const why = SHUTDOWN_NAMES[reason] ?? `reason ${reason}`;
      if (!quiet || reason !== 0) process.stderr.write(`xenode: domain ${domid} shut down: ${why}${detail ? ` (${detail.split('\n')[0]})` : ''}\n`);
      resolve(EXIT_CODES[reason] ?? 12);
    });
    process.once('SIGINT', () => resolve(EXIT_INTERRUPTED));
    process.once('SIGTERM', () => resolve(EXIT_INTERRUPTED));
  });
  startBuiltDomain(hv, built);
  const code = await ended;
  services.close();
  client.close();
  await xs.stop();
  await hv.shutdownAll();
  return code;
}
