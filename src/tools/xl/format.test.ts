import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DomainSummary, VcpuSummary } from '../daemon/protocol.js';
import { cpuSet, fixed, infoLines, listHeader, listRow, stateFlags, topScreen, topState, uptimeHeader, uptimeRow, uptimeString, vcpuListHeader, vcpuListRow, xlSeconds } from './format.js';

function dom(over: Partial<DomainSummary> = {}): DomainSummary {
  return {
    domid: 3, name: 'hello', uuid: '6e7e3c7a-1b2c-4d5e-8f90-a1b2c3d4e5f6', memory: 32768, maxmem: 65536,
    vcpus: 2, onlineVcpus: 2, running: false, blocked: true, paused: false, shutdown: false, crashed: false,
    dying: false, shutdownReason: -1, cpuTime: 1.25, startTime: 0, seclabel: '', cpupool: 'Pool-0', accel: 'kvm', ...over,
  };
}

test('list header: "Name" padded to column 44 where "ID" ends, tab-separated State and Time(s)', () => {
  const h = listHeader();
  assert.equal(h, 'Name                                        ID   Mem VCPUs\tState\tTime(s)');
  assert.equal(h.indexOf('ID'), 44);
  assert.equal(listHeader({ verbose: true }), `${h}   UUID                            Reason-Code\tSecurity Label`);
  assert.equal(listHeader({ context: true }), `${h}   Security Label`);
});

test('list row follows "%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f"', () => {
  const r = listRow(dom());
  assert.equal(r, `${'hello'.padEnd(40)}     3    32     2     -b----       1.2`);
  // the columns line up under the header's
  assert.equal(r.slice(41, 46).trim(), '3');
  assert.equal(r.length, 40 + 1 + 5 + 1 + 5 + 1 + 5 + 5 + 6 + 2 + 8);
  // memory is KiB / 1024 rounded down; a long name pushes the columns out as printf does
  assert.match(listRow(dom({ memory: 2047 })), /\s+1\s+2\s+-b/);
  const long = 'x'.repeat(45);
  assert.ok(listRow(dom({ name: long })).startsWith(`${long}     3`));
});

test('state letters r b p s <reason> d, the reason letter from "-rscwS"', () => {
  const base = { running: false, blocked: false, paused: false, shutdown: false, shutdownReason: -1, dying: false };
  assert.equal(stateFlags(base), '------');
  assert.equal(stateFlags({ ...base, running: true }), 'r-----');
  assert.equal(stateFlags({ ...base, paused: true, blocked: true }), '-bp---');
  assert.equal(stateFlags({ ...base, shutdown: true, shutdownReason: 0 }), '---s--');
  assert.equal(stateFlags({ ...base, shutdown: true, shutdownReason: 1 }), '---sr-');
  assert.equal(stateFlags({ ...base, shutdown: true, shutdownReason: 2 }), '---ss-');
  assert.equal(stateFlags({ ...base, shutdown: true, shutdownReason: 3 }), '---sc-');
  assert.equal(stateFlags({ ...base, shutdown: true, shutdownReason: 4 }), '---sw-');
  assert.equal(stateFlags({ ...base, shutdown: true, shutdownReason: 5 }), '---sS-');
  assert.equal(stateFlags({ ...base, shutdown: true, shutdownReason: 9 }), '---s?-');
  // the reason only counts while shut down
  assert.equal(stateFlags({ ...base, shutdownReason: 3 }), '------');
  assert.equal(stateFlags({ ...base, dying: true }), '-----d');
});

test('list -v adds the UUID, the reason code in hex (or -) and the label (or -)', () => {
  const d = dom();
  assert.equal(listRow(d, { verbose: true }), `${listRow(d)} ${d.uuid}        -                -`);
  const crashed = dom({ shutdown: true, shutdownReason: 3, crashed: true, seclabel: 'system_u:system_r:domU_t' });
  assert.equal(listRow(crashed, { verbose: true }), `${listRow(crashed)} ${d.uuid}        3 system_u:system_r:domU_t`);
  assert.equal(listRow(dom(), { context: true }), `${listRow(dom())}                -`);
});

test('%.1f rounding as glibc: exact ties to even, and xl\'s float cast of the nanoseconds', () => {
  assert.equal(fixed(0.25, 1), '0.2');
  assert.equal(fixed(0.75, 1), '0.8');
  assert.equal(fixed(1.35, 1), (1.35).toFixed(1)); // not an exact tie in binary
  assert.equal(fixed(-0.25, 1), '-0.2');
  assert.equal(fixed(12.04, 1), '12.0');
  // (float)cpu_time: 2^24+1 ns is not representable in single precision
  assert.equal(xlSeconds((2 ** 24 + 1) / 1e9), 2 ** 24 / 1e9);
});

test('affinity is printed like print_bitmap: all, none, ranges', () => {
  assert.equal(cpuSet(null, 2), 'all');
  assert.equal(cpuSet([0, 1], 2), 'all');
  assert.equal(cpuSet([0], 2), '0');
  assert.equal(cpuSet([1], 2), '1');
  assert.equal(cpuSet([], 4), 'none');
  assert.equal(cpuSet([0, 1, 2, 3, 6, 7], 8), '0-3,6-7');
  assert.equal(cpuSet([2, 3, 4, 5, 6, 7], 8), '2-7');
  assert.equal(cpuSet([1, 3, 5], 8), '1,3,5');
  assert.equal(cpuSet([0, 9], 4), '0'); // CPUs past the host's are not shown
});

test('vcpu-list header and rows: "%-32s %5s %5s %5s %5s %9s %s"', () => {
  assert.equal(vcpuListHeader(), 'Name                                ID  VCPU   CPU State   Time(s) Affinity (Hard / Soft)');
  const v: VcpuSummary = { domid: 3, name: 'hello', vcpu: 0, pcpu: 1, state: 'running', cpuTime: 2.5, hard: null, soft: null };
  assert.equal(vcpuListRow(v, 2), `${'hello'.padEnd(32)}     3     0    1   r--       2.5  all / all`);
  assert.equal(vcpuListRow({ ...v, state: 'blocked', hard: [1] }, 2), `${'hello'.padEnd(32)}     3     0    1   -b-       2.5  1 / all`);
  assert.equal(vcpuListRow({ ...v, state: 'runnable' }, 2), `${'hello'.padEnd(32)}     3     0    1   ---       2.5  all / all`);
  assert.equal(vcpuListRow({ ...v, state: 'offline', pcpu: -1, cpuTime: 0 }, 2), `${'hello'.padEnd(32)}     3     0    -   --p       0.0  all / all`);
  // as in xl, the row has no space between VCPU and CPU ("%5u%5u"): it sits one column left of the header
  assert.equal(vcpuListRow(v, 2).indexOf('    1   r'), vcpuListHeader().indexOf('  CPU') - 1);
});

test('info: "%-23s: value" in xl\'s order, unknown keys after, nothing invented, xend_config_format last', () => {
  const lines = infoLines({ xen_version: '4.19-xenode', host: 'box', nr_cpus: 2, xenode_workers: 2, total_memory: 1024 });
  assert.deepEqual(lines, [
    'host                   : box',
    'nr_cpus                : 2',
    'total_memory           : 1024',
    'xen_version            : 4.19-xenode',
    'xenode_workers         : 2',
    'xend_config_format     : 4',
  ]);
  assert.deepEqual(infoLines({ xen_major: 4, xen_minor: 19 }, 'xen_m'), ['4', '19']);
  assert.deepEqual(infoLines({ host: 'box' }, 'nope'), []);
});

test('uptime strings as xl\'s uptime_to_string', () => {
  assert.equal(uptimeString(59, false), ' 0:00:59');
  assert.equal(uptimeString(3600 + 61, false), ' 1:01:01');
  assert.equal(uptimeString(86400 + 7200, false), '1 day,  2:00:00');
  assert.equal(uptimeString(3 * 86400 + 36000 + 60, true), '3 days, 10:01');
  assert.equal(uptimeHeader(), 'Name                                ID Uptime');
  const now = new Date(2026, 0, 2, 3, 4, 5);
  assert.equal(uptimeRow('hello', 3, 65, false, now), `${'hello'.padEnd(33)}    3  0:01:05`);
  assert.equal(uptimeRow('hello', 3, 65, true, now), ' 03:04:05 up  0:01, hello (3)');
});

test('top: xentop summary, header and rows; CPU(%) from two samples', () => {
  const a = dom({ domid: 1, name: 'a', running: true, blocked: false, cpuTime: 1 });
  const b = dom({ domid: 2, name: 'a-very-long-name', paused: true, blocked: false });
  const prev = { at: 0, domains: [a, b] };
  const cur = { at: 2000, domains: [{ ...a, cpuTime: 2 }, b] };
  const lines = topScreen(cur, prev, { totalMemKiB: 1048576, freeMemKiB: 524288, nrCpus: 2, version: '4.19' }, new Date(2026, 0, 2, 3, 4, 5));
  assert.equal(lines[0], 'xentop - 03:04:05   Xen 4.19');
  assert.equal(lines[1], '2 domains: 1 running, 0 blocked, 1 paused, 0 crashed, 0 dying, 0 shutdown ');
  assert.equal(lines[2], 'Mem: 1048576k total, 524288k used, 524288k free    CPUs: 2');
  assert.equal(lines[3], '      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS');
  assert.equal(lines[4], '         a -----r          2   50.0      32768    3.1      65536       6.2     2');
  assert.equal(lines[5], 'a-very-lon ----p-          1    0.0      32768    3.1      65536       6.2     2');
  assert.equal(topState(dom({ dying: true, shutdown: true, crashed: true })), 'dsbc--');
  // without a previous sample CPU(%) is 0, without host memory MEM(%) is n/a
  const first = topScreen(cur, null, {}, new Date());
  assert.equal(first.length, 2 + 1 + 2);
  assert.match(first[3]!, /^\s+a -----r\s+2\s+0\.0\s+32768\s+n\/a/);
});
