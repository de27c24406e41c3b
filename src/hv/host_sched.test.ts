// The host side of real time: pCPU worker threads pinned to host CPUs and
// put at a SCHED_FIFO priority when a pool asks, read back from the kernel;
// where the host refuses (no CAP_SYS_NICE, a CPU outside the cpuset) the
// refusal is reported with what is missing, and nothing else changes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getAffinity, getPolicy, setAffinity, setRealtime, HostSchedError } from '../kvm/host_sched.js';
import { needsTcg } from '../testing/accel.js';

test('host_sched: affinity and SCHED_FIFO of a thread, read back; refusals say what the host lacks', () => {
  const all = getAffinity(0);
  assert.ok(all.length >= 1);
  try {
    setAffinity(0, [all[0]!]);
    assert.deepEqual(getAffinity(0), [all[0]]);
  } finally {
    setAffinity(0, all);
  }
  assert.deepEqual(getAffinity(0), all);
  assert.throws(() => setAffinity(0, [1023]), (e: unknown) => e instanceof HostSchedError && /not available to this process/.test(e.message));
  assert.deepEqual(getAffinity(0), all, 'a refusal changes nothing');
  assert.throws(() => setRealtime(0, 100), /1\.\.99/);
  try {
    setRealtime(0, 1);
    assert.deepEqual(getPolicy(0), { policy: 'fifo', priority: 1 });
  } catch (e) {
    assert.ok(e instanceof HostSchedError && /CAP_SYS_NICE/.test(e.message), String(e));
  } finally {
    setRealtime(0, 0);
  }
  assert.deepEqual(getPolicy(0), { policy: 'other', priority: 0 });
});

test('a pool\'s pCPU workers (and their software-CPU kick helpers) are pinned one per host CPU and made real-time, then let go', needsTcg(), async () => {
  const { Hypervisor } = await import('./hypervisor.js');
  const hv = await Hypervisor.start({ pcpus: 2, accel: 'tcg' });
  try {
    const host = getAffinity(0);
    await assert.rejects(hv.cpupoolHostSched(0, { pin: true, rtPriority: 100 }), /1\.\.99/);
    const r = await hv.cpupoolHostSched(0, { pin: true, rtPriority: 2 });
    const permitted = r[0]!.errors.length === 0;
    for (const p of r) {
      assert.deepEqual(p.affinity, [host[p.pcpu % host.length]], `pCPU ${p.pcpu} pinned`);
      // the kick helper, whose tid is the one kicks aim at, is pinned with it
      assert.deepEqual(getAffinity(hv.host.tid(p.pcpu)), p.affinity);
      if (permitted) {
        assert.deepEqual([p.policy, p.priority], ['fifo', 2]);
        // one above the worker, or the worker running a guest would keep it from ever stopping it
        assert.deepEqual(getPolicy(hv.host.tid(p.pcpu)), { policy: 'fifo', priority: 3 });
      } else {
        assert.equal(p.policy, 'other');
        assert.match(p.errors.join('\n'), /SCHED_FIFO 2 not permitted: the process needs CAP_SYS_NICE/);
      }
    }
    assert.deepEqual(hv.pcpuHost.map((p) => p?.affinity), r.map((p) => p.affinity));
    const back = await hv.cpupoolHostSched(0, { pin: false, rtPriority: 0 });
    for (const p of back) {
      assert.deepEqual(p.affinity, host);
      assert.deepEqual([p.policy, p.priority, p.errors], ['other', 0, []]);
      assert.deepEqual(getPolicy(hv.host.tid(p.pcpu)), { policy: 'other', priority: 0 });
    }
  } finally {
    await hv.shutdownAll();
  }
});
