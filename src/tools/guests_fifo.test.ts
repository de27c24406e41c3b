// The FIFO event-channel sample guest on /dev/kvm: it registers a per-vCPU
// upcall vector and sets HVM_PARAM_CALLBACK_IRQ to GSI 1 (as Linux does),
// switches from 2-level to FIFO with a port carried over, and takes events
// from its queues in priority order; with more than 4096 event channels it
// also binds ports above 4095, which only FIFO can carry.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needsKvm } from '../kvm/testing.js';
import { guest, verdict, xenodeRun as run } from '../testing/xenode.js';

const ALWAYS = ['callback_irq-gsi1', 'callback_irq-gsi1-readback', 'init_control-bad-gfn-EINVAL', 'init_control-twice-EINVAL',
  'expand_array-before-init-EOPNOTSUPP', 'set_priority-before-init-ENOSYS', 'carried-port-pending-masked', 'ready-bits',
  'a-links-pre', 'delivered-in-priority-order', 'one-upcall', 'masked-no-upcall', 'unmask-delivers', 'prio0-before-prio2',
  'after-reset-2level-pending'];
const HIGH = ['2level-last-port', 'fifo-last-port', 'bind_ipi-high-port', 'high-port-delivered'];

test('the fifo guest switches to FIFO and receives its events in priority order', needsKvm(), async () => {
  const r = await run([guest('fifo')]);
  const v = verdict(r);
  assert.deepEqual(v.fails, []);
  assert.equal(v.failed, 0);
  for (const name of ALWAYS) assert.match(r.stdout, new RegExp(`^PASS ${name}$`, 'm'));
  for (const name of HIGH) assert.doesNotMatch(r.stdout, new RegExp(`^PASS ${name}$`, 'm'), 'no ports above 1023 configured');
  assert.equal(r.code, 0, 'the guest powers off when all checks pass');
});

test('with two vCPUs the fifo guest finds a port bound to vCPU 1 on vCPU 1\'s own queues', needsKvm(), async () => {
  const r = await run(['--vcpus', '2', guest('fifo')]);
  const v = verdict(r);
  assert.deepEqual(v.fails, []);
  for (const name of [...ALWAYS, 'init_control-vcpu1', 'vcpu1-head', 'vcpu1-link', 'vcpu1-upcall-pending', 'vcpu0-no-upcall']) {
    assert.match(r.stdout, new RegExp(`^PASS ${name}$`, 'm'));
  }
  assert.equal(r.code, 0);
});

test('with 8191 event channels the fifo guest binds ports above 4095 only under FIFO, up to port 8191', needsKvm(), async () => {
  const r = await run(['--max-event-channels', '8191', '--cmdline', 'maxport=8191', guest('fifo')]);
  const v = verdict(r);
  assert.deepEqual(v.fails, []);
  for (const name of [...ALWAYS, ...HIGH]) assert.match(r.stdout, new RegExp(`^PASS ${name}$`, 'm'));
  assert.equal(r.code, 0);
});

test('xenode run --max-event-channels takes 1..131071 (EVTCHN_FIFO_NR_CHANNELS - 1) and refuses the rest (exit 2)', async () => {
  for (const bad of ['0', '131072', 'x', '2.5']) {
    const r = await run(['--max-event-channels', bad, guest('fifo')]);
    assert.equal(r.code, 2, bad);
    assert.match(r.stderr, new RegExp(`--max-event-channels must be 1\\.\\.131071, got '${bad.replace('.', '\\.')}'`));
  }
});
