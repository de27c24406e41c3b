// The local APIC model as a guest uses it: the `lapic` sample checks the xAPIC
// page, self-IPIs, TPR, EOI, the LVT timer in its three modes, x2APIC and the
// event-channel upcall delivered through HVMOP_set_evtchn_upcall_vector's
// vector (guests/samples/lapic.c).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { needsKvm } from '../kvm/testing.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const xenode = path.join(root, 'dist/src/tools/xenode.js');

test('the lapic guest passes every local APIC check and powers off', needsKvm(), () => {
  const r = spawnSync(process.execPath, [xenode, 'run', path.join(root, 'guests/build/lapic.elf')], { encoding: 'utf8', timeout: 60_000 });
  const fails = r.stdout.split('\n').filter((l) => l.startsWith('FAIL'));
  assert.deepEqual(fails, []);
  const m = /RESULT: (\d+) passed, (\d+) failed/.exec(r.stdout);
  assert.ok(m, `the guest printed its RESULT line:\n${r.stdout}\n${r.stderr}`);
  assert.ok(Number(m[1]) >= 46, `ran ${m[1]} checks`);
  for (const c of ['self-ipi-delivered', 'tpr-holds-class-4', 'oneshot-not-early', 'tsc-deadline-fired', 'x2apic-self-ipi', 'upcall-in-service-in-handler']) {
    assert.match(r.stdout, new RegExp(`PASS ${c}\\b`));
  }
  assert.equal(r.status, 0, r.stderr);
});
