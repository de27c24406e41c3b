// `xl create`: read the xl.cfg client-side (cfg.ts, with the command line's
// key=value overrides appended), hand the typed config to the daemon, and
// optionally attach the console (-c) or stay until the domain dies (-F).
// Messages and exit statuses follow xl's main_create/create_domain.

import { readFileSync } from 'node:fs';
import type { DomainChange } from '../../daemon/protocol.js';
import type { StreamHandle } from '../../daemon/client.js';
import { XlCfgError, parseXlCfg, toDomainConfig, type XlCfg } from '../cfg.js';
import type { DomainConfig, ShutdownAction } from '../config.js';
import type { XlCommand, XlContext } from '../command.js';
import { commandHelp } from '../command.js';
import { attachConsole, DEFAULT_ESCAPE } from './console.js';
import { ERROR_FAIL, ERROR_INVAL, findDomain, reportDaemonError } from './common.js';

/** Splits create's positionals as xl does: `k=v` are config lines, the one other word is the file. */
export function splitCreateArgs(args: string[], defconfig: string | undefined): { file: string | undefined; extra: string[] } | null {
  let file = defconfig;
  const extra: string[] = [];
  for (const a of args) {
    if (a.includes('=')) extra.push(a);
    else if (file === undefined) file = a;
    else return null;
  }
  return { file, extra };
}

/** SHUTDOWN_* codes (public/sched.h) and the config action each one runs. */
function actionFor(c: DomainConfig, reason: number): ShutdownAction | 'suspend' | 'unknown' {
  switch (reason) {
    case 0: return c.onPoweroff;
    case 1: return c.onReboot;
    case 2: return 'suspend';
    case 3: return c.onCrash;
    case 4: return c.onWatchdog;
    case 5: return c.onSoftReset;
    default: return 'unknown';
  }
}

/**
 * create -F: follows one domain as xl's monitor does, printing its lines
 * (create_domain and handle_domain_death in xl_vmcontrol.c), across restarts
 * (which give it a new domid), until it is gone or left in place.
 */
function followUntilGone(ctx: XlContext, first: { domid: number }, config: DomainConfig, events: DomainChange[], wakeup: { fn: (() => void) | null }): Promise<void> {
  let domid = first.domid;
  let name = config.name;
  const waitingLine = (): void => ctx.err(`Waiting for domain ${name} (domid ${domid}) to die [pid ${process.pid}]\n`);
  waitingLine();
  // set once the domain has shut down with an action that re-creates it
  let restarting = false;
  return new Promise<void>((resolve) => {
    const exit = (): void => { ctx.err('Done. Exiting now\n'); wakeup.fn = null; resolve(); };
    const drain = (): void => {
      while (events.length) {
        const ev = events.shift()!;
        if (ev.domid !== domid) continue;
        if (ev.what === 'shutdown' && !restarting) {
          const reason = ev.reason ?? -1;
          ctx.err(`Domain ${domid} has shut down, reason code ${reason} 0x${(reason >>> 0).toString(16)}\n`);
          let action = actionFor(config, reason);
          if (action === 'suspend') {
            ctx.err('Domain has suspended.\n');
            exit();
            return;
          }
          if (action === 'unknown') {
            ctx.err(`Unknown shutdown reason code ${reason}. Destroying domain.\n`);
            action = 'destroy';
          }
          ctx.err(`Action for shutdown reason code ${reason} is ${action}\n`);
          if (action === 'preserve') { exit(); return; }
          if (action !== 'rename-restart') ctx.err(`Domain ${domid} needs to be cleaned up: destroying the domain\n`);
          if (action === 'destroy' || action === 'coredump-destroy') { exit(); return; }
          restarting = true;
        } else if (ev.what === 'renamed' && restarting) {
          ctx.err(`Preserving domain ${domid} ${name} with suffix${ev.name.slice(name.length)}\n`);
        } else if (ev.what === 'restarted' && ev.newDomid !== undefined) {
          ctx.err('Done. Rebooting now\n');
          domid = ev.newDomid;
          name = ev.name;
          restarting = false;
          waitingLine();
        } else if (ev.what === 'destroyed' && !restarting) {
          ctx.err(`Domain ${domid} has been destroyed.\n`);
          wakeup.fn = null;
          resolve();
          return;
        }
      }
    };
    wakeup.fn = drain;
    drain();
  });
}

/**
 * Reads and checks an xl.cfg with its command-line lines (xl's
 * parse_config_data); on failure prints xl's lines and gives the exit status.
 * `beforeParse` runs once the file is read (create's "Parsing config from").
 */
export function readConfig(ctx: XlContext, file: string, extra: string[], beforeParse: () => void = () => {}): DomainConfig | number {
  let text: Uint8Array;
  try {
    // /dev/null stands for "everything is on the command line", as in xl
    text = file === '/dev/null' ? new Uint8Array(0) : readFileSync(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    ctx.err(`Failed to read config file: ${file}: ${err.code === 'ENOENT' ? 'No such file or directory' : err.message}\n`);
    return -ERROR_FAIL;
  }
  beforeParse();
  let parsed: XlCfg;
  try {
    parsed = parseXlCfg(text, file, extra);
  } catch (e) {
    if (e instanceof XlCfgError) {
      // libxlu reports where, then xl says why it gives up (xlu_cfg_readdata's EINVAL)
      ctx.err(`${e.message}\nFailed to parse config: Invalid argument\n`);
      return 1;
    }
    throw e;
  }
  try {
    return toDomainConfig(parsed, { file, warn: (w) => ctx.err(`${w}\n`) });
  } catch (e) {
    if (e instanceof XlCfgError) {
      ctx.err(`${e.message}\n`);
      return 1;
    }
    throw e;
  }
}

export const create: XlCommand = {
  name: 'create',
  canDryrun: true,
  modifies: true,
  desc: 'Create a domain from config file <filename>',
  usage: '<ConfigFile> [options] [vars]',
  help: [
    '-h                      Print this help.',
    '-p                      Leave the domain paused after it is created.',
    '-c                      Connect to the console after the domain is created.',
    '-f FILE, --defconfig=FILE',
    '                     Use the given configuration file.',
    '-q, --quiet             Quiet.',
    '-n, --dryrun            Dry run - prints the resulting configuration',
    '                         (deprecated in favour of global -N option).',
    '-d                      Enable debug messages (print the configuration to stderr).',
    '-F                      Run in foreground until death of the domain.',
    '-e                      Do not wait in the background for the death of the domain',
    '                        (accepted: the daemon, not xl, watches domains on xenode).',
  ].join('\n'),
  options: {
    paused: { type: 'boolean', short: 'p' },
    console: { type: 'boolean', short: 'c' },
    defconfig: { type: 'string', short: 'f' },
    quiet: { type: 'boolean', short: 'q' },
    dryrun: { type: 'boolean', short: 'n' },
    debug: { type: 'boolean', short: 'd' },
    foreground: { type: 'boolean', short: 'F' },
    'no-wait': { type: 'boolean', short: 'e' },
  },
  async run(ctx, v, args) {
    const split = splitCreateArgs(args, v['defconfig'] as string | undefined);
    if (!split) {
      ctx.out(commandHelp(create));
      return 2;
    }
    const { file, extra } = split;
    if (file === undefined) {
      ctx.err('Config file not specified and none in save file\n');
      return -ERROR_INVAL;
    }
    const config = readConfig(ctx, file, extra, () => { if (!v['quiet']) ctx.err(`Parsing config from ${file}\n`); });
    if (typeof config === 'number') return config;
    if (v['dryrun'] || ctx.global.dryRun) {
      // printf_info: the configuration in xl's {"domid": null, "config": ...} envelope
      ctx.out(`${JSON.stringify({ domid: null, config }, null, 4)}\n`);
      return 0;
    }
    if (v['debug']) ctx.err(`${JSON.stringify(config, null, 4)}\n`);

    const c = await ctx.client();
    const paused = v['paused'] === true;
    const withConsole = v['console'] === true;
    // -F: subscribe first so a guest that dies at once is not missed
    const events: DomainChange[] = [];
    const wakeup: { fn: (() => void) | null } = { fn: null };
    let sub: StreamHandle | undefined;
    if (v['foreground']) sub = await c.subscribe((ch) => { events.push(ch); wakeup.fn?.(); });

    let created: { domid: number; name: string };
    try {
      // with -c the domain starts paused and is unpaused once the console
      // is attached, so not one byte of its output is missed (xl waits for
      // xenconsole the same way)
      created = await c.call('domain.create', { config, paused: paused || withConsole });
    } catch (e) {
      reportDaemonError(ctx, e);
      await sub?.close();
      return -ERROR_FAIL;
    }
    try {
      if (withConsole) {
        return await attachConsole(c, created.domid, {
          escape: DEFAULT_ESCAPE,
          replay: false,
          onAttached: async () => { if (!paused) await c.call('domain.unpause', { dom: created.domid }); },
        });
      }
      if (sub) await followUntilGone(ctx, created, config, events, wakeup);
      return 0;
    } finally {
      await sub?.close().catch(() => {});
    }
  },
};

/**
 * xl config-update: the configuration a running domain is rebuilt from when
 * it next restarts (xl_misc.c main_config_update); the domain itself is not
 * changed. The file may come first, with -f, or among the key=value lines.
 */
export const configUpdate: XlCommand = {
  name: 'config-update',
  canDryrun: true,
  modifies: true,
  desc: "Update a running domain's saved configuration, used when rebuilding the domain after reboot.\n" +
    'WARNING: xl now has better capability to manage domain configuration, avoid using this command when possible',
  usage: '<Domain> <ConfigFile> [options] [vars]',
  help: [
    '-h                      Print this help.',
    '-f FILE, --defconfig=FILE',
    '                     Use the given configuration file.',
    '-d                      Enable debug messages.',
  ].join('\n'),
  options: {
    defconfig: { type: 'string', short: 'f' },
    debug: { type: 'boolean', short: 'd' },
    quiet: { type: 'boolean', short: 'q' },
  },
  minArgs: 1,
  async run(ctx, v, args) {
    ctx.err('WARNING: xl now has better capability to manage domain configuration, avoid using this command when possible\n');
    const domid = await findDomain(ctx, args[0]!);
    const split = splitCreateArgs(args.slice(1), v['defconfig'] as string | undefined);
    if (!split) {
      ctx.out(commandHelp(create));
      return 2;
    }
    if (split.file === undefined) {
      ctx.err('Config file not specified\n');
      return 1;
    }
    const config = readConfig(ctx, split.file, split.extra);
    if (typeof config === 'number') return config;
    if (v['debug'] || ctx.global.dryRun) ctx.out(`${JSON.stringify({ domid: null, config }, null, 4)}\n`);
    if (ctx.global.dryRun) return 0;
    ctx.err(`setting dom${domid} configuration\n`);
    try {
      await (await ctx.client()).call('domain.configUpdate', { dom: domid, config });
    } catch (e) {
      reportDaemonError(ctx, e);
      ctx.err('failed to update configuration\n');
      return 1;
    }
    return 0;
  },
};
