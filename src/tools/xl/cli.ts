// The xl command line (`xenode xl ...`, installed as `xl`): global options,
// the command table, help, and the errors every command shares. Each
// command talks to the host daemon through DaemonClient; output formats,
// messages and exit statuses follow Xen's xl (docs/xl.md lists the
// differences).

import { ApiCallError, DaemonClient, defaultSocketPath } from '../daemon/client.js';
import { XlExit, commandHelp, parseCommandArgs, type GlobalOptions, type Io, type XlCommand, type XlContext } from './command.js';
import { configUpdate, create } from './commands/create.js';
import { console_ } from './commands/console.js';
import { claims, dmesg, info, list, sharing, top, uptime, vcpuList, vcpuPin, vcpuSet, vmList } from './commands/host.js';
import { destroy, domid, domname, pause, reboot, rename, shutdown, unpause } from './commands/lifecycle.js';
import { xenstoreCommands } from './commands/xenstore.js';
import { memMax, memSet } from './commands/memory.js';
import { buttonPress, debugKeys, dumpCore, sysrq, trigger } from './commands/misc.js';
import { logPrefix } from './commands/common.js';
import { blockAttach, blockDetach, blockList } from './commands/block.js';
import { networkAttach, networkDetach, networkList } from './commands/network.js';
import { schedCredit, schedCredit2, schedRtds } from './commands/sched.js';
import { cpupoolCreate, cpupoolList, cpupoolDestroy, cpupoolRename, cpupoolCpuAdd, cpupoolCpuRemove, cpupoolMigrate } from './commands/cpupool.js';

/** In the order `xl help` lists them (xl's own order, then the xenstore passthroughs). */
export const COMMANDS: XlCommand[] = [
  create, configUpdate, list, destroy, shutdown, reboot, pause, unpause, console_,
  dumpCore, memMax, memSet, buttonPress, vcpuList, vcpuPin, vcpuSet, vmList, info, sharing, schedCredit, schedCredit2, schedRtds, domid, domname,
  rename, trigger, sysrq, debugKeys, dmesg, top, networkAttach, networkList, networkDetach, blockAttach, blockList, blockDetach, uptime, claims, cpupoolCreate, cpupoolList, cpupoolDestroy, cpupoolRename, cpupoolCpuAdd,
  cpupoolCpuRemove, cpupoolMigrate,
  ...xenstoreCommands,
];

/**
 * Every subcommand of Xen's xl (tools/xl/xl_cmdtable.c, in its order). A
 * prefix is looked up against this whole table, as cmdtable_lookup does, so
 * `xl sh` is as ambiguous here (shutdown, sharing) as it is there, and a
 * prefix of a command xenode lacks is refused by that command's name.
 */
export const XL_COMMAND_NAMES: readonly string[] = [
  'create', 'config-update', 'list', 'destroy', 'shutdown', 'reboot', 'pci-attach', 'pci-detach', 'pci-list',
  'pci-assignable-add', 'pci-assignable-remove', 'pci-assignable-list', 'pause', 'unpause', 'console', 'vncviewer',
  'save', 'migrate', 'restore', 'migrate-receive', 'dump-core', 'cd-insert', 'cd-eject', 'mem-max', 'mem-set',
  'button-press', 'vcpu-list', 'vcpu-pin', 'vcpu-set', 'vm-list', 'info', 'sharing', 'sched-credit', 'sched-credit2',
  'sched-rtds', 'domid', 'domname', 'rename', 'trigger', 'sysrq', 'debug-keys', 'set-parameters', 'dmesg', 'top',
  'network-attach', 'network-list', 'network-detach', 'channel-list', 'block-attach', 'block-list', 'block-detach',
  'vtpm-attach', 'vtpm-list', 'vtpm-detach', 'vdispl-attach', 'vdispl-list', 'vdispl-detach', 'vsnd-attach',
  'vsnd-list', 'vsnd-detach', 'vkb-attach', 'vkb-list', 'vkb-detach', 'uptime', 'claims', 'cpupool-create',
  'cpupool-list', 'cpupool-destroy', 'cpupool-rename', 'cpupool-cpu-add', 'cpupool-cpu-remove', 'cpupool-migrate',
  'cpupool-numa-split', 'getenforce', 'setenforce', 'loadpolicy', 'remus', 'devd', 'psr-hwinfo', 'psr-cmt-attach',
  'psr-cmt-detach', 'psr-cmt-show', 'psr-cat-set', 'psr-cat-show', 'psr-mba-set', 'psr-mba-show', 'usbctrl-attach',
  'usbctrl-detach', 'usbdev-attach', 'usbdev-detach', 'usb-list', 'qemu-monitor-command',
];

export type Lookup = { cmd: XlCommand } | { missing: string } | null;

/**
 * xl's cmdtable_lookup: an exact name, or a prefix of exactly one name. An
 * xl command xenode does not have comes back as `missing`.
 */
export function lookup(s: string): Lookup {
  const names = [...XL_COMMAND_NAMES, ...COMMANDS.map((c) => c.name).filter((n) => !XL_COMMAND_NAMES.includes(n))];
  let found: string | undefined;
  let count = 0;
  for (const n of names) {
    if (!n.startsWith(s)) continue;
    if (n === s) { found = n; count = 1; break; }
    found = n;
    count++;
  }
  if (count !== 1 || found === undefined || s === '') return null;
  const cmd = COMMANDS.find((c) => c.name === found);
  return cmd ? { cmd } : { missing: found };
}

const GLOBAL_USAGE = 'Usage xl [-vfNtT] <subcommand> [args]';

/** `xl help`: xl's usage line and every subcommand with its description (help() in xl.c). */
export function globalHelp(): string {
  const lines = [`${GLOBAL_USAGE}\n`, 'xl full list of subcommands:\n'];
  for (const c of COMMANDS) {
    lines.push(c.name.length > 19 ? ` ${c.name} \n ${''.padEnd(19)} ${c.desc}` : ` ${c.name.padEnd(19)} ${c.desc}`);
  }
  return lines.join('\n') + '\n';
}

export const DEFAULT_GLOBALS: GlobalOptions = { verbose: 0, dryRun: false, force: false, progressCr: false, timestamps: false };

/**
 * Global options before the subcommand, as xl's getopt("+vftTN") reads them
 * (bundled letters, the first non-option is the subcommand), plus xenode's
 * own --socket PATH. An unknown one is refused with getopt's and xl's lines.
 */
export function parseGlobal(argv: string[], env: NodeJS.ProcessEnv): { socket: string; global: GlobalOptions; rest: string[] } | { error: string } {
  let socket: string | undefined;
  const global = { ...DEFAULT_GLOBALS };
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--socket') {
      if (i + 1 >= argv.length) return { error: 'xl: --socket needs a path\n' };
      socket = argv[++i];
    } else if (a.startsWith('--socket=')) {
      socket = a.slice('--socket='.length);
    } else if (a === '--') {
      i++;
      break;
    } else if (a.startsWith('--')) {
      return { error: `xl: unrecognized option '${a}'\nunknown global option\n` };
    } else if (a.startsWith('-') && a.length > 1) {
      for (const ch of a.slice(1)) {
        switch (ch) {
          case 'v': global.verbose++; break;
          case 'N': global.dryRun = true; break;
          case 'f': global.force = true; break;
          case 't': global.progressCr = true; break;
          case 'T': global.timestamps = true; break;
          default: return { error: `xl: invalid option -- '${ch}'\nunknown global option\n` };
        }
      }
    } else {
      break;
    }
  }
  return { socket: socket ?? defaultSocketPath(env), global, rest: argv.slice(i) };
}

function connectionHint(socketPath: string, e: ApiCallError): string {
  return `xl: cannot reach the xenode daemon at ${socketPath} (${e.code}).\n` +
    'xl: start it with `xenode daemon` (same XENODE_SOCKET / XENODE_STATE_DIR), or point --socket or XENODE_SOCKET at a running one.\n';
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  io?: Io;
}

/** Runs one xl command line; resolves with the exit status. */
export async function runXl(argv: string[], opts: RunOptions = {}): Promise<number> {
  const env = opts.env ?? process.env;
  const io: Io = opts.io ?? { out: (s) => { process.stdout.write(s); }, err: (s) => { process.stderr.write(s); } };
  const g = parseGlobal(argv, env);
  if ('error' in g) {
    io.err(g.error);
    return 1;
  }
  const [name, ...rest] = g.rest;
  if (name === undefined) {
    io.out(globalHelp());
    return 1;
  }
  const found = lookup(name);
  if (!found && name === 'help') {
    const c = rest[0] === undefined || rest[0] === 'help' ? undefined : lookup(rest[0]);
    if (rest[0] === undefined || rest[0] === 'help') io.out(globalHelp());
    else if (c && 'cmd' in c) io.out(commandHelp(c.cmd));
    else io.out(`command "${rest[0]}" not implemented\n`);
    return 0;
  }
  if (!found) {
    io.err('command not implemented\n');
    return 1;
  }
  if ('missing' in found) {
    io.err(`command not implemented: xenode has no 'xl ${found.missing}' yet (docs/xl.md lists the commands it has)\n`);
    return 1;
  }
  const cmd = found.cmd;
  if (g.global.dryRun && !cmd.canDryrun) {
    io.err('command does not implement -N (dryrun) option\n');
    return 1;
  }
  const parsed = parseCommandArgs(cmd, rest);
  if (!parsed.ok) {
    if (parsed.stderr) io.err(parsed.stderr);
    if (parsed.stdout) io.out(parsed.stdout);
    return parsed.code;
  }

  let client: DaemonClient | undefined;
  let connecting: Promise<DaemonClient> | undefined;
  const ctx: XlContext = {
    ...io,
    env,
    global: g.global,
    socketPath: g.socket,
    client: () => {
      connecting ??= DaemonClient.connect(g.socket).then((c) => {
        client = c;
        if (g.global.verbose > 0) traceCalls(c, (l) => io.err(`${logPrefix(g.global)}${l}\n`));
        return c;
      });
      return connecting;
    },
  };
  try {
    return await cmd.run(ctx, parsed.values, parsed.args);
  } catch (e) {
    if (e instanceof XlExit) return e.code;
    if (e instanceof ApiCallError) {
      if (!client && ['ENOENT', 'ECONNREFUSED', 'EACCES', 'ENOTSOCK', 'ECONNRESET'].includes(e.code)) {
        io.err(connectionHint(g.socket, e));
      } else {
        io.err(`${logPrefix(g.global)}xl: ${e.op ? `${e.op}: ` : ''}${e.message}\n`);
      }
      return 1;
    }
    throw e;
  } finally {
    client?.close();
  }
}

/** -v: each daemon request and how it ended, as libxl's debug lines would show the calls it makes. */
function traceCalls(c: DaemonClient, log: (line: string) => void): void {
  const call = c.call.bind(c);
  c.call = (async (op, args) => {
    const t0 = performance.now();
    try {
      const r = await call(op, args);
      log(`xl: debug: ${op} ok (${(performance.now() - t0).toFixed(1)} ms)`);
      return r;
    } catch (e) {
      log(`xl: debug: ${op} failed: ${e instanceof ApiCallError ? `${e.code} ` : ''}${(e as Error).message}`);
      throw e;
    }
  }) as DaemonClient['call'];
}

/**
 * The process around a command line: output to a closed pipe (`xl list |
 * head -1`) ends xl quietly with SIGPIPE's status, as a C program dies of
 * the signal; nothing ever reaches the user as a JavaScript stack trace.
 */
function guardProcess(): void {
  const onStreamError = (e: NodeJS.ErrnoException): void => {
    if (e.code === 'EPIPE') process.exit(128 + 13);
    internalError(e);
  };
  process.stdout.on('error', onStreamError);
  process.stderr.on('error', onStreamError);
  process.on('uncaughtException', internalError);
  process.on('unhandledRejection', internalError);
}

function internalError(e: unknown): never {
  try {
    process.stderr.write(`xl: internal error: ${e instanceof Error ? e.message : String(e)}\n`);
  } catch { /* stderr is gone too */ }
  process.exit(1);
}

export async function main(argv: string[]): Promise<number> {
  guardProcess();
  try {
    return await runXl(argv);
  } catch (e) {
    return internalError(e);
  }
}
