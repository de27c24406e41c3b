// xl as scripts and fingers use it, against a running daemon: output into a
// closed pipe, command prefixes, numeric domain qualifiers, global -N, xl
// info's fields, Domain-0 and offline vCPUs in vcpu-list, list -c/-n,
// create -F's lines, shutdown -a/-w/-w -w, pools, and settings said to be
// not applied. Expected strings are xl's own format strings
// (tools/xl/xl_info.c, xl_vcpu.c, xl_vmcontrol.c, xl.c).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { needsKvm } from '../../kvm/testing.js';
import { guest, startDaemon, tmpStateDir, until, type TestDaemon } from '../daemon/testing.js';
import { listHeader, vcpuListHeader } from './format.js';

const XL_JS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), 'xl.js');

let daemon: TestDaemon;
let env: NodeJS.ProcessEnv;
let dir: string;

interface Run { code: number | null; signal: NodeJS.Signals | null; out: string; err: string }

/** Runs `xl ...`; with closeStdout, our end of its stdout pipe is closed at once, as `| head` does once satisfied. */
function xl(argv: string[], o: { closeStdout?: boolean } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [XL_JS, ...argv], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    if (o.closeStdout) p.stdout.destroy();
    else p.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    p.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    p.on('close', (code, signal) => resolve({ code, signal, out, err }));
  });
}

const run = (...argv: string[]) => xl(argv);

function cfg(name: string, body: string, kernel = 'idle'): string {
  const f = path.join(dir, `${name}.cfg`);
  fs.writeFileSync(f, `name = "${name}"\ntype = "pvh"\nkernel = "${guest(kernel)}"\nmemory = 16\n${body}`);
  return f;
}

async function domid(name: string): Promise<number> {
  const r = await run('domid', name);
  assert.equal(r.code, 0, r.err);
  return Number(r.out);
}

describe('xl fidelity against a running daemon', needsKvm(), () => {
  before(async () => {
    daemon = await startDaemon(tmpStateDir());
    dir = daemon.stateDir;
    env = { ...process.env, XENODE_SOCKET: daemon.socket, XENODE_STATE_DIR: '' };
  });
  after(async () => { await daemon?.stop(); });

  test('output into a closed pipe ends xl quietly with SIGPIPE\'s status, for every output command', async () => {
    for (const argv of [['list'], ['uptime'], ['vcpu-list'], ['info'], ['help'], ['dmesg'], ['list', '-l']]) {
      const r = await xl(argv, { closeStdout: true });
      assert.deepEqual([r.code, r.err], [141, ''], `xl ${argv.join(' ')}`);
    }
    // a person's pipe: head takes the first line; xl says nothing on stderr whatever the timing
    const sh = spawnSync('bash', ['-c', `set -o pipefail; "${process.execPath}" "${XL_JS}" info | head -1; echo "status=$?" >&2`], { env, encoding: 'utf8' });
    assert.match(sh.stdout, /^host {19}: \S+\n$/);
    assert.match(sh.stderr, /^status=(0|141)\n$/);
  });

  test('an unambiguous prefix runs the command: xl li is xl list; xl sh is ambiguous as in xl', async () => {
    const a = await run('li');
    const b = await run('list');
    assert.equal(a.code, 0);
    assert.equal(a.out.split('\n')[0], b.out.split('\n')[0]);
    assert.equal(a.out.split('\n')[0], listHeader());
    assert.deepEqual(await run('sh'), { code: 1, signal: null, out: '', err: 'command not implemented\n' });
    assert.equal((await run('vcpu-l')).out.split('\n')[0], vcpuListHeader());
  });

  test('numeric qualifiers are domids without lookup: each command meets the missing domain as xl\'s does', async () => {
    assert.deepEqual(await run('list', '42'), { code: 1, signal: null, out: '', err: "Error: Domain '42' does not exist.\n" });
    assert.deepEqual(await run('vcpu-list', '42'), { code: 0, signal: null, out: `${vcpuListHeader()}\n`, err: 'xl: no domain with id 42\n' });
    assert.deepEqual(await run('destroy', '42'), { code: 1, signal: null, out: '', err: 'xl: no domain with id 42\ndestroy failed (rc=-21)\n' });
    assert.deepEqual(await run('uptime', '42'), { code: 0, signal: null, out: 'Name                                ID Uptime\n', err: '' });
    // a name still goes through libxl_name_to_domid
    assert.deepEqual(await run('list', 'nosuch'), { code: 1, signal: null, out: '', err: 'nosuch is an invalid domain identifier (rc=-6)\n' });
  });

  test('xl info: xl\'s fields with true values, nr_domains as many as xl list shows; info -n adds the topology', async () => {
    const r = await run('info');
    assert.equal(r.code, 0, r.err);
    const lines = r.out.trimEnd().split('\n');
    const kv = new Map(lines.map((l) => [l.slice(0, 23).trimEnd(), l.slice(25)]));
    assert.ok(lines.every((l) => /^[a-z_]+ *: /.test(l) || /^virt_caps {14}:/.test(l)), r.out);
    assert.match(kv.get('cpu_mhz')!, /^\d+\.\d{3}$/);
    assert.match(kv.get('hw_caps')!, /^([0-9a-f]{8}:){7}[0-9a-f]{8}$/);
    // CPUID.1:EDX bit 0 (FPU) is in every x86 CPU KVM offers
    assert.equal(parseInt(kv.get('hw_caps')!.slice(0, 8), 16) & 1, 1);
    for (const tok of kv.get('virt_caps')!.split(' ')) {
      assert.ok(['pv', 'hvm', 'hvm_directio', 'pv_directio', 'hap', 'shadow', 'iommu_hap_pt_share', 'vmtrace', 'vpmu', 'gnttab-v1', 'gnttab-v2'].includes(tok), tok);
    }
    assert.ok(['credit', 'credit2', 'rtds', 'arinc653', 'null', 'sedf', 'unknown'].includes(kv.get('xen_scheduler')!));
    for (const k of ['sharing_freed_memory', 'sharing_used_memory', 'outstanding_claims', 'free_cpus']) assert.equal(kv.get(k), '0', k);
    for (const k of ['cc_compile_by', 'cc_compile_domain', 'cc_compile_date', 'build_id']) assert.ok(kv.has(k), k);
    assert.equal(lines[lines.length - 1], 'xend_config_format     : 4');
    const rows = (await run('list')).out.trimEnd().split('\n').length - 1;
    assert.equal(kv.get('nr_domains'), String(rows));
    assert.equal((await run('info', 'cpu_mhz')).out, `${kv.get('cpu_mhz')}\n`);

    const n = await run('info', '-n');
    const nl = n.out.split('\n');
    const at = nl.indexOf('cpu_topology           :');
    assert.ok(at > 0 && nl[at - 1]!.startsWith('free_cpus'), n.out);
    assert.equal(nl[at + 1], 'cpu:    core    socket     node');
    assert.equal(nl[at + 2], '  0:       0        0        0');
    assert.ok(nl.includes('No device topology data available'));
    assert.match(n.out, /^numa_info {14}:\nnode: {4}memsize {4}memfree {4}distances\n {3}0: {4} *\d+ {5} *\d+ {6}10\nxen_major/m);
  });

  test('vcpu-list: Domain-0 first, then each domain\'s vCPUs up to maxvcpus, the ones not up as "-  --p"', async () => {
    const f = cfg('fv-max', 'vcpus = 1\nmaxvcpus = 3\n');
    assert.equal((await run('create', '-q', f)).code, 0);
    const id = await domid('fv-max');
    const all = (await run('vcpu-list')).out.split('\n');
    assert.equal(all[0], vcpuListHeader());
    assert.match(all[1]!, /^Domain-0 {24} {5}0 {5}0 {4}- {3}r-- +[\d.]+ {2}all \/ all$/);
    const mine = (await run('vcpu-list', 'fv-max')).out.trimEnd().split('\n').slice(1);
    assert.equal(mine.length, 3);
    assert.match(mine[0]!, new RegExp(`^fv-max {26} +${id} +0 +\\d+ +[r-][b-]- +[\\d.]+ {2}all / all$`));
    assert.equal(mine[1], `${'fv-max'.padEnd(32)} ${String(id).padStart(5)}     1    -   --p       0.0  all / all`);
    assert.equal(mine[2], `${'fv-max'.padEnd(32)} ${String(id).padStart(5)}     2    -   --p       0.0  all / all`);
    // xl list counts the online ones; the guest's xenstore says which are offline (libxl's cpu/N/availability)
    assert.match((await run('list', 'fv-max')).out.split('\n')[1]!, /^fv-max\s+\d+\s+16\s+1\s/);
    const avail = await run('xenstore-read', `/local/domain/${id}/cpu/2/availability`);
    if (avail.code !== 127) assert.equal(avail.out, 'offline\n');
    assert.equal((await run('destroy', 'fv-max')).code, 0);
  });

  test('list -c and -n: the cpupool and NODE Affinity columns as xl prints them', async () => {
    const c = await run('list', '-c', '0');
    assert.equal(c.out.split('\n')[0], `${listHeader()}         Cpupool`);
    assert.match(c.out.split('\n')[1]!, / {10}Pool-0$/);
    const n = await run('list', '-n', '0');
    assert.equal(n.out.split('\n')[0], `${listHeader()} NODE Affinity`);
    assert.match(n.out.split('\n')[1]!, /\.\d all$/);
  });

  test('vm-list, claims and sharing print what xl prints (no claims or shared pages on xenode: 0)', async () => {
    const f = cfg('fv-vm', '');
    assert.equal((await run('create', '-q', f)).code, 0);
    const id = await domid('fv-vm');
    const uuid = (await run('list', '-v', 'fv-vm')).out.split('\n')[1]!.split(/\s+/)[6]!;
    const vm = (await run('vm-list')).out.split('\n');
    assert.equal(vm[0], 'UUID                                  ID    name');
    assert.equal(vm[1], `00000000-0000-0000-0000-000000000000  0    ${'Domain-0'.padEnd(30)}`);
    assert.ok(vm.includes(`${uuid}  ${id}    ${'fv-vm'.padEnd(30)}`), vm.join('\n'));
    const cl = (await run('claims')).out.split('\n');
    assert.equal(cl[0], `${listHeader()}  Claimed`);
    assert.match(cl.find((l) => l.startsWith('fv-vm '))!, new RegExp(`^fv-vm {36}${String(id).padStart(5)} +16 +1 {5}[-r][-b]---- +[\\d.]+ {5}0$`));
    const sh = await run('sharing', 'fv-vm');
    assert.deepEqual(sh.out.split('\n'), ['Name                                        ID   Mem Shared', `${'fv-vm'.padEnd(40)} ${String(id).padStart(5)}    16      0`, '']);
    assert.deepEqual(await run('sharing', '42'), { code: 1, signal: null, out: '', err: "Error: Domain '42' does not exist.\n" });
    assert.equal((await run('sharing', 'a', 'b')).code, 1);
    assert.equal((await run('destroy', 'fv-vm')).code, 0);
  });

  test('create -F prints xl\'s lines: waiting, shut down with its reason, the action, done', async () => {
    const f = cfg('fv-fg', '', 'hello');
    const r = await run('create', '-F', f);
    assert.equal(r.code, 0, r.err);
    const m = /Waiting for domain fv-fg \(domid (\d+)\) to die \[pid \d+\]\n/.exec(r.err);
    assert.ok(m, r.err);
    const id = m[1];
    assert.ok(r.err.endsWith(`Domain ${id} has shut down, reason code 0 0x0\nAction for shutdown reason code 0 is destroy\n` +
      `Domain ${id} needs to be cleaned up: destroying the domain\nDone. Exiting now\n`), r.err);
  });

  test('shutdown -a stops at the first domain that fails, as xl does', async () => {
    for (const n of ['fv-a1', 'fv-a2']) assert.equal((await run('create', '-q', cfg(n, ''))).code, 0);
    const r = await run('shutdown', '-a');
    assert.equal(r.code, 1);
    // idle.elf has no PV control interface: the first one fails and nothing more is tried
    assert.equal(r.err.match(/^Shutting down domain \d+$/gm)?.length, 1, r.err);
    assert.match(r.err, /shutdown failed \(rc=-10\)\n$/);
    for (const n of ['fv-a1', 'fv-a2']) assert.equal((await run('destroy', n)).code, 0);
  });

  test('shutdown -w -w waits past the shutdown for the death', async () => {
    assert.equal((await run('create', '-q', cfg('fv-ww', ''))).code, 0);
    const id = await domid('fv-ww');
    const r = await run('shutdown', '-F', '-w', '-w', 'fv-ww');
    assert.equal(r.code, 0, r.err);
    assert.equal(r.err, `Shutting down domain ${id}\nWaiting for 1 domains\nDomain ${id} has been shut down, reason code 0\n` +
      `Domain ${id} continue waiting for death\nDomain ${id} has been destroyed\n`);
  });

  test('a preserved domain keeps its vCPUs in xl list', async () => {
    assert.equal((await run('create', '-q', cfg('fv-keep', 'on_poweroff = "preserve"\n', 'hello'))).code, 0);
    const row = await until('it shuts down', async () => (await run('list', 'fv-keep')).out.split('\n')[1]?.match(/^fv-keep\s+\d+\s+\d+\s+(\d+)\s+---s--/) ?? undefined);
    assert.ok(row);
    assert.equal(row[1], '1');
    assert.match((await run('vcpu-list', 'fv-keep')).out.split('\n')[1]!, /^fv-keep\s+\d+\s+0\s+\d+\s+---\s/);
    assert.equal((await run('destroy', 'fv-keep')).code, 0);
  });

  test('pools: Pool-0 is there from the start; one that does not exist is refused as libxl does', async () => {
    const bad = await run('create', '-q', cfg('fv-pool', 'pool = "Pool-1"\n'));
    assert.deepEqual([bad.code, bad.err], [3, 'xl: Illegal pool specified: Pool-1\n']);
    assert.equal((await run('create', '-q', cfg('fv-pool0', 'pool = "Pool-0"\n'))).code, 0);
    assert.equal((await run('destroy', 'fv-pool0')).code, 0);
  });

  test('-N: create prints the configuration and creates nothing; a command without a dry run refuses', async () => {
    const r = await run('-N', 'create', cfg('fv-dry', ''));
    assert.equal(r.code, 0, r.err);
    assert.equal((JSON.parse(r.out) as { domid: null; config: { name: string } }).config.name, 'fv-dry');
    assert.equal((await run('list', 'fv-dry')).code, 1);
    assert.deepEqual(await run('-N', 'destroy', 'fv-dry'), { code: 1, signal: null, out: '', err: 'command does not implement -N (dryrun) option\n' });
    assert.deepEqual(await run('-N', 'vcpu-pin', '0', '0', '0', '-'), { code: 0, signal: null, out: 'cpumap: 0\n', err: '' });
  });

  test('a vif rate reaches netback as libxl writes it; config syntax errors add libxl\'s line', async () => {
    const f = cfg('fv-warn', 'vif = [ "rate=10Mb/s" ]\ncpus = "0"\n');
    const r = await run('create', f);
    assert.equal(r.code, 0, r.err);
    assert.doesNotMatch(r.err, /not applied/);
    // 10 Mbit/s in libxl's default 50 ms window: 62500 bytes
    assert.equal((await run('xenstore-read', `/local/domain/0/backend/vif/${await domid('fv-warn')}/0/rate`)).out, '62500,50000\n');
    assert.equal((await run('destroy', 'fv-warn')).code, 0);
    const bad = path.join(dir, 'bad.cfg');
    fs.writeFileSync(bad, 'name = = 1\n');
    assert.deepEqual(await run('create', '-q', bad), { code: 1, signal: null, out: '', err: `${bad}:1:8: expected a value for 'name', found '='\nFailed to parse config: Invalid argument\n` });
  });

  test('disks: block-list shows each as xl does (a guest without blkfront leaves it Initialising), block-attach and -detach while it runs; what blkback cannot serve is refused, naming the disk', async () => {
    const img = path.join(dir, 'fv-disk.img');
    fs.writeFileSync(img, Buffer.alloc(1 << 20));
    const r = await run('create', cfg('fv-disk', `disk = [ '${img},raw,xvda,rw', 'format=raw, vdev=xvdb, access=ro, target=${img}' ]\n`));
    assert.equal(r.code, 0, r.err);
    const id = await domid('fv-disk');
    const list = await run('block-list', 'fv-disk', 'no-such-domain');
    assert.equal(list.code, 0, list.err);
    assert.equal(list.err, 'no-such-domain is an invalid domain identifier\n');
    const row = (vdev: number) => `${String(vdev).padEnd(5)} 0   ${String(id).padEnd(6)} 1     -1     -1       ${`/local/domain/0/backend/vbd/${id}/${vdev}`.padEnd(30)}`;
    assert.equal(list.out, `${'Vdev  BE  handle state evt-ch ring-ref BE-path'.padEnd(69)}\n${row(51712)}\n${row(51728)}\n`);
    assert.equal((await run('xenstore-read', `/local/domain/0/backend/vbd/${id}/51728/mode`)).out, 'r\n');
    // hot-plug: the components of block-attach are one spec; the guest never started a blkfront, so removal is at once
    assert.deepEqual(await run('block-attach', 'fv-disk', `format=raw`, `vdev=xvdc`, `target=${img}`), { code: 0, signal: null, out: '', err: '' });
    assert.match((await run('block-list', 'fv-disk')).out, new RegExp(`\n51744 +0 +${id} +1 `));
    const dup = await run('block-attach', 'fv-disk', `${img},raw,xvdc`);
    assert.equal(dup.code, 1);
    assert.match(dup.err, /vdev 'xvdc' is the same device as 'xvdc', already attached\nlibxl_device_disk_add failed\.\n$/);
    assert.deepEqual(await run('block-detach', 'fv-disk', 'xvdc'), { code: 0, signal: null, out: '', err: '' });
    // backend=<name>: a driver domain of that name, started for it, serves the disk from its own backend directory
    assert.deepEqual(await run('block-attach', 'fv-disk', `format=raw, vdev=xvdd, backend=storage, target=${img}`), { code: 0, signal: null, out: '', err: '' });
    const storage = Number((await run('domid', 'storage')).out);
    assert.ok(storage > 0 && storage !== id, `the driver domain has a domid of its own (${storage})`);
    assert.match((await run('block-list', 'fv-disk')).out, new RegExp(`\n51760 +${storage} +${id} +1 .* /local/domain/${storage}/backend/vbd/${id}/51760`));
    assert.equal((await run('xenstore-read', `/local/domain/${storage}/backend/vbd/${id}/51760/hotplug-status`)).out, 'connected\n');
    assert.deepEqual(await run('block-detach', 'fv-disk', 'xvdd'), { code: 0, signal: null, out: '', err: '' });
    assert.equal((await run('xenstore-exists', `/local/domain/${storage}/backend/vbd/${id}/51760`)).code, 1, 'the driver domain\'s backend directory went');
    assert.deepEqual(await run('block-detach', 'fv-disk', '51712'), { code: 0, signal: null, out: '', err: '' });
    assert.equal((await run('block-list', 'fv-disk')).out, `${'Vdev  BE  handle state evt-ch ring-ref BE-path'.padEnd(69)}\n${row(51728)}\n`);
    assert.deepEqual(await run('block-detach', 'fv-disk', 'xvdc'), { code: 1, signal: null, out: '', err: 'Error: Device xvdc not connected.\n' });
    assert.equal((await run('xenstore-exists', `/local/domain/${id}/device/vbd/51744`)).code, 1, 'the frontend directory went');
    assert.equal((await run('destroy', 'fv-disk')).code, 0);
    assert.equal((await run('xenstore-exists', `/local/domain/0/backend/vbd/${id}`)).code, 1, 'the backend directory went with the domain');
    for (const [spec, why] of [
      [`${img},qcow2,xvda,rw`, /disk xvda \(.*fv-disk\.img\): qemu-nbd exited/],
      ['fv-disk.img,raw,xvda,rw', /disk xvda: target 'fv-disk.img' must be an absolute path/],
      [`format=raw, vdev=xvda, backend=no/such, target=${img}`, /disk xvda: backend 'no\/such': not a driver domain name/],
      [`format=raw, vdev=xvda, backend=7, target=${img}`, /disk xvda: backend '7': name the driver domain/],
      ['format=raw, vdev=xvda, backend=storage, target=/no/such.img', /disk xvda \(\/no\/such\.img\): driver domain 'storage': ENOENT/],
      ['/no/such.img,raw,xvda,rw', /disk xvda \(\/no\/such\.img\): ENOENT/],
    ] as const) {
      const bad = await run('create', cfg('fv-baddisk', `disk = [ '${spec}' ]\n`));
      assert.equal(bad.code, 3, spec); // libxl's ERROR_FAIL, as for any domain that cannot be built
      assert.match(bad.err, why);
      assert.equal((await run('list', 'fv-baddisk')).code, 1, 'nothing was left behind');
    }
  });

  test('vifs: network-list shows each as xl does (a guest without netfront leaves it Initialising); the backend offers its features; network-attach and -detach while it runs; what netback cannot serve is refused, naming the vif', async () => {
    const r = await run('create', cfg('fv-vif', `vif = [ 'mac=00:16:3e:0a:0b:0c, bridge=xenbr1', '' ]\n`));
    assert.equal(r.code, 0, r.err);
    const id = await domid('fv-vif');
    const mac1 = (await run('xenstore-read', `/local/domain/${id}/device/vif/1/mac`)).out.trim();
    assert.match(mac1, /^00:16:3e:[0-7][0-9a-f]:[0-9a-f]{2}:[0-9a-f]{2}$/, 'a MAC in Xen\'s range was made');
    const list = await run('network-list', 'fv-vif', 'no-such-domain');
    assert.equal(list.code, 0, list.err);
    assert.equal(list.err, 'no-such-domain is an invalid domain identifier\n');
    const row = (n: number, mac: string) => `${String(n).padEnd(3)} 0  ${mac}${String(n).padStart(6)}     1     -1    -1/-1          ${`/local/domain/0/backend/vif/${id}/${n}`.padEnd(30)}`;
    assert.equal(list.out, `Idx BE Mac Addr.         handle state evt-ch   tx-/rx-ring-ref BE-path                       \n${row(0, '00:16:3e:0a:0b:0c')}\n${row(1, mac1)}\n`);
    const be = `/local/domain/0/backend/vif/${id}/0`;
    for (const [k, v] of [['bridge', 'xenbr1'], ['mac', '00:16:3e:0a:0b:0c'], ['state', '2'], ['feature-rx-copy', '1'], ['hotplug-status', 'connected']]) {
      assert.equal((await run('xenstore-read', `${be}/${k}`)).out, `${v}\n`, k);
    }
    // hot-plug: each argument one key=value; the next free devid; the guest never started a netfront, so removal is at once
    assert.deepEqual(await run('network-attach', 'fv-vif', 'mac=00:16:3e:0a:0b:0d', 'bridge=xenbr1'), { code: 0, signal: null, out: '', err: '' });
    assert.equal((await run('network-list', 'fv-vif')).out.split('\n')[3], row(2, '00:16:3e:0a:0b:0d'));
    const dup = await run('network-attach', 'fv-vif', 'devid=1');
    assert.equal(dup.code, 1);
    assert.match(dup.err, /vif 1: devid 1 is already used\nlibxl_device_nic_add failed\.\n$/);
    assert.deepEqual(await run('network-attach', 'fv-vif', 'mac=zz'), { code: 1, signal: null, out: '', err: "invalid mac 'zz' (six hex bytes separated by ':')\n" });
    assert.deepEqual(await run('network-detach', 'fv-vif', '7'), { code: 1, signal: null, out: '', err: 'Unknown device 7.\n' });
    assert.deepEqual(await run('network-detach', 'fv-vif', '2'), { code: 0, signal: null, out: '', err: '' });
    assert.deepEqual(await run('network-detach', 'fv-vif', '00:16:3E:0A:0B:0C'), { code: 0, signal: null, out: '', err: '' });
    assert.equal((await run('network-list', 'fv-vif')).out, `Idx BE Mac Addr.         handle state evt-ch   tx-/rx-ring-ref BE-path                       \n${row(1, mac1)}\n`);
    assert.equal((await run('xenstore-exists', `/local/domain/0/backend/vif/${id}/2`)).code, 1, 'the detached vif\'s backend directory is gone');
    assert.equal((await run('destroy', 'fv-vif')).code, 0);
    assert.equal((await run('xenstore-exists', `/local/domain/0/backend/vif/${id}`)).code, 1, 'the backend directory went with the domain');
    for (const [spec, why] of [
      ['backend=3', /vif 0: backend '3': name the driver domain/],
      ['backend=netdom, script=vif-bridge', /vif 0: script vif-bridge: a driver domain puts its vifs on the host's bridge when there is one/],
      ['script=vif-route', /vif 0: script vif-route: ip= must name the guest's addresses/],
      ['script=/etc/xen/scripts/vif-nat', /vif 0: script \/etc\/xen\/scripts\/vif-nat: vif hotplug scripts are not run/],
    ] as const) {
      const bad = await run('create', cfg('fv-badvif', `vif = [ '${spec}' ]\n`));
      assert.equal(bad.code, 3, spec);
      assert.match(bad.err, why);
      assert.equal((await run('list', 'fv-badvif')).code, 1, 'nothing was left behind');
    }
  });

  test('-v traces each daemon request; -T puts the date and pid before the daemon\'s reasons', async () => {
    const v = await run('-v', 'list');
    assert.match(v.err, /^xl: debug: domain\.list ok \([\d.]+ ms\)\n$/);
    const t = await run('-T', 'pause', '4242');
    assert.match(t.err, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \[\d+\] xl: no domain with id 4242\n$/);
  });

  test('config-update keeps a configuration for the next restart; the running domain is unchanged until then', async () => {
    assert.equal((await run('create', '-q', cfg('fv-cu', ''))).code, 0);
    const id = await domid('fv-cu');
    const next = cfg('fv-cu-next', 'memory = 24\n');
    const r = await run('config-update', 'fv-cu', next);
    assert.deepEqual(r, { code: 0, signal: null, out: '', err: 'WARNING: xl now has better capability to manage domain configuration, avoid using this command when possible\n' +
      `setting dom${id} configuration\n` });
    assert.match((await run('list', 'fv-cu')).out.split('\n')[1]!, /^fv-cu\s+\d+\s+16\s/);
    // idle.elf has no PV control interface: -F reboots it by force, and on_reboot=restart rebuilds it
    assert.equal((await run('reboot', '-F', 'fv-cu')).code, 0);
    const row = await until('the restart with the new configuration', async () => (await run('list', 'fv-cu')).out.split('\n')[1]?.match(/^fv-cu\s+(\d+)\s+(\d+)\s/) ?? undefined);
    assert.ok(row);
    assert.notEqual(Number(row[1]), id);
    assert.equal(row[2], '24');
    assert.equal((await run('destroy', 'fv-cu')).code, 0);
    assert.deepEqual(await run('config-update', '4242', next), { code: 1, signal: null, out: '', err: 'WARNING: xl now has better capability to manage domain configuration, avoid using this command when possible\n' +
      'setting dom4242 configuration\nxl: no domain with id 4242\nfailed to update configuration\n' });
  });

  test('trigger and button-press: the names xl takes, refused for PVH as Xen refuses them; debug-keys report to xl dmesg', async () => {
    assert.equal((await run('create', '-q', cfg('fv-trig', ''))).code, 0);
    const id = await domid('fv-trig');
    assert.deepEqual(await run('trigger', 'fv-trig', 'bogus'), { code: 1, signal: null, out: '', err: 'Invalid trigger "bogus"\n' });
    assert.deepEqual(await run('trigger', 'fv-trig', 'power'), { code: 1, signal: null, out: '',
      err: `xl: Send trigger 'power' to domain ${id} vCPU 0 failed: a PVH domain has no ACPI power button (Xen: -ENODEV); use xl shutdown\n` });
    const nmi = await run('trigger', 'fv-trig', 'nmi', '9');
    assert.equal(nmi.code, 1, 'an NMI for a vCPU the domain does not have');
    assert.match(nmi.err, /domain \d+ has no vCPU 9 \(it has 1\)/);
    const b = await run('button-press', 'fv-trig', 'lid');
    assert.deepEqual(b, { code: 1, signal: null, out: '', err: 'WARNING: "button-press" is deprecated. Please use "trigger"\nlid is an invalid button identifier\n' });

    assert.deepEqual(await run('debug-keys', 'hqer'), { code: 0, signal: null, out: '', err: '' });
    const log = (await run('dmesg')).out;
    assert.match(log, /^\(XEN\) 'h' pressed -> showing installed handlers\n\(XEN\) {2}key 'h' \(ascii '68'\) => show this message$/m);
    assert.match(log, new RegExp(`^\\(XEN\\) General information for domain ${id} \\(fv-trig\\):$`, 'm'));
    assert.match(log, new RegExp(`^\\(XEN\\) Event channel information for domain ${id} \\(fv-trig\\):$`, 'm'));
    // the console and xenstore rings are bound to the control domain
    assert.match(log, /^\(XEN\) {8}\d: s=interdomain n=0 pending=[01] masked=[01] d=0 p=\d+$/m);
    assert.match(log, /^\(XEN\) CPU\[00\] /m);
    assert.equal((await run('destroy', 'fv-trig')).code, 0);
  });
});
