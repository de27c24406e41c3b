// The shape of one xl subcommand and xl's option handling around it (xl's
// def_getopt): `-h` prints the command's help and exits 0; an unknown
// option prints "option `x' not supported." and exits 2; too few
// arguments print "'xl cmd' requires at least N argument(s)." and the help,
// exit 2. Options may come before or after the positionals, as with GNU getopt.

import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { DaemonClient } from '../daemon/client.js';

/** Leaves the command with this exit status (messages already printed). */
export class XlExit extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}

export interface Io {
  out(s: string): void;
  err(s: string): void;
}

/** xl's global options (xl.c main: getopt "+vftTN"). */
export interface GlobalOptions {
  /** -v, once per level: more detail in messages */
  verbose: number;
  /** -N: commands that can print what they would do, and do nothing */
  dryRun: boolean;
  /** -f: force_execution */
  force: boolean;
  /** -t: progress lines end with CR */
  progressCr: boolean;
  /** -T: the toolstack's log lines carry a date and the pid */
  timestamps: boolean;
}

export interface XlContext extends Io {
  /** the daemon's API socket (--socket, XENODE_SOCKET, or the default) */
  socketPath: string;
  global: GlobalOptions;
  /** connects on first use */
  client(): Promise<DaemonClient>;
  env: NodeJS.ProcessEnv;
}

type Options = NonNullable<ParseArgsConfig['options']>;
export type Values = Record<string, string | boolean | string[] | undefined>;

export interface XlCommand {
  name: string;
  /** one line, as in `xl help` */
  desc: string;
  /** xl's cmd_spec can_dryrun: the command honours -N */
  canDryrun?: boolean;
  /** xl's cmd_spec modifies: -f means something to it */
  modifies?: boolean;
  usage: string;
  /** the "Options:" section of `xl <cmd> -h` */
  help?: string;
  options?: Options;
  /** fewest positionals accepted */
  minArgs?: number;
  /** arguments go to run() untouched (passthroughs parse their own) */
  rawArgs?: boolean;
  run(ctx: XlContext, values: Values, args: string[]): Promise<number>;
}

/** `xl <cmd> -h`: "Usage: xl [-vtT<f><N>] <cmd> <usage>\n\n<desc>.\n\n[Options:\n\n<help>\n]", as xl's help(). */
export function commandHelp(c: XlCommand): string {
  let s = `Usage: xl [-vtT${c.modifies ? 'f' : ''}${c.canDryrun ? 'N' : ''}] ${c.name} ${c.usage}\n\n${c.desc}.\n\n`;
  if (c.help) s += `Options:\n\n${c.help}\n`;
  return s;
}

export type Parsed =
  | { ok: true; values: Values; args: string[] }
  | { ok: false; code: number; stdout: string; stderr: string };

/** Parses one command's arguments with xl's rules (see the file comment). */
export function parseCommandArgs(c: XlCommand, argv: string[]): Parsed {
  if (c.rawArgs) return { ok: true, values: {}, args: argv };
  let r;
  try {
    r = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: { ...c.options, help: { type: 'boolean', short: 'h' } },
    });
  } catch (e) {
    const msg = (e as Error).message;
    // node: "Unknown option '-x'" / "Option '-f, --defconfig <value>' argument missing"
    const m = /option '(--?[^',\s]+)/i.exec(msg);
    const opt = m ? m[1]!.replace(/^-(?!-)/, '') : '?';
    return { ok: false, code: 2, stdout: '', stderr: `option \`${opt}' not supported.\n` };
  }
  if (r.values['help']) return { ok: false, code: 0, stdout: commandHelp(c), stderr: '' };
  const min = c.minArgs ?? 0;
  if (r.positionals.length < min) {
    return {
      ok: false, code: 2, stdout: commandHelp(c),
      stderr: `'xl ${c.name}' requires at least ${min} argument${min > 1 ? 's' : ''}.\n\n`,
    };
  }
  const values = { ...r.values } as Values;
  delete values['help'];
  return { ok: true, values, args: r.positionals };
}
