#!/usr/bin/env node
// The `xenode` command: a thin dispatcher. Each subcommand lives in its own
// module and is imported lazily so `xenode run` pays only for what it uses.

type Main = (argv: string[]) => Promise<number>;

const COMMANDS: Record<string, { summary: string; load: () => Promise<Main> }> = {
  daemon: { summary: 'run the host daemon (domains, xenstored, consoles, the API socket)', load: async () => (await import('./daemon/main.js')).main },
  'driver-domain': { summary: 'serve device backends as a driver domain (started by the toolstack)', load: async () => (await import('./driver_domain/main.js')).main },
  demo: { summary: 'boot the sample guests together (the built-in demo system)', load: async () => (await import('./demo.js')).main },
  run: { summary: 'boot one domain in the foreground and stream its console', load: async () => (await import('./run.js')).main },
  arinc653: { summary: "read or set a cpupool's ARINC 653 schedule (through the daemon)", load: async () => (await import('./arinc653.js')).main },
  'sched-trace': { summary: 'run or simulate guests under a scheduler and draw the schedule (SVG)', load: async () => (await import('./sched_trace/main.js')).main },
  xl: { summary: 'the xl toolstack CLI, talking to `xenode daemon` (docs/xl.md)', load: async () => (await import('./xl/cli.js')).main },
  xenstored: { summary: 'run the xenstore daemon standalone', load: async () => (await import('./xenstored/main.js')).main },
};

function usage(): string {
  const lines = ['usage: xenode <command> [args...]', '', 'commands:'];
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(12)} ${c.summary}`);
  return lines.join('\n');
}

async function dispatch(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '-h' || cmd === '--help' || cmd === 'help') {
    console.log(usage());
    return cmd === undefined ? 2 : 0;
  }
  const c = COMMANDS[cmd];
  if (!c) {
    console.error(`xenode: unknown command '${cmd}'\n${usage()}`);
    return 2;
  }
  return (await c.load())(rest);
}

dispatch(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    console.error(`xenode: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
