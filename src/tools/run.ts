// `xenode run <kernel>`: boot one domain in the foreground, stream its
// console (the PV console ring) and its lines on the hypervisor console
// (console_io, the 0xE9 debug port) to stdout, and exit with a code that says
// how it ended.

import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { Toolstack, ToolstackDomain } from './toolstack.js';
import { SHUTDOWN_NAMES } from '../hv/sched_op.js';
import { PvhLoadError } from '../hv/x86/pvh.js';
import { ACCEL_MODES, AccelError, type AccelMode } from '../hv/accel.js';
import { EVTCHN_FIFO_NR_CHANNELS } from '../hv/abi/event_channel.js';
import path from 'node:path';
import { parseDiskSpec, DiskSpecError } from './xl/disk.js';
import { DiskError, vbdSpecOf, vbdDevids, type VbdSpec } from './disk.js';
import { parseVifSpec, VifSpecError } from './xl/vif.js';
import { NicError, nicSpecOf, settleNics, type NicSpec } from './net.js';

/** Exit status of `xenode run` for each SHUTDOWN_* reason (crash distinct from poweroff). */
export const EXIT_CODES: Record<number, number> = { 0: 0, 1: 10, 2: 11, 3: 12, 4: 13, 5: 14 };
export const EXIT_INTERRUPTED = 130;
const USAGE = `usage: xenode run <kernel> [--memory MiB] [--vcpus N] [--cmdline S] [--ramdisk FILE] [--max-event-channels N] [--accel auto|kvm|tcg|kvm+tcg]
                  [--disk SPEC]... [--vif SPEC]... [--quiet]

Boots a PVH kernel as one domain and streams its console. --disk takes an
xl.cfg disk entry (xl-disk-configuration: '/srv/img.raw,raw,xvda,rw'), served
by blkback; a relative target is taken from the current directory. --vif takes
an xl.cfg vif entry (xl-network-configuration: 'mac=00:16:3e:00:00:01,bridge=br0'),
served by netback: a tap on the bridge when it is one of this network
namespace's and xenode may make taps, else the in-process switch. Exit status:
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
        ramdisk: { type: 'string' },
        disk: { type: 'string', multiple: true, default: [] },
        vif: { type: 'string', multiple: true, default: [] },
        'max-event-channels': { type: 'string', default: '1023' },
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
  if (!ACCEL_MODES.includes(accel)) { console.error(`xenode run: --accel must be auto, kvm, tcg or kvm+tcg, got '${args.values.accel}'`); return 2; }
  // xl.cfg's max_event_channels, which libxl passes to Xen as the highest port
  // (ports above 4095 usable once the guest switches to FIFO).
  const channels = Number(args.values['max-event-channels']);
  if (!Number.isInteger(channels) || channels < 1 || channels >= EVTCHN_FIFO_NR_CHANNELS) {
    console.error(`xenode run: --max-event-channels must be 1..${EVTCHN_FIFO_NR_CHANNELS - 1}, got '${args.values['max-event-channels']}'`);
    return 2;
  }
  let disks: VbdSpec[];
  try {
    disks = args.values.disk.map((spec) => {
      const d = parseDiskSpec(spec);
      return vbdSpecOf({ ...d, target: d.target && d.script === undefined ? path.resolve(d.target) : d.target });
    });
    vbdDevids(disks);
  } catch (e) {
    if (!(e instanceof DiskSpecError || e instanceof DiskError)) throw e;
    console.error(`xenode run: --disk: ${e.message}`);
    return 2;
  }
  let vifs: NicSpec[];
  try {
    vifs = args.values.vif.map((spec, devid) => nicSpecOf(parseVifSpec(spec, { devid, warn: (m) => console.error(`xenode run: --vif: ${m}`) })));
    settleNics(vifs);
  } catch (e) {
    if (!(e instanceof VifSpecError || e instanceof NicError)) throw e;
    console.error(`xenode run: --vif: ${e.message}`);
    return 2;
  }
  let kernel: Uint8Array;
  try {
    kernel = readFileSync(kernelPath);
  } catch (e) {
    console.error(`xenode run: cannot read kernel '${kernelPath}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    return 1;
  }
  let ramdisk: Uint8Array | undefined;
  if (args.values.ramdisk !== undefined) {
    try {
      ramdisk = readFileSync(args.values.ramdisk);
    } catch (e) {
      console.error(`xenode run: cannot read ramdisk '${args.values.ramdisk}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      return 1;
    }
  }

  // --quiet silences xenode's own messages, never the guest's console.
  const quiet = args.values.quiet;
  const out = (s: string) => process.stdout.write(s);
  let ts: Toolstack;
  try {
    ts = await Toolstack.start({ pcpus: Math.min(vcpus, 2), accel, log: (l) => { if (!quiet) process.stderr.write(`xenstored: ${l}\n`); }, backendLog: (l) => process.stderr.write(`xenode: ${l}\n`) });
  } catch (e) {
    if (!(e instanceof AccelError)) throw e;
    console.error(`xenode run: ${e.message}`);
    return 1;
  }
  const hv = ts.hv;
  if (!quiet) process.stderr.write(`(XEN) CPU: ${hv.accel.why}\n`);
  hv.on('log', (level, text) => { if (level !== 'info' || !quiet) process.stderr.write(`(XEN) ${text}\n`); });
  const merged = new MergedConsole(out);
  // The only domain here is the one being run (its lines may come before create() returns).
  hv.on('console', (_domid, src, text, eol) => merged.hypervisorLine(src, text, eol));

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
    dom = await ts.create({ name: 'xenode-run', kernel, ramdisk, memoryMiB, vcpus, cmdline: args.values.cmdline, maxEvtchnPort: channels }, (b) => merged.ring(b), { disks, vifs });
  } catch (e) {
    await ts.shutdown();
    console.error(`xenode run: ${e instanceof PvhLoadError ? `${kernelPath}: ${e.message}` : (e as Error).message}`);
    return 1;
  }
  const code = await ended;
  await ts.shutdown();
  return code;
}

/** Copies of one line on different outputs are merged when they come within this long of each other. */
export const MERGE_WINDOW_MS = 2000;

/**
 * The domain's two outputs merged for one terminal. On Xen they are two
 * places, `xl console` (the PV ring) and `xl dmesg` (console_io and 0xE9, as
 * "(dN) " lines), and nobody reads both at once; but guests commonly write
 * every line to both (Mini-OS and Solo5 do, Linux with earlyprintk=xen and
 * console=hvc0 does while it boots, our samples with console=all write all
 * three), so shown together every line would come two or three times.
 *
 * So each line is shown once, from whichever output brings it first, with
 * no delay: a line that was shown from another output within
 * MERGE_WINDOW_MS is that line's copy and is dropped. Ring output is written
 * as it comes, byte for byte; only its complete lines can be recognised as
 * copies, so a line whose start was written before its end arrived (a ring
 * drained mid-line) is not dropped. A line repeated on one output is never
 * merged with itself.
 */
export class MergedConsole {
  /** Part of the current ring line already written out (a partial line is written at once; see ring()). */
  private ringWritten = '';
  /** Lines shown lately (text, when, by which outputs), oldest first. */
  private readonly shown: { text: string; at: number; from: Set<string> }[] = [];

  constructor(private readonly write: (s: string) => void, private readonly now: () => number = () => performance.now()) {}

  /** Bytes from the PV console ring. */
  ring(bytes: Uint8Array): void {
    const lines = Buffer.from(bytes).toString('latin1').split('\n');
    const partial = lines.pop()!;
    for (const raw of lines) {
      const text = (this.ringWritten + raw).replace(/\r$/, '');
      const copy = this.ringWritten === '' && this.absorb(text, 'ring');
      if (!copy) {
        this.write(raw + '\n');
        this.remember(text, 'ring');
      }
      this.ringWritten = '';
    }
    // A partial line (a prompt, or a line cut by the drain) is shown now: it cannot wait for its end.
    if (partial) {
      this.write(partial);
      this.ringWritten = (this.ringWritten + partial).slice(-4096);
    }
  }

  /** A line the domain wrote to the hypervisor console (`eol` false: a partial line flushed at its end). */
  hypervisorLine(src: string, text: string, eol: boolean): void {
    if (!eol) return this.write(text);
    if (this.absorb(text, src)) return;
    this.write(text + '\n');
    this.remember(text, src);
  }

  /** True if `text` was shown lately from another output (this is its copy): `src` joins that line. */
  private absorb(text: string, src: string): boolean {
    this.prune();
    const e = this.shown.find((x) => x.text === text && !x.from.has(src));
    if (!e) return false;
    e.from.add(src);
    return true;
  }

  private remember(text: string, src: string): void {
    this.prune();
    this.shown.push({ text, at: this.now(), from: new Set([src]) });
    if (this.shown.length > 256) this.shown.shift();
  }

  private prune(): void {
    const old = this.now() - MERGE_WINDOW_MS;
    while (this.shown.length && this.shown[0]!.at < old) this.shown.shift();
  }
}
