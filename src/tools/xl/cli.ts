// The xl command line (`xenode xl ...`, installed as `xl`): global options,
// the command table, help, and the errors every command shares. Each
// command talks to the host daemon through DaemonClient; output formats,
// messages and exit statuses follow Xen's xl (docs/xl.md lists the
// differences).

import { ApiCallError, DaemonClient, defaultSocketPath } from '../daemon/client.js';
import { XlExit, commandHelp, parseCommandArgs, type Io, type XlCommand, type XlContext } from './command.js';
import { create } from './commands/create.js';
import { console_ } from './commands/console.js';
import { dmesg, info, list, top, uptime, vcpuList, vcpuPin } from './commands/host.js';
import { destroy, domid, domname, pause, reboot, rename, shutdown, unpause } from './commands/lifecycle.js';
import { xenstoreCommands } from './commands/xenstore.js';

/** In the order `xl help` lists them (xl's own order, then the xenstore passthroughs). */
export const COMMANDS: XlCommand[] = [
  create, list, destroy, shutdown, reboot, pause, unpause, console_,
  vcpuList, vcpuPin, info, domid, domname, rename, dmesg, top, uptime,
  ...xenstoreCommands,
];

export function lookup(name: string): XlCommand | undefined {
  return COMMANDS.find((c) => c.name === name);
}

const GLOBAL_USAGE = 'Usage xl [--socket PATH] <subcommand> [args]';

/** `xl help`: every subcommand with its one-line description. */
export function globalHelp(): string {
  const lines = [`${GLOBAL_USAGE}\n`, 'xl full list of subcommands:\n'];
  for (const c of COMMANDS) {
    lines.push(c.name.length > 19 ? ` ${c.name}\n ${''.padEnd(19)} ${c.desc}` : ` ${c.name.padEnd(19)} ${c.desc}`);
  }
  lines.push('', 'Global options:', '  --socket PATH   the xenode daemon\'s API socket (default: $XENODE_SOCKET, else the daemon\'s default)');
  return lines.join('\n') + '\n';
}

/** Global options before the subcommand; the first non-option is the subcommand. */
export function parseGlobal(argv: string[], env: NodeJS.ProcessEnv): { socket: string; rest: string[] } | { error: string } {
  let socket: string | undefined;
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--socket') {
      if (i + 1 >= argv.length) return { error: 'xl: --socket needs a path' };
      socket = argv[++i];
    } else if (a.startsWith('--socket=')) {
      socket = a.slice('--socket='.length);
    } else if (a === '--') {
      i++;
      break;
    } else if (a.startsWith('-') && a !== '-h' && a !== '--help') {
      return { error: 'unknown global option' };
    } else {
      break;
    }
  }
  return { socket: socket ?? defaultSocketPath(env), rest: argv.slice(i) };
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
    io.err(`${g.error}\n`);
    return 1;
  }
  const [name, ...rest] = g.rest;
  if (name === undefined || name === '-h' || name === '--help') {
    io.out(globalHelp());
    return name === undefined ? 1 : 0;
  }
  if (name === 'help') {
    const c = rest[0] === undefined ? undefined : lookup(rest[0]);
    if (rest[0] !== undefined && !c) io.out(`command "${rest[0]}" not implemented\n`);
    else io.out(c ? commandHelp(c) : globalHelp());
    return 0;
  }
  const cmd = lookup(name);
  if (!cmd) {
    io.err('command not implemented\n');
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
    socketPath: g.socket,
    client: () => {
      connecting ??= DaemonClient.connect(g.socket).then((c) => { client = c; return c; });
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
        io.err(`xl: ${e.op ? `${e.op}: ` : ''}${e.message}\n`);
      }
      return 1;
    }
    throw e;
  } finally {
    client?.close();
  }
}

export async function main(argv: string[]): Promise<number> {
  return runXl(argv);
}
