// Guest time, timers and the domain watchdog, checked from inside real guests
// booted with `xenode run`: the self-checking `timer` guest (one-shot and
// periodic timers, SCHEDOP_poll/block, pvclock, wallclock, runstate) and the
// `watchdog` guest, whose domain must end with SHUTDOWN_watchdog once it stops
// petting its watchdog (guests/README.md lists every check).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needsKvm } from '../kvm/testing.js';
import { guest, verdict, xenodeRun as run } from '../testing/xenode.js';

test('the timer guest passes every check of timers, poll, block, pvclock, wallclock and runstate', needsKvm(), async () => {
  const now = Math.floor(Date.now() / 1000);
  const r = await run([guest('timer'), '--cmdline', `now=${now}`]);
  const v = verdict(r);
  assert.deepEqual(v.fails, []);
  assert.ok(v.passed >= 100, `ran ${v.passed} checks`);
  assert.equal(v.failed, 0);
  assert.match(r.stdout, /PASS wc-matches-host/, 'the wallclock was compared with the host time given on the command line');
  for (const c of ['periodic-first-tick-at-once', 'periodic-span-not-short', 'periodic-stopped-silent']) assert.match(r.stdout, new RegExp(`^PASS ${c}$`, 'm'));
  assert.equal(r.code, 0, 'the guest powers off when all checks pass');
});

test('the watchdog guest: create/re-arm/delete as Xen, then expiry ends the domain with SHUTDOWN_watchdog (exit 13)', needsKvm(), async () => {
  const r = await run([guest('watchdog')]);
  const v = verdict(r);
  assert.deepEqual(v.fails, []);
  assert.equal(v.failed, 0);
  assert.ok(v.passed >= 20, `ran ${v.passed} checks`);
  assert.match(r.stdout, /watchdog: stopped petting/);
  assert.equal(r.code, 13, `exit status ${r.code}\n${r.stderr}`);
  assert.match(r.stderr, /shut down: watchdog/);
});
