// SMP guests: the `smp` sample brings up its secondary vCPUs with
// VCPUOP_initialise (64- and 32-bit vcpu_hvm_context) and VCPUOP_up, exchanges
// IPIs with them over event channels, sees them go down (VCPUOP_down on
// themselves, HLT with IF=0) and checks the error cases (guests/README.md).

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

test('the smp guest brings up 3 secondary vCPUs (64- and 32-bit), exchanges IPIs, takes them down and powers off', needsKvm(), async () => {
  const r = await run([guest('smp'), '--vcpus', '4']);
  const fails = r.stdout.split('\n').filter((l) => l.startsWith('FAIL'));
  assert.deepEqual(fails, []);
  const m = /RESULT: (\d+) passed, (\d+) failed/.exec(r.stdout);
  assert.ok(m, `the guest printed its RESULT line:\n${r.stdout}\n${r.stderr}`);
  assert.equal(m[2], '0');
  assert.ok(Number(m[1]) >= 60, `ran ${m[1]} checks`);
  assert.match(r.stdout, /INFO 4 vCPUs/);
  for (const id of [1, 2]) assert.match(r.stdout, new RegExp(`smp: vCPU ${id} up \\(CPUID vcpu_id ${id}\\)`));
  for (const check of ['ipis-from-aps', 'ap-resumes-after-down', 'ap32-marker', 'ap32-hlt-if0-goes-down']) assert.match(r.stdout, new RegExp(`PASS ${check}\\b`));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /shut down: poweroff/);
});

test('the smp guest with one vCPU says so and fails instead of hanging', needsKvm(), async () => {
  const r = await run([guest('smp')]);
  assert.match(r.stdout, /FAIL at-least-2-vcpus/);
  assert.equal(r.code, 12);
});
