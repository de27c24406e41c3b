// Test support: run the built `xenode` CLI as a child process, find the sample
// guests, and read a self-checking guest's PASS/FAIL/RESULT lines.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const xenodeJs = path.join(root, 'dist/src/tools/xenode.js');

/** Path of a sample guest built by `make -C guests`. */
export const guest = (name: string): string => path.join(root, 'guests/build', `${name}.elf`);

export interface Result { code: number | null; stdout: string; stderr: string }

export interface RunOpts {
  timeoutMs?: number;
  /** the child's working directory (default: this process's) */
  cwd?: string;
  /** Called with everything printed so far, on each chunk of stdout. */
  onStdout?: (stdout: string, child: ChildProcess) => void;
}

/** Runs `xenode <argv>`; rejects (after killing it) when it outlives the timeout. */
export function xenodeCmd(argv: string[], opts: RunOpts = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [xenodeJs, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], cwd: opts.cwd });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`xenode ${argv.join(' ')} timed out\n${stdout}\n${stderr}`)); }, opts.timeoutMs ?? 60_000);
    child.stdout.on('data', (b: Buffer) => { stdout += b.toString(); opts.onStdout?.(stdout, child); });
    child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

/** Runs `xenode run <args>`. */
export function xenodeRun(args: string[], opts: RunOpts = {}): Promise<Result> {
  return xenodeCmd(['run', ...args], opts);
}

/** A self-checking guest's FAIL lines and RESULT counts (asserts that it printed its RESULT line). */
export function verdict(r: Result): { fails: string[]; passed: number; failed: number } {
  const m = /RESULT: (\d+) passed, (\d+) failed/.exec(r.stdout);
  assert.ok(m, `the guest printed its RESULT line:\n${r.stdout}\n${r.stderr}`);
  return { fails: r.stdout.split('\n').filter((l) => l.startsWith('FAIL')), passed: Number(m[1]), failed: Number(m[2]) };
}

/** The pid of the driver domain process called `name` (`xenode driver-domain ... --name <name>`, whoever started it), or undefined. */
export function driverDomainPid(name: string): number | undefined {
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = readFileSync(`/proc/${e}/cmdline`, 'latin1').split('\0');
      if (argv.includes('driver-domain') && argv[argv.indexOf('--name') + 1] === name) return Number(e);
    } catch { /* gone meanwhile */ }
  }
  return undefined;
}
