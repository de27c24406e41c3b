// INIT/STARTUP through the local APIC, as Linux brings up its secondary CPUs
// on PVH: the `sipi` sample starts vCPU 1 in a real-mode trampoline with two
// STARTUP IPIs and checks where and how often it ran, then brings it back
// after it halted itself down and after it was taken down running, with INIT
// and STARTUP again, as Linux brings back a CPU it offlined (guests/samples/sipi.c).
// On the software CPU, which runs real mode; a host KVM may or may not.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needsTcg } from '../testing/accel.js';
import { guest, verdict, xenodeRun as run } from '../testing/xenode.js';

test('the sipi guest starts vCPU 1 with INIT, STARTUP, STARTUP into real mode at vector << 12, once', needsTcg(), async () => {
  const r = await run([guest('sipi'), '--vcpus', '2', '--accel', 'tcg']);
  const v = verdict(r);
  assert.deepEqual(v.fails, []);
  assert.equal(v.passed, 19);
  for (const check of ['init-starts-nothing', 'trampoline-ran', 'cs-is-vector-shl-8', 'real-mode-cr0-pe-clear', 'one-run-for-two-startups', 'hlt-if0-goes-down',
    'init-startup-restarts-halted', 'restart-in-real-mode', 'init-takes-running-down', 'startup-after-init-of-running', 'restarted-halts-down']) {
    assert.match(r.stdout, new RegExp(`PASS ${check}\\b`));
  }
  assert.equal(r.code, 0, r.stderr);
});

test('the sipi guest with one vCPU says so and fails instead of hanging', needsTcg(), async () => {
  const r = await run([guest('sipi'), '--accel', 'tcg']);
  assert.match(r.stdout, /FAIL at-least-2-vcpus/);
  assert.equal(r.code, 12);
});
