// `xl console`: attach the terminal to a domain's PV console, as xenconsole
// does: raw mode, guest output to stdout, keystrokes to the guest, the
// escape character (Ctrl-] = 0x1d unless -e says otherwise) detaches. The
// terminal is restored however the attachment ends (detach, the domain
// going away, a signal, an error).

import type { DaemonClient } from '../../daemon/client.js';
import type { XlCommand } from '../command.js';
import { findDomain, reportDaemonError } from './common.js';

export const DEFAULT_ESCAPE = 0x1d; // ^]

/** "-e" values: "^X" (control character), a single character, or "0xNN". */
export function parseEscape(s: string): number | null {
  if (/^\^.$/.test(s)) return s.charCodeAt(1) & 0x1f;
  if (/^0x[0-9a-f]{1,2}$/i.test(s)) return Number(s);
  if (s.length === 1 && s.charCodeAt(0) < 0x80) return s.charCodeAt(0);
  return null;
}

export interface AttachOptions {
  escape: number;
  /** replay the console log kept by the daemon before live output */
  replay: boolean;
  /** called once the stream is open (create -c unpauses the domain here) */
  onAttached?: () => Promise<void>;
}

/** Attaches stdin/stdout to the console of `domid`; resolves with the exit status. */
export async function attachConsole(c: DaemonClient, domid: number, opts: AttachOptions): Promise<number> {
  const stdin = process.stdin;
  const raw = stdin.isTTY === true;
  let restored = false;
  const restore = (): void => {
    if (restored) return;
    restored = true;
    if (raw) stdin.setRawMode(false);
    stdin.pause();
  };
  let finish!: (code: number) => void;
  const done = new Promise<number>((r) => { finish = r; });
  const onSignal = (sig: NodeJS.Signals): void => { finish(sig === 'SIGINT' ? 130 : sig === 'SIGHUP' ? 129 : 143); };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of signals) process.on(s, onSignal);
  // whatever else goes wrong, the terminal must not stay raw
  process.once('exit', restore);

  let handle;
  try {
    handle = await c.attachConsole(domid, (data) => { process.stdout.write(data); }, { replay: opts.replay });
  } catch (e) {
    for (const s of signals) process.off(s, onSignal);
    restore();
    throw e;
  }
  // keystrokes are written in order, one request at a time
  let writing: Promise<unknown> = Promise.resolve();
  const send = (b: Buffer): void => {
    if (b.length === 0) return;
    writing = writing.then(() => c.call('console.write', { dom: domid, data: b.toString('base64') })).catch(() => {});
  };
  const onData = (b: Buffer): void => {
    const i = b.indexOf(opts.escape);
    if (i < 0) { send(b); return; }
    send(b.subarray(0, i));
    finish(0);
  };
  if (raw) stdin.setRawMode(true);
  stdin.on('data', onData);
  stdin.resume();
  void handle.ended.then(() => finish(0));
  try {
    if (opts.onAttached) await opts.onAttached();
    const code = await done;
    return code;
  } finally {
    stdin.off('data', onData);
    for (const s of signals) process.off(s, onSignal);
    restore();
    process.off('exit', restore);
    await writing;
    await handle.close().catch(() => {});
  }
}

export const console_: XlCommand = {
  name: 'console',
  desc: "Attach to domain's console",
  usage: '[options] <Domain>\n-t <type>       console type, pv , serial or vuart (xenode has pv)\n-n <number>     console number (0)\n-e <escape>     detach character: ^X, a character or 0xNN (default ^])',
  options: {
    type: { type: 'string', short: 't' },
    num: { type: 'string', short: 'n' },
    escape: { type: 'string', short: 'e' },
  },
  minArgs: 1,
  async run(ctx, v, args) {
    const type = v['type'];
    if (type !== undefined && !['pv', 'serial', 'vuart'].includes(String(type))) {
      ctx.err('console type supported are: pv, serial, vuart\n');
      return 1;
    }
    if (type === 'serial' || type === 'vuart') {
      // xl names them; a PVH domain here has neither an emulated UART nor an Arm vuart
      ctx.err(`xl: domains on xenode have no ${type} console, only the PV one (-t pv)\nUnable to attach console\n`);
      return 1;
    }
    if (v['num'] !== undefined && Number.parseInt(String(v['num']), 10) !== 0) {
      ctx.err(`xl: domains on xenode have one console (number 0), not '${String(v['num'])}'\nUnable to attach console\n`);
      return 1;
    }
    let escape = DEFAULT_ESCAPE;
    if (v['escape'] !== undefined) {
      const e = parseEscape(String(v['escape']));
      if (e === null) {
        ctx.err(`xl: bad escape character '${String(v['escape'])}' (want ^X, one character, or 0xNN)\n`);
        return 2;
      }
      escape = e;
    }
    const domid = await findDomain(ctx, args[0]!);
    try {
      return await attachConsole(await ctx.client(), domid, { escape, replay: true });
    } catch (e) {
      reportDaemonError(ctx, e);
      ctx.err('Unable to attach console\n');
      return 1;
    }
  },
};
