import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RoundRobin } from './rr.js';
import type { VCpu } from '../domain.js';
import { needsKvm } from '../../kvm/testing.js';
import { within } from '../../testing/wait.js';

const fake = (domid: number, id = 0) => ({ id, dom: { domid } }) as unknown as VCpu;

test('round robin runs vCPUs in turn and gives a slice only when others wait', () => {
  const rr = new RoundRobin(10n);
  const [a, b, c] = [fake(1), fake(2), fake(3)];
  rr.insert(a, 0n); rr.insert(b, 0n); rr.insert(a, 0n); // a second insert of a queued vCPU is ignored
  assert.equal(rr.pick(0n), a);
  assert.equal(rr.slice(a, 0n), 10n, 'b waits, so a is preempted after a slice');
  rr.insert(a, 0n);
  rr.insert(c, 0n);
  assert.equal(rr.pick(0n), b);
  assert.equal(rr.pick(0n), a);
  assert.equal(rr.pick(0n), c);
  assert.equal(rr.slice(c, 0n), 0n, 'alone: run until it blocks');
  assert.equal(rr.pick(0n), null);
});

test('a vCPU woken during a run gets the pCPU after the ratelimit, not a whole slice', () => {
  const rr = new RoundRobin(10_000_000n, 1000);
  const [a, b] = [fake(1), fake(2)];
  rr.insert(a, 0n);
  rr.insert(b, 0n);
  assert.equal(rr.pick(0n), a);
  assert.equal(rr.slice(a, 0n), 10_000_000n, 'b was queued before a started: a full slice');
  rr.insert(a, 10_000_000n);
  assert.equal(rr.pick(10_000_000n), b);
  rr.insert(fake(3), 10_500_000n);
  assert.equal(rr.slice(b, 10_000_000n), 1_000_000n, 'a wake-up after b started: ratelimit');
});

test('removing a domain takes all its vCPUs off the runqueue', () => {
  const rr = new RoundRobin(10n);
  const v = [fake(1, 0), fake(2, 0), fake(1, 1)];
  v.forEach((x) => rr.insert(x, 0n));
  rr.removeDomain(1);
  assert.equal(rr.has(v[0]!), false);
  assert.equal(rr.pick(0n), v[1]);
  assert.equal(rr.hasWaiting(), false);
});

test('two CPU-bound guests on one pCPU are preempted at slice end and both progress', needsKvm(), async () => {
  const { Toolstack } = await import('../../tools/toolstack.js');
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
  const kernel = readFileSync(path.join(root, 'guests/build/spin.elf'));
  // The spin guest's rounds are CPL3 work, which KVM runs natively on every host it runs on (this one's emulates
  // only CPL0): the scheduler is what is under test, not the CPU.
  const ts = await Toolstack.start({ pcpus: 1, log: () => {}, accel: 'kvm' });
  try {
    const lines: string[] = [];
    ts.hv.on('console', (domid, _s, text) => lines.push(`${domid}:${text}`));
    const done = new Promise<void>((resolve) => {
      let n = 0;
      ts.hv.on('shutdown', () => { if (++n === 2) resolve(); });
    });
    const a = await ts.create({ name: 'a', kernel, memoryMiB: 8, vcpus: 1, cmdline: 'rounds=3' }, () => {});
    const b = await ts.create({ name: 'b', kernel, memoryMiB: 8, vcpus: 1, cmdline: 'rounds=3' }, () => {});
    await within('both spin guests powering off', done, 60_000);
    const rounds = lines.filter((l) => /spin: round \d/.test(l)).map((l) => Number(l.split(':')[0]));
    assert.equal(rounds.filter((d) => d === a.domid).length, 3);
    assert.equal(rounds.filter((d) => d === b.domid).length, 3);
    // Each round is ~10^8 guest instructions, far longer than a 10 ms slice: with
    // preemption the second guest finishes a round before the first finishes all of its.
    const firstB = rounds.indexOf(b.domid);
    const lastA = rounds.lastIndexOf(a.domid);
    assert.ok(firstB < lastA, `interleaved rounds: ${rounds.join(',')}`);
  } finally {
    await ts.shutdown();
  }
});
