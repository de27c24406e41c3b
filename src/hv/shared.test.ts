// The cross-thread domain records: what one worker writes, another sees.

import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { FIFO_PORT_WORDS, DomainShared, RUNSTATE, VCPU_FLAG_INITIALISED } from './shared.js';
import { bindVirq, close, raiseVirq, VIRQ, type EvtchnHost } from './evtchn_core.js';

const host: EvtchnHost = { lookup: () => null, upcall: () => {}, wakePollers: () => {} };

test('VIRQ bindings live in the shared record: a binding made through one view is raised through another', () => {
  const a = DomainShared.create(5, 3, 63);
  const b = new DomainShared(a.sab); // the same domain as a second worker holds it
  const mem = new Uint8Array(8192);
  a.set('sharedInfoOffset', 0);
  const port = bindVirq({ shared: a, mem }, VIRQ.TIMER, 2, a.virqs);
  assert.equal(b.virqs.get(VIRQ.TIMER * 65536 + 2), port);
  assert.equal(b.virqs.has(VIRQ.TIMER * 65536 + 1), false);
  assert.equal(raiseVirq(host, { shared: b, mem }, VIRQ.TIMER, 2, b.virqs), true);
  assert.equal(raiseVirq(host, { shared: b, mem }, VIRQ.TIMER, 1, b.virqs), false, 'not bound on vCPU 1');
  close(host, { shared: b, mem }, port, b.virqs);
  assert.equal(a.virqs.get(VIRQ.TIMER * 65536 + 2), undefined, 'close forgets it for every view');
  assert.throws(() => a.virqs.set(VIRQ.TIMER * 65536 + 3, 1), RangeError, 'no vCPU 3');
  assert.equal(a.virqs.get(99 * 65536), undefined, 'out-of-range keys are simply unbound');
});

test('the VIRQ table does not overlap the port table or the vCPU records', () => {
  const s = DomainShared.create(1, 2, 1023);
  for (let v = 0; v < 2; v++) for (let q = 0; q < 24; q++) s.virqs.set(q * 65536 + v, 0x7fffffff);
  assert.equal(s.vcpu(1, 'state'), RUNSTATE.offline);
  assert.equal(s.w[s.portIndex(1023) + 3], 0, 'last port record untouched');
  assert.equal(s.lapicBase, s.virqBase + 2 * 24);
  assert.equal(s.lapicView(1).byteOffset / 4 + s.lapicView(1).length, s.fifoVcpuBase, 'the FIFO words follow the last LAPIC page');
  assert.equal(s.fifoPortBase + 1024 * FIFO_PORT_WORDS, s.sab.byteLength / 4, 'the FIFO port words end the record');
});

test('per-vCPU flags and time accounting are per vCPU', () => {
  const s = DomainShared.create(1, 2, 63);
  s.setVcpu(1, 'flags', VCPU_FLAG_INITIALISED);
  assert.equal(s.vcpu(0, 'flags'), 0);
  s.addCpuTimeUs(2 ** 32 - 1, 1);
  s.addCpuTimeUs(5, 1);
  s.addCpuTimeUs(7, 0);
  assert.equal(s.vcpuCpuTimeUs(1, 0), 2 ** 32 + 4);
  assert.equal(s.vcpuCpuTimeUs(0, 0), 7);
  assert.equal(s.cpuTimeUs(0), 2 ** 32 + 11);
});

test('a running period in progress counts in CPU time (a vCPU that never leaves KVM_RUN still shows time)', () => {
  const s = DomainShared.create(1, 2, 63);
  s.addCpuTimeUs(100, 0);
  s.enterRunstate(0, RUNSTATE.running, 2 ** 33 + 1000);
  s.enterRunstate(1, RUNSTATE.blocked, 2 ** 33);
  assert.equal(s.vcpu(0, 'state'), RUNSTATE.running);
  assert.equal(s.vcpuCpuTimeUs(0, 2 ** 33 + 1500), 600);
  assert.equal(s.vcpuCpuTimeUs(1, 2 ** 33 + 1500), 0, 'blocked time is not CPU time');
  assert.equal(s.cpuTimeUs(2 ** 33 + 1500), 600);
  // a clock read from before the entry never subtracts
  assert.equal(s.cpuTimeUs(2 ** 33), 100);
});

test('a runstate area registered through one view is seen through another (64-bit addresses, per vCPU)', () => {
  const a = DomainShared.create(1, 2, 63);
  const b = new DomainShared(a.sab);
  assert.equal(b.runstateArea(1), 0n, 'none at first');
  a.setRunstateArea(1, 0xffff_8880_1234_5678n);
  assert.equal(b.runstateArea(1), 0xffff_8880_1234_5678n);
  assert.equal(b.runstateArea(0), 0n, 'vCPU 0 untouched');
  a.setRunstateArea(1, 0n);
  assert.equal(b.runstateArea(1), 0n);
});
