// Guest time, timers and the domain watchdog, checked from inside real guests
// booted with `xenode run`: the self-checking `timer` guest (one-shot and
// periodic timers, SCHEDOP_poll/block, pvclock, wallclock, runstate) and the
// `watchdog` guest, whose domain must end with SHUTDOWN_watchdog once it stops
// petting its watchdog (guests/README.md lists every check).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { needsKvm } from '../kvm/testing.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const xenode = path.join(root, 'dist/src/tools/xenode.js');
const guest = (name: string) => path.join(root, 'guests/build', `${name}.elf`);

interface Result { code: number | null; stdout: string; stderr: string }

function run(args: string[], timeoutMs = 60_000): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [xenode, 'run', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`xenode run ${args.join(' ')} timed out\n${stdout}\n${stderr}`)); }, timeoutMs);
    child.stdout.on('data', (b: Buffer) => { stdout += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

/** The guest's FAIL lines and its RESULT counts. */
function verdict(stdout: string): { fails: string[]; passed: number; failed: number } {
  const fails = stdout.split('\n').filter((l) => l.startsWith('FAIL'));
  const m = /RESULT: (\d+) passed, (\d+) failed/.exec(stdout);
  assert.ok(m, `the guest printed its RESULT line:\n${stdout}`);
  return { fails, passed: Number(m[1]), failed: Number(m[2]) };
}

test('the timer guest passes every check of timers, poll, block, pvclock, wallclock and runstate', needsKvm(), async () => {
  const now = Math.floor(Date.now() / 1000);
  const r = await run([guest('timer'), '--cmdline', `now=${now}`]);
  const v = verdict(r.stdout);
  assert.deepEqual(v.fails, []);
  assert.ok(v.passed >= 100, `ran ${v.passed} checks`);
  assert.equal(v.failed, 0);
  assert.match(r.stdout, /PASS wc-matches-host/, 'the wallclock was compared with the host time given on the command line');
  assert.equal(r.code, 0, 'the guest powers off when all checks pass');
});

test('the watchdog guest: create/re-arm/delete as Xen, then expiry ends the domain with SHUTDOWN_watchdog (exit 13)', needsKvm(), async () => {
  const r = await run([guest('watchdog')]);
  const v = verdict(r.stdout);
  assert.deepEqual(v.fails, []);
  assert.equal(v.failed, 0);
  assert.ok(v.passed >= 20, `ran ${v.passed} checks`);
  assert.match(r.stdout, /watchdog: stopped petting/);
  assert.equal(r.code, 13, `exit status ${r.code}\n${r.stderr}`);
  assert.match(r.stderr, /shut down: watchdog/);
});
