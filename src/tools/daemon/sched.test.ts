// cpupools and scheduler parameters end to end: a daemon with two pCPUs, xl
// run as a person runs it, spin guests placed by pool and affinity.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { needsKvm } from '../../kvm/testing.js';
import { guest, startDaemon, tmpStateDir, type TestDaemon } from './testing.js';

const XL_JS = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', 'xl', 'xl.js');
let d: TestDaemon | undefined;
let dir = '';

interface Run { code: number | null; out: string; err: string }
function xl(...argv: string[]): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [XL_JS, ...argv], { env: { ...process.env, XENODE_SOCKET: d!.socket }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    p.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    p.on('close', (code) => resolve({ code, out, err }));
  });
}

function cfg(name: string, extra = ''): string {
  const f = path.join(dir, `${name}.cfg`);
  fs.writeFileSync(f, `name = "${name}"\nkernel = "${guest('spin')}"\nmemory = 8\nvcpus = 1\n${extra}`);
  return f;
}

const opts = { ...needsKvm(), concurrency: false };

before(async () => {
  if (needsKvm().skip) return;
  dir = tmpStateDir();
  d = await startDaemon(dir, ['--restart-delay', '0', '--pcpus', '2']);
});
after(async () => { await d?.stop(); });

test('Pool-0 holds every pCPU at start, with credit2, and xl info says so', opts, async () => {
  const l = await xl('cpupool-list');
  assert.equal(l.out, 'Name               CPUs   Sched     Active   Domain count\nPool-0               2   credit2       y          1\n');
  assert.equal((await xl('cpupool-list', '-c')).out, 'Name               CPU list\nPool-0             0,1\n');
  const info = (await xl('info')).out;
  assert.match(info, /^xen_scheduler\s+: credit2$/m);
  assert.match(info, /^free_cpus\s+: 0$/m);
  assert.match(info, /^xenode_exclusive\s+: none$/m);
  assert.match(info, /^xenode_pcpu_host\s+: unpinned, SCHED_OTHER$/m);
});

test('a pCPU moves to a new RTDS pool; guests are placed by pool and hard affinity; parameters go through xl', opts, async () => {
  assert.deepEqual(await xl('cpupool-cpu-remove', 'Pool-0', '1'), { code: 0, out: '', err: '' });
  assert.match((await xl('info')).out, /^free_cpus\s+: 1$/m);
  const c = await xl('cpupool-create', 'name="rt"', 'sched="rtds"', 'cpus="1"');
  assert.equal(c.out, 'Using config file "command line"\ncpupool name:   rt\nscheduler:      rtds\nnumber of cpus: 1\n', c.err);
  assert.equal((await xl('cpupool-create', 'name="rt"')).err, 'Pool name "rt" already exists\n');
  assert.equal((await xl('cpupool-list', '-c')).out, 'Name               CPU list\nPool-0             0\nrt                 1\n');

  // pool= puts the guest on pCPU 1; one in Pool-0 pinned (cpus=) where Pool-0 has no pCPU is refused.
  assert.equal((await xl('create', cfg('rtg', 'pool = "rt"\n'))).code, 0);
  assert.equal((await xl('create', cfg('c2', 'cpu_weight = 512\ncap = 50\n'))).code, 0);
  const bad = await xl('create', cfg('nowhere', 'cpus = "1"\n'));
  assert.notEqual(bad.code, 0);
  assert.match(bad.err, /no pCPU of cpupool 'Pool-0' \(0\) is in its hard affinity \(1\)/);
  const bogus = await xl('create', cfg('nopool', 'pool = "nosuch"\n'));
  assert.match(bogus.err, /Illegal pool specified: nosuch/);
  const vl = (await xl('vcpu-list', 'rtg', 'c2')).out.split('\n');
  assert.match(vl.find((x) => x.startsWith('rtg'))!, /^rtg\s+\d+\s+0\s+1\s/, 'rtg vCPU 0 on pCPU 1');
  assert.match(vl.find((x) => x.startsWith('c2'))!, /^c2\s+\d+\s+0\s+0\s/, 'c2 vCPU 0 on pCPU 0');
  assert.equal((await xl('cpupool-list')).out, 'Name               CPUs   Sched     Active   Domain count\nPool-0               1   credit2       y          2\nrt                   1      rtds       y          1\n');

  // credit2: the config's weight and cap, set and read back with xl's formats.
  const c2 = await xl('sched-credit2');
  assert.equal(c2.out, `Cpupool Pool-0: ratelimit=1000us\n${'Name'.padEnd(33)}   ID Weight  Cap\n${'c2'.padEnd(33)} ${String(c2.out.match(/c2\s+(\d+)/)![1]).padStart(4)}    512   50\n`);
  assert.equal((await xl('sched-credit2', '-d', 'c2', '-w', '100')).code, 0);
  assert.match((await xl('sched-credit2', '-d', 'c2')).out, /^c2\s+\d+\s+100\s+50$/m);
  assert.equal((await xl('sched-credit2', '-d', 'c2', '-w', '0')).err, 'libxl_domain_sched_params_set failed.\n');
  assert.equal((await xl('sched-credit2', '-s', '-r', '2000')).code, 0);
  assert.equal((await xl('sched-credit2', '-s')).out, 'Cpupool Pool-0: ratelimit=2000us\n');
  assert.equal((await xl('sched-credit2', '-d', 'rtg')).err, 'libxl_domain_sched_params_get returned rtds not credit2.\n');
  assert.equal((await xl('sched-credit', '-d', 'c2', '-p', 'rt')).err, 'Specifying a cpupool or schedparam is not allowed with domain options.\n');

  // rtds: defaults, then per-vCPU parameters.
  const r = await xl('sched-rtds');
  assert.match(r.out, /^Cpupool rt: sched=RTDS\nName\s+ID\s+Period\s+Budget\s+Extratime\nrtg\s+\d+\s+10000\s+4000\s+yes\n$/);
  assert.equal((await xl('sched-rtds', '-d', 'rtg', '-v', 'all', '-p', '5000', '-b', '1000', '-e', '0')).code, 0);
  assert.match((await xl('sched-rtds', '-d', 'rtg', '-v', '0')).out, /^Name\s+ID\s+VCPU\s+Period\s+Budget\s+Extratime\nrtg\s+\d+\s+0\s+5000\s+1000\s+no\n$/);
  assert.equal((await xl('sched-rtds', '-d', 'rtg', '-v', '0', '-p', '100', '-b', '200', '-e', '0')).err, 'libxl_vcpu_sched_params_set failed.\n', 'budget above period');
  assert.equal((await xl('sched-rtds', '-d', 'rtg', '-p', '100')).err, 'Must specify VCPU.\n');

  // A pool with a domain, or a pCPU with a vCPU on it, stays; a running domain is not moved.
  assert.equal((await xl('cpupool-destroy', 'rt')).err, "Can't destroy cpupool 'rt'\n");
  const rm = await xl('cpupool-cpu-remove', 'rt', '1');
  assert.match(rm.err, /^Some cpus may have not or only partially been removed from 'rt'\./);
  // a running domain changes pool when its vCPUs can move (KVM); a software-CPU domain's cannot
  const c2Accel = (JSON.parse((await xl('list', '-l', 'c2')).out) as { xenode_accel: string }[])[0]!.xenode_accel;
  const mig = await xl('cpupool-migrate', 'c2', 'rt');
  if (/tcg/.test(c2Accel)) {
    assert.equal(mig.code, 1);
    assert.match(mig.err, /on the software CPU, whose vCPUs share one worker: they are not moved/);
  } else {
    assert.equal(mig.code, 0, mig.err);
    assert.match((await xl('list', '-c', 'c2')).out, /\brt\s*$/m, 'c2 is in rt now');
    assert.equal((await xl('cpupool-migrate', 'c2', 'Pool-0')).code, 0, 'and back');
  }
  assert.equal((await xl('cpupool-migrate', 'nosuch', 'rt')).err, "unknown domain 'nosuch'\n");
  assert.equal((await xl('cpupool-destroy', 'nosuch')).err, "unknown cpupool 'nosuch'\n");

  // Emptied, it goes, and its pCPU is free for Pool-0 again.
  assert.equal((await xl('destroy', 'rtg')).code, 0);
  assert.equal((await xl('cpupool-rename', 'rt', 'rt2')).code, 0);
  assert.deepEqual(await xl('cpupool-destroy', 'rt2'), { code: 0, out: '', err: '' });
  assert.equal((await xl('cpupool-cpu-add', 'Pool-0', '1')).code, 0);
  assert.equal((await xl('cpupool-list', '-c')).out, 'Name               CPU list\nPool-0             0,1\n');
});

function xenode(...argv: string[]): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [path.resolve(path.dirname(XL_JS), '..', 'xenode.js'), ...argv], { env: { ...process.env, XENODE_SOCKET: d!.socket }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    p.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    p.on('close', (code) => resolve({ code, out, err }));
  });
}

test('an ARINC 653 pool runs only the domains its schedule names, set and read with xenode arinc653', opts, async () => {
  assert.equal((await xl('cpupool-cpu-remove', 'Pool-0', '1')).code, 0);
  assert.equal((await xl('cpupool-create', 'name="a653"', 'sched="arinc653"', 'cpus="1"')).code, 0);
  for (const n of ['p1', 'p2', 'idle3']) assert.equal((await xl('create', cfg(n, 'pool = "a653"\n'))).code, 0);
  assert.equal((await xenode('arinc653', '--pool', 'a653')).out, 'cpupool 1: no ARINC 653 schedule (nothing runs)\n');
  const bad = await xenode('arinc653', '--pool', 'a653', '10', 'p1=6', 'p2=6');
  assert.equal(bad.code, 1);
  assert.match(bad.err, /minor frames total 12000000 ns, more than the major frame/);
  const set = await xenode('arinc653', '--pool', 'a653', '20', 'p1=5', 'p2:0=3', 'p1=2');
  assert.equal(set.code, 0, set.err);
  assert.match(set.out, /^cpupool 1: major frame 20 ms, from [\d.]+ s system time\n\s+0 ms\s+5 ms {2}p1 \(\d+\) vCPU 0\n\s+5 ms\s+3 ms {2}p2 \(\d+\) vCPU 0\n\s+8 ms\s+2 ms {2}p1 \(\d+\) vCPU 0\n\s+10 ms\s+10 ms {2}idle\n$/);
  // Both named domains get the pCPU in their windows; the third never runs.
  const cpu = async (n: string) => Number((await xl('list', n)).out.split('\n')[1]!.trim().split(/\s+/).pop());
  const { until } = await import('./testing.js');
  await until('p1 and p2 running in their windows', async () => (await cpu('p1')) > 0.05 && (await cpu('p2')) > 0.05);
  assert.equal(await cpu('idle3'), 0, 'not in the schedule: never runs');
  assert.equal((await xenode('arinc653', '20', 'p1=5')).err, "xenode arinc653: cpupool 'Pool-0' runs credit2, not arinc653\n");
  for (const n of ['p1', 'p2', 'idle3']) assert.equal((await xl('destroy', n)).code, 0);
  assert.equal((await xl('cpupool-destroy', 'a653')).code, 0);
  assert.equal((await xl('cpupool-cpu-add', 'Pool-0', '1')).code, 0);
});
