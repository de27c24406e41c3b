// xenstore-read/-write/-ls/-list/-rm/-exists/-watch/-chmod: Xen's own
// xenstore clients (Debian's xenstore-utils) run against the daemon's
// xenstored, found with the `xenstore.socket` request and handed over in
// XENSTORED_PATH. Running Xen's clients rather than a second implementation
// keeps every option and output byte theirs (xenstore-ls's escaping and
// line truncation, -p permissions, watch output), and is the same path our
// xenstored conformance tests already check.

import { spawn } from 'node:child_process';
import type { XlCommand } from '../command.js';

export const XENSTORE_TOOLS = ['read', 'write', 'ls', 'list', 'rm', 'exists', 'watch', 'chmod'] as const;

function passthrough(tool: (typeof XENSTORE_TOOLS)[number]): XlCommand {
  const bin = `xenstore-${tool}`;
  return {
    name: bin,
    desc: `Run ${bin} against the daemon's xenstored`,
    usage: `[${bin} arguments...]   (see ${bin} -h)`,
    rawArgs: true,
    async run(ctx, _v, args) {
      const { path } = await (await ctx.client()).call('xenstore.socket', {});
      return new Promise<number>((resolve) => {
        const child = spawn(bin, args, { stdio: 'inherit', env: { ...ctx.env, XENSTORED_PATH: path } });
        child.on('error', (e: NodeJS.ErrnoException) => {
          if (e.code === 'ENOENT') {
            ctx.err(`xl: ${bin} not found: install Xen's xenstore clients (Debian: apt install xenstore-utils).\n` +
              `xl: any xenstore client works with XENSTORED_PATH=${path}\n`);
            resolve(127);
          } else {
            ctx.err(`xl: cannot run ${bin}: ${e.message}\n`);
            resolve(1);
          }
        });
        child.on('exit', (code, sig) => resolve(code ?? (sig ? 128 + 15 : 1)));
      });
    },
  };
}

export const xenstoreCommands: XlCommand[] = XENSTORE_TOOLS.map(passthrough);
