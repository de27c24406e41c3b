// SCHEDOP_remote_shutdown as the control domain uses it (xc_domain_shutdown,
// what `xl shutdown -F` falls back to for a guest without PV control): the
// domain shuts down with the reason given, whatever it is doing, exactly as if
// it had called SCHEDOP_shutdown itself.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { needsKvm } from '../kvm/testing.js';
import { Toolstack } from './toolstack.js';
import { DOMSTATE } from '../hv/shared.js';
import { SHUTDOWN } from '../hv/sched_op.js';
import { guest } from '../testing/xenode.js';
import { until, within } from '../testing/wait.js';

const elf = (name: string) => readFileSync(guest(name));

/** Resolves with the reason of domid's next 'shutdown' event. */
function nextShutdown(ts: Toolstack, domid: number): Promise<{ reason: number; detail: string }> {
  return new Promise((resolve) => {
    const f = (id: number, reason: number, detail: string) => {
      if (id !== domid) return;
      ts.hv.off('shutdown', f);
      resolve({ reason, detail });
    };
    ts.hv.on('shutdown', f);
  });
}

test('remote shutdown stops a blocked, a paused and a CPU-bound domain with the reason given, once', needsKvm(), async () => {
  const ts = await Toolstack.start({ pcpus: 2, log: () => {} });
  try {
    // everything each domain prints, whichever way (console_io, port 0xE9, PV ring)
    const said = new Map<number, string>();
    const say = (domid: number, text: string) => said.set(domid, (said.get(domid) ?? '') + text);
    ts.hv.on('console', (domid: number, _src: string, text: string) => say(domid, text));
    const idle = await ts.create({ name: 'idle', kernel: elf('idle'), memoryMiB: 4, vcpus: 1 }, () => {});
    await until('the idle guest printing "idle: blocking"', () => said.get(idle.domid)?.includes('idle: blocking'));
    const idleDown = nextShutdown(ts, idle.domid);
    assert.equal(ts.hv.remoteShutdown(idle.domid, SHUTDOWN.reboot, 'xl reboot -F'), true);
    assert.deepEqual(await within('the idle domain shutting down', idleDown), { reason: SHUTDOWN.reboot, detail: 'xl reboot -F' });
    assert.equal(ts.hv.info(idle.domid)!.state, DOMSTATE.shutdown);
    assert.equal(ts.hv.info(idle.domid)!.shutdownReason, SHUTDOWN.reboot);
    // already shut down: nothing more happens, the first reason stays
    assert.equal(ts.hv.remoteShutdown(idle.domid, SHUTDOWN.poweroff), false);
    assert.equal(ts.hv.info(idle.domid)!.shutdownReason, SHUTDOWN.reboot);

    // created paused: shut down without running one instruction
    const paused = await ts.create({ name: 'paused', kernel: elf('hello'), memoryMiB: 4, vcpus: 1 }, (b) => say(-1, Buffer.from(b).toString()), { paused: true });
    const pausedDown = nextShutdown(ts, paused.domid);
    assert.equal(ts.hv.remoteShutdown(paused.domid, SHUTDOWN.poweroff), true);
    assert.equal((await within('the paused domain shutting down', pausedDown)).reason, SHUTDOWN.poweroff);
    assert.equal(said.get(paused.domid), undefined);
    assert.equal(said.get(-1), undefined);

    // spinning at CPL3, never leaving KVM_RUN by itself: stopped all the same
    const spin = await ts.create({ name: 'spin', kernel: elf('spin'), memoryMiB: 4, vcpus: 1 }, () => {});
    await until('the spin guest using 20 ms of CPU time', () => ts.hv.info(spin.domid)!.cpuTimeUs >= 20_000);
    const spinDown = nextShutdown(ts, spin.domid);
    assert.equal(ts.hv.remoteShutdown(spin.domid, SHUTDOWN.crash), true);
    assert.equal((await within('the spinning domain shutting down', spinDown)).reason, SHUTDOWN.crash);
    assert.equal(ts.hv.info(spin.domid)!.state, DOMSTATE.crashed);
    const cpu = ts.hv.info(spin.domid)!.cpuTimeUs;
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(ts.hv.info(spin.domid)!.cpuTimeUs, cpu, 'a shut-down domain gets no more CPU time');

    assert.throws(() => ts.hv.remoteShutdown(spin.domid, 256), /reason must be 0\.\.255/);
    assert.throws(() => ts.hv.remoteShutdown(4242, SHUTDOWN.poweroff), /no domain 4242/);
  } finally {
    await ts.shutdown();
  }
});
