// Test support: a command run on a pseudo-terminal, as a person at a terminal
// runs it (util-linux `script` makes the pty: `xl console` needs a real tty for
// raw mode). What the command prints is kept; waits on it are bounded.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { DEFAULT_WAIT_MS } from './wait.js';

/** Whether util-linux's `script` is there to make a pty. */
export function havePtyTool(): boolean {
  return !spawnSync('script', ['--version']).error;
}

export class PtySession {
  private out = '';
  /** where the last wait's match ended: the next wait looks after it */
  private mark = 0;
  readonly exited: Promise<number | null>;
  private readonly p: ChildProcess;

  /** Runs `argv` (quoted for sh) on a new pty; `env` as for spawn. */
  constructor(argv: string[], env: NodeJS.ProcessEnv) {
    const cmd = argv.map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
    this.p = spawn('script', ['-qfec', cmd, '/dev/null'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.p.stdout!.on('data', (b: Buffer) => { this.out += b.toString('latin1'); });
    this.p.stderr!.on('data', (b: Buffer) => { this.out += b.toString('latin1'); });
    this.exited = new Promise((r) => this.p.on('close', (code) => r(code)));
  }

  /** Everything printed so far. */
  get output(): string {
    return this.out;
  }

  /** Keystrokes, as typed (a command ends with "\r", as Enter sends it). */
  type(s: string | Buffer): void {
    this.p.stdin!.write(s);
  }

  /**
   * Resolves with the match once `re` matches what was printed after the
   * previous wait's match; rejects naming `what` (and showing the tail of the
   * output) after `ms`, or if the command exits first.
   */
  async waitFor(what: string, re: RegExp, ms = DEFAULT_WAIT_MS): Promise<RegExpMatchArray> {
    const deadline = Date.now() + ms;
    let ended = false;
    void this.exited.then(() => { ended = true; });
    for (;;) {
      const m = re.exec(this.out.slice(this.mark));
      if (m) {
        this.mark += (m.index ?? 0) + m[0].length;
        return m;
      }
      if (ended || Date.now() > deadline) {
        throw new Error(`${what} ${ended ? 'never came before the command exited' : `did not happen within ${ms} ms`}; the output ended with:\n${this.out.slice(-3000)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  kill(): void {
    if (this.p.exitCode === null && this.p.signalCode === null) this.p.kill('SIGKILL');
  }
}
