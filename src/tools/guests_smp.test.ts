// SMP guests: the `smp` sample brings up its secondary vCPUs with
// VCPUOP_initialise (64- and 32-bit vcpu_hvm_context) and VCPUOP_up, exchanges
// IPIs with them over event channels, sees them go down (VCPUOP_down on
// themselves, HLT with IF=0) and checks the error cases (guests/README.md).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needsKvm } from '../kvm/testing.js';
import { guest, verdict, xenodeRun as run } from '../testing/xenode.js';

test('the smp guest brings up 3 secondary vCPUs (64- and 32-bit), exchanges IPIs, takes them down and powers off', needsKvm(), async () => {
  const r = await run([guest('smp'), '--vcpus', '4']);
  const v = verdict(r);
  assert.deepEqual(v.fails, []);
  assert.equal(v.failed, 0);
  assert.ok(v.passed >= 60, `ran ${v.passed} checks`);
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
