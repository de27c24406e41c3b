// A running vCPU moved between pCPUs (Hypervisor.moveVcpu, which xl vcpu-pin
// uses when the new hard affinity leaves its pCPU out): a KVM spin guest
// computing at CPL3 keeps computing on the other pCPU, and back; a worker
// that starts holding the domain for it lets it go again at destroy.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { needsKvm } from '../kvm/testing.js';
import { guest } from '../testing/xenode.js';
import { until, within } from '../testing/wait.js';

/**
 * Two KVM pCPUs, the scheduling trace on, and spin guests whose printed rounds are counted:
 * `computes` waits for three more rounds from now, `switchedTo` for pCPU `pcpu`'s trace from
 * `since` to show it switched to the domain (its worker ran a vCPU of it).
 */
async function spinHost() {
  const { Toolstack } = await import('./toolstack.js');
  const ts = await Toolstack.start({ pcpus: 2, accel: 'kvm', log: () => {} });
  let rounds = 0;
  ts.hv.on('console', (_d, _s, text, eol) => { if (eol && /round/.test(text)) rounds++; });
  ts.hv.setSchedTrace(true);
  return {
    ts,
    rounds: () => rounds,
    spinner: (name: string, vcpus = 1) => ts.create({ name, kernel: readFileSync(guest('spin')), memoryMiB: 8, vcpus, cmdline: 'round_bits=18' }, () => {}),
    computes: (what: string, also: () => boolean = () => true) => { const r0 = rounds; return until(what, () => rounds >= r0 + 3 && also(), 30_000, 5); },
    switchedTo: (pcpu: number, domid: number, since: number) =>
      until(`pCPU ${pcpu} to switch to d${domid}`, () => ts.hv.readSchedTrace(pcpu, since).records.some((r) => r.event === 'switch' && r.domid === domid), 30_000, 5),
  };
}

test('a running KVM vCPU moved to the other pCPU goes on computing there, and back; the domain is destroyed from both', needsKvm(), async () => {
  const h = await spinHost();
  const ts = h.ts;
  try {
    const d = await h.spinner('mover');
    const vcpu = () => ts.hv.vcpus(d.domid)[0]!;
    // (pCPU + 1: a pCPU of 0 is a value found)
    const p0 = (await until('the spinner to compute', () => (h.rounds() >= 2 && vcpu().pcpu >= 0 ? vcpu().pcpu + 1 : 0), 60_000, 5)) - 1;
    for (const to of [1 - p0, p0]) {
      const since = ts.hv.readSchedTrace(to).next;
      await within(`moving vCPU 0 to pCPU ${to}`, ts.hv.moveVcpu(d.domid, 0, to), 10_000);
      assert.equal(ts.hv.vcpuPlacement(d.domid, 0), to, 'placed there');
      assert.equal(vcpu().pcpu, to, 'the vCPU says it runs there');
      // the pCPU's own trace: it switched to the vCPU (its worker runs it) ...
      await h.switchedTo(to, d.domid, since);
      // ... and the guest computes there: rounds printed and CPU time counted from now on
      const cpu0 = vcpu().cpuTimeUs;
      await h.computes(`rounds computed on pCPU ${to}`, () => vcpu().cpuTimeUs > cpu0);
      assert.equal(vcpu().pcpu, to, 'and stays');
    }
    await assert.rejects(ts.hv.moveVcpu(d.domid, 0, 7), /no pCPU 7/);
    await assert.rejects(ts.hv.moveVcpu(d.domid, 1, 0), /has no vCPU 1/);
    await within('destroying the domain held by both workers', ts.destroy(d.domid), 10_000);
    assert.deepEqual(ts.hv.list().map((x) => x.domid).filter((x) => x === d.domid), []);
  } finally {
    await ts.shutdown();
  }
});

test('a vCPU moved onto a pCPU that already holds the domain (its other vCPU is placed there) runs there', needsKvm(), async () => {
  const h = await spinHost();
  const ts = h.ts;
  try {
    // spin computes on vCPU 0; vCPU 1 stays down, placed on the other pCPU
    const d = await h.spinner('mover2', 2);
    await until('the spinner to compute', () => h.rounds() >= 2, 60_000, 5);
    const [p0, p1] = [ts.hv.vcpuPlacement(d.domid, 0), ts.hv.vcpuPlacement(d.domid, 1)];
    assert.notEqual(p0, p1, 'its vCPUs spread over both pCPUs');
    const since = ts.hv.readSchedTrace(p1).next;
    await within('moving vCPU 0 beside vCPU 1', ts.hv.moveVcpu(d.domid, 0, p1), 10_000);
    assert.equal(ts.hv.vcpus(d.domid)[0]!.pcpu, p1);
    await h.switchedTo(p1, d.domid, since);
    await h.computes(`rounds computed on pCPU ${p1}`);
    await within('destroying it', ts.destroy(d.domid), 10_000);
  } finally {
    await ts.shutdown();
  }
});

test('cpupools with running KVM guests: a pCPU leaving its pool takes its vCPUs to the pool\'s others first; cpupool-migrate moves a running domain onto the new pool\'s pCPUs', needsKvm(), async () => {
  const h = await spinHost();
  const ts = h.ts;
  try {
    const d = await h.spinner('pooled');
    await until('the spinner to compute', () => h.rounds() >= 2, 60_000, 5);
    await within('moving it to pCPU 1', ts.hv.moveVcpu(d.domid, 0, 1), 10_000);
    // pCPU 1 leaves Pool-0: the vCPU goes to pCPU 0 first
    let since = ts.hv.readSchedTrace(0).next;
    await within('removing pCPU 1 from Pool-0', ts.hv.cpupoolCpuRemove(0, 1), 10_000);
    assert.equal(ts.hv.vcpuPlacement(d.domid, 0), 0);
    assert.deepEqual([...ts.hv.cpupools.get(0).cpus], [0]);
    await h.switchedTo(0, d.domid, since);
    await h.computes('rounds on pCPU 0');
    // a pool of its own on pCPU 1, and the running domain into it
    const id = ts.hv.cpupoolCreate('p1', 'credit');
    ts.hv.cpupoolCpuAdd(id, 1);
    since = ts.hv.readSchedTrace(1).next;
    await within('cpupool-migrate', ts.hv.cpupoolMigrate(d.domid, id), 10_000);
    assert.equal(ts.hv.domainPool(d.domid), id);
    assert.equal(ts.hv.vcpuPlacement(d.domid, 0), 1);
    await h.switchedTo(1, d.domid, since);
    await h.computes('rounds on pCPU 1, in p1');
    await within('destroying it', ts.destroy(d.domid), 10_000);
  } finally {
    await ts.shutdown();
  }
});

test('the load balancer parts two spinners put on one pCPU, once, and leaves pinned ones where their affinity keeps them', needsKvm(), async () => {
  const h = await spinHost();
  const ts = h.ts;
  try {
    const ds = [await h.spinner('lb-a'), await h.spinner('lb-b')];
    const at = () => ds.map((d) => ts.hv.vcpuPlacement(d.domid, 0));
    for (const d of ds) await within('moving it to pCPU 0', ts.hv.moveVcpu(d.domid, 0, 0), 10_000);
    assert.deepEqual(at(), [0, 0]);
    // pinned to pCPU 0, neither may go: a pass moves nothing
    for (const d of ds) ts.hv.setVcpuAffinity(d.domid, 0, [0], null);
    await until('both spinners runnable or running', () => ds.every((d) => ts.hv.vcpus(d.domid)[0]!.state <= 1), 30_000, 5);
    assert.equal(await ts.hv.balanceOnce(), null, 'nothing may move');
    // unpinned: the balancer parts them, and then stays
    for (const d of ds) ts.hv.setVcpuAffinity(d.domid, 0, null, null);
    ts.hv.startLoadBalancing(20);
    await until('one of them moved to pCPU 1', () => at().includes(1) && at().includes(0), 30_000, 5);
    await sleep(500);
    assert.deepEqual([...at()].sort(), [0, 1], 'one per pCPU, and no bouncing');
  } finally {
    await ts.shutdown();
  }
});
