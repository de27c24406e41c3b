// Test support: a real `xenode daemon` child process on a temporary state
// directory (XENODE_STATE_DIR, so the socket is <state>/xenode.sock).

import { after } from 'node:test';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DaemonClient } from './client.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** dist/src/tools/xenode.js */
export const XENODE_JS = path.resolve(here, '..', 'xenode.js');
/** The repository root (dist/src/tools/daemon -> ../../../..). */
export const REPO_ROOT = path.resolve(here, '..', '..', '..', '..');
export const guest = (name: string): string => path.join(REPO_ROOT, 'guests', 'build', `${name}.elf`);

/**
 * Daemons still running when a test file's tests are over (a test failed
 * before stopping its daemon) are killed: their pipes would otherwise keep the
 * test process, and the whole run, waiting forever.
 */
const live = new Set<ChildProcess>();
after(() => {
  for (const p of live) p.kill('SIGKILL');
});

export function tmpStateDir(): string {
  // short: a Unix socket path must fit in 108 bytes
  return fs.mkdtempSync(path.join(os.tmpdir(), 'xd-'));
}

export interface TestDaemon {
  proc: ChildProcess;
  stateDir: string;
  socket: string;
  /** everything the daemon wrote to stdout/stderr */
  output(): string;
  /** resolves with the exit code */
  exited: Promise<number | null>;
  /** SIGTERM and wait */
  stop(): Promise<number | null>;
}

/** Spawns `xenode daemon` (without waiting for it). */
export function spawnDaemon(stateDir: string, args: string[] = []): TestDaemon {
  const proc = spawn(process.execPath, [XENODE_JS, 'daemon', ...args], {
    env: { ...process.env, XENODE_STATE_DIR: stateDir, XENODE_SOCKET: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(proc);
  proc.once('exit', () => live.delete(proc));
  let out = '';
  proc.stdout!.on('data', (b: Buffer) => { out += b.toString(); });
  proc.stderr!.on('data', (b: Buffer) => { out += b.toString(); });
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  return {
    proc, stateDir, socket: path.join(stateDir, 'xenode.sock'), output: () => out, exited,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      return exited;
    },
  };
}

/** Spawns a daemon and waits until it answers hello. */
export async function startDaemon(stateDir = tmpStateDir(), args: string[] = ['--restart-delay', '0']): Promise<TestDaemon> {
  const d = spawnDaemon(stateDir, args);
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (d.proc.exitCode !== null) throw new Error(`daemon exited ${d.proc.exitCode}: ${d.output()}`);
    try {
      const c = await DaemonClient.connect(d.socket);
      c.close();
      return d;
    } catch {
      if (Date.now() > deadline) {
        d.proc.kill('SIGKILL');
        throw new Error(`daemon did not come up: ${d.output()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

export { until } from '../../testing/wait.js';
