// `xenode daemon`: run the host daemon in the foreground (as a service
// manager expects). SIGTERM/SIGINT destroy the domains and exit 0.

import { parseArgs } from 'node:util';
import { driverNameProblem } from '../driver_domains.js';
import { defaultSocketPath, defaultStateDir } from './client.js';
import { Daemon, DaemonStartError } from './daemon.js';
import { ACCEL_MODES, type AccelMode } from '../../hv/accel.js';

const USAGE = `usage: xenode daemon [--socket PATH] [--state-dir DIR] [--pcpus N] [--sched NAME] [--restart-delay MS]
                     [--restart-limit N] [--disk-backend NAME] [--vif-backend NAME] [--verbose]

Runs the xenode host daemon: the hypervisor's pCPU workers, xenstored, the
console backends, and the API on a Unix socket (docs/api.md).

  --socket PATH        API socket (default: $XENODE_SOCKET, <state>/xenode.sock when
                       $XENODE_STATE_DIR is set, /run/xenode/xenode.sock for root,
                       $XDG_RUNTIME_DIR/xenode/xenode.sock otherwise)
  --state-dir DIR      configs, logs, consoles (default: $XENODE_STATE_DIR,
                       /var/lib/xenode for root, ~/.local/state/xenode otherwise)
  --pcpus N            pCPU workers (default: one per host CPU)
  --sched NAME         Pool-0's scheduler, as Xen's sched=: credit2 (default), credit, rtds,
                       arinc653, null (docs/scheduling.md)
  --restart-delay MS   pause before re-creating a restarted domain (default 2000, as xl)
  --restart-limit N    restarts allowed per minute before a domain is left shut down (default 5)
  --accel MODE         the CPU that runs guests: kvm, tcg (the software CPU) or auto (default:
                       kvm where it runs guest code natively, else tcg; said in the log and xl info)
  --pin-pcpus          pin each of Pool-0's pCPU workers to one host CPU (pCPU n to the n-th
                       CPU this process may use); docs/scheduling.md, "The host side of real time"
  --rt-priority N      run Pool-0's pCPU workers at SCHED_FIFO priority N (1..99) where the host
                       permits it (CAP_SYS_NICE or RLIMIT_RTPRIO); a refusal is logged, not fatal
  --load-balance       move KVM vCPUs between the pCPUs of a pool as their loads part (credit2's
                       runqueue balancing; docs/scheduling.md); off by default
  --disk-backend NAME  serve disks that name no other backend from the driver domain NAME
                       (started on first use, restarted when it dies; docs/driver-domains.md)
  --vif-backend NAME   the same for vifs (a vif with script=vif-bridge stays with the daemon)
  --verbose            copy the daemon log to stderr`;

function intOpt(v: string | undefined, name: string, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got '${v}'`);
  return n;
}

export async function main(argv: string[]): Promise<number> {
  let values;
  let pcpus, restartDelayMs, restartLimit, rtPriority;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        socket: { type: 'string' },
        'state-dir': { type: 'string' },
        pcpus: { type: 'string' },
        sched: { type: 'string' },
        'restart-delay': { type: 'string' },
        'restart-limit': { type: 'string' },
        accel: { type: 'string', default: 'auto' },
        verbose: { type: 'boolean', short: 'v', default: false },
        'pin-pcpus': { type: 'boolean', default: false },
        'rt-priority': { type: 'string' },
        'load-balance': { type: 'boolean', default: false },
        'disk-backend': { type: 'string' },
        'vif-backend': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
    pcpus = intOpt(values.pcpus, 'pcpus', 1);
    restartDelayMs = intOpt(values['restart-delay'], 'restart-delay', 0);
    restartLimit = intOpt(values['restart-limit'], 'restart-limit', 0);
    rtPriority = intOpt(values['rt-priority'], 'rt-priority', 1);
    if (rtPriority !== undefined && rtPriority > 99) throw new Error(`--rt-priority must be 1..99, got '${rtPriority}'`);
    for (const k of ['disk-backend', 'vif-backend'] as const) {
      const bad = values[k] === undefined ? null : driverNameProblem(values[k]);
      if (bad) throw new Error(`--${k}: ${bad}`);
    }
    if (!ACCEL_MODES.includes(values.accel as AccelMode)) throw new Error(`--accel must be auto, kvm, tcg or kvm+tcg, got '${values.accel}'`);
  } catch (e) {
    console.error(`xenode daemon: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) { console.log(USAGE); return 0; }
  const env = { ...process.env };
  if (values['state-dir']) env.XENODE_STATE_DIR = values['state-dir'];
  const stateDir = defaultStateDir(env);
  const socketPath = values.socket ?? defaultSocketPath(env);
  let daemon: Daemon;
  try {
    daemon = await Daemon.start({
      socketPath, stateDir, pcpus, accel: values.accel as AccelMode, sched: values.sched,
      hostSched: values['pin-pcpus'] || rtPriority ? { pin: values['pin-pcpus'] ?? false, rtPriority: rtPriority ?? 0 } : undefined,
      policy: {
        ...(restartDelayMs !== undefined && { restartDelayMs }), ...(restartLimit !== undefined && { restartLimit }),
        ...(values['disk-backend'] !== undefined && { diskBackend: values['disk-backend'] }), ...(values['vif-backend'] !== undefined && { vifBackend: values['vif-backend'] }),
      },
      echo: values.verbose ? (l) => process.stderr.write(`xenode daemon: ${l}\n`) : undefined,
    });
  } catch (e) {
    console.error(`xenode daemon: ${e instanceof DaemonStartError ? e.message : e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
  if (values['load-balance']) daemon.ts.hv.startLoadBalancing();
  process.stderr.write(`xenode daemon: listening on ${socketPath} (pid ${process.pid}, state ${stateDir})\n`);
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      process.stderr.write(`xenode daemon: ${sig}: destroying domains and stopping\n`);
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await daemon.stop();
  return 0;
}
