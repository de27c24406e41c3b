// xl end to end: a real `xenode daemon` on a temporary socket and state
// directory, the CLI run as a child process exactly as a person runs it, and
// the console attached through a pty (util-linux `script`) to check raw
// mode, output, input and Ctrl-] detaching.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { needsKvm } from '../../kvm/testing.js';
import { DaemonClient } from '../daemon/client.js';
import { SocketClient } from '../xenstored/client.js';
import { listHeader, uptimeHeader } from './format.js';
import { havePeer, which } from '../../testing/peers.js';
import { DEFAULT_WAIT_MS, until as waitUntil, within } from '../../testing/wait.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const XENODE_JS = path.resolve(here, '..', 'xenode.js');
const XL_JS = path.resolve(here, 'xl.js');
const GUESTS = path.resolve(here, '..', '..', '..', '..', 'guests', 'build');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xl-e2e-'));
const SOCK = path.join(dir, 'xenode.sock');
const env = { ...process.env, XENODE_SOCKET: SOCK, XENODE_STATE_DIR: path.join(dir, 'state') };
let daemon: ChildProcess | undefined;
let daemonLog = '';

interface Run { code: number | null; out: string; err: string }

function xl(...argv: string[]): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [XL_JS, ...argv], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    p.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    p.on('close', (code) => resolve({ code, out, err }));
  });
}

function cfgFile(name: string, body: string): string {
  const f = path.join(dir, `${name}.cfg`);
  fs.writeFileSync(f, body);
  return f;
}

interface Row { name: string; domid: number; mem: number; vcpus: number; state: string; time: number }

/** Parses `xl list` by its fixed columns. */
function parseList(out: string): Row[] {
  const lines = out.trimEnd().split('\n');
  assert.equal(lines[0], listHeader());
  return lines.slice(1).map((l) => {
    const m = /^(.*?)\s+(\d+)\s+(\d+)\s+(\d+)\s+([-rbpscwSd?]{6})\s+([\d.]+)$/.exec(l);
    assert.ok(m, `unparsable row: ${JSON.stringify(l)}`);
    return { name: m[1]!, domid: Number(m[2]), mem: Number(m[3]), vcpus: Number(m[4]), state: m[5]!, time: Number(m[6]) };
  });
}

async function list(): Promise<Row[]> {
  const r = await xl('list');
  assert.equal(r.code, 0, r.err);
  return parseList(r.out);
}

/** Resolves with what `fn` gives once it gives something (not undefined); bounded, says what never came. */
async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = DEFAULT_WAIT_MS): Promise<T> {
  const got = await waitUntil(what, async (): Promise<{ v: T } | undefined> => { const v = await fn(); return v === undefined ? undefined : { v }; }, ms);
  return got.v;
}

/** A client of the daemon's xenstore socket. */
async function xenstore(): Promise<SocketClient> {
  const c = await DaemonClient.connect(SOCK);
  try {
    return await SocketClient.connect((await c.call('xenstore.socket', {})).path);
  } finally {
    c.close();
  }
}

const idleCfg = (name: string, extra = ''): string =>
  cfgFile(name, `name = "${name}"\ntype = "pvh"\nkernel = "${path.join(GUESTS, 'idle.elf')}"\nmemory = 16\ncmdline = "console=pv"\n${extra}`);

describe('xl against a running daemon', needsKvm(), () => {
  before(async () => {
    daemon = spawn(process.execPath, [XENODE_JS, 'daemon'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    daemon.stdout!.on('data', (b: Buffer) => { daemonLog += b.toString(); });
    daemon.stderr!.on('data', (b: Buffer) => { daemonLog += b.toString(); });
    await until('the daemon socket', async () => {
      if (daemon!.exitCode !== null) throw new Error(`daemon exited ${daemon!.exitCode}: ${daemonLog}`);
      try { (await DaemonClient.connect(SOCK)).close(); return true; } catch { return undefined; }
    }, 20_000);
  });

  after(async () => {
    if (daemon && daemon.exitCode === null) {
      const exited = new Promise((r) => daemon!.once('exit', r));
      daemon.kill('SIGTERM');
      try {
        await within('the daemon exiting on SIGTERM', exited);
      } finally {
        daemon.kill('SIGKILL');
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('list on a fresh daemon: the header, then Domain-0 (the daemon) alone', async () => {
    const rows = await list();
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.name, 'Domain-0');
    assert.equal(rows[0]!.domid, 0);
    assert.equal(rows[0]!.state, 'r-----');
    assert.ok(rows[0]!.vcpus >= 1);
  });

  test('create, list, domid/domname, console log, destroy', async () => {
    const f = idleCfg('e2e-idle');
    const c = await xl('create', f);
    assert.equal(c.code, 0, c.err);
    assert.equal(c.err, `Parsing config from ${f}\n`);
    const rows = await list();
    const row = rows.find((r) => r.name === 'e2e-idle');
    assert.ok(row, JSON.stringify(rows));
    assert.equal(rows[0]!.name, 'Domain-0');
    assert.equal(row.mem, 16);
    assert.equal(row.vcpus, 1);
    assert.equal((await xl('domid', 'e2e-idle')).out, `${row.domid}\n`);
    assert.equal((await xl('domname', String(row.domid))).out, 'e2e-idle\n');
    // list <dom> and -v
    const one = await xl('list', '-v', 'e2e-idle');
    assert.equal(one.code, 0);
    assert.match(one.out.split('\n')[1]!, /^e2e-idle\s+\d+\s+16\s+1\s+[r-][b-]----\s+[\d.]+ [0-9a-f-]{36}\s+-\s+-$/);
    const d = await xl('destroy', 'e2e-idle');
    assert.deepEqual(d, { code: 0, out: '', err: '' });
    assert.equal((await list()).find((r) => r.name === 'e2e-idle'), undefined);
  });

  test('unknown domains: xl\'s messages and exit 1', async () => {
    assert.deepEqual(await xl('destroy', 'nosuch'), { code: 1, out: '', err: 'nosuch is an invalid domain identifier (rc=-6)\n' });
    // digits are a domid taken as they are (libxl_domain_qualifier_to_domid): the command meets the missing domain
    assert.deepEqual(await xl('pause', '999'), { code: 1, out: '', err: 'xl: no domain with id 999\n' });
    assert.deepEqual(await xl('domid', 'nosuch'), { code: 1, out: '', err: "Can't get domid of domain name 'nosuch', maybe this domain does not exist.\n" });
    assert.deepEqual(await xl('domname', '999'), { code: 1, out: '', err: "Can't get domain name of domain id '999', maybe this domain does not exist.\n" });
    assert.deepEqual(await xl('domname', 'abc'), { code: 1, out: '', err: 'Invalid domain id.\n\n' });
    const d0 = await xl('destroy', '0');
    assert.equal(d0.code, 1);
    assert.match(d0.err, /^Not destroying domain 0; use -f to force\./);
  });

  test('pause/unpause show in the state flags; rename keeps the domid', async () => {
    assert.equal((await xl('create', '-q', idleCfg('e2e-p'))).code, 0);
    const id = (await list()).find((r) => r.name === 'e2e-p')!.domid;
    assert.deepEqual(await xl('pause', 'e2e-p'), { code: 0, out: '', err: '' });
    assert.match((await list()).find((r) => r.domid === id)!.state, /^--p---$|^-bp---$/);
    assert.equal((await xl('unpause', String(id))).code, 0);
    assert.doesNotMatch((await list()).find((r) => r.domid === id)!.state, /p/);
    assert.equal((await xl('rename', 'e2e-p', 'e2e-q')).code, 0);
    assert.equal((await xl('domid', 'e2e-q')).out, `${id}\n`);
    const taken = await xl('rename', 'e2e-q', 'Domain-0');
    assert.equal(taken.code, 1);
    assert.match(taken.err, /Can't rename domain 'e2e-q'\.\n$/);
    assert.equal((await xl('destroy', 'e2e-q')).code, 0);
  });

  test('create -p leaves it paused; a duplicate name is refused with the daemon\'s reason', async () => {
    const f = idleCfg('e2e-paused');
    assert.equal((await xl('create', '-q', '-p', f)).code, 0);
    assert.equal((await list()).find((r) => r.name === 'e2e-paused')!.state, '--p---');
    const dup = await xl('create', '-q', f);
    assert.equal(dup.code, 3);
    assert.match(dup.err, /^xl: .*e2e-paused/);
    assert.equal((await xl('destroy', 'e2e-paused')).code, 0);
  });

  test('hello powers off and is gone (on_poweroff=destroy); its console lines are printed by create -c', async () => {
    const f = cfgFile('e2e-hello', `name = "e2e-hello"\ntype = "pvh"\nkernel = "${path.join(GUESTS, 'hello.elf')}"\nmemory = 16\n`);
    const r = await xl('create', '-c', f);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /Hello from xenode guest \(PV console\)/);
    await until('hello gone', async () => ((await list()).some((x) => x.name === 'e2e-hello') ? undefined : true));
  });

  test('on_crash="restart": the crashed domain comes back under its name with a new domid, until the daemon gives up', async () => {
    // crash.elf triple-faults at once; the daemon restarts it every 2 s up to
    // 5 times a minute, then leaves it shut down (crash): that last one stays in the list
    const before = Math.max(...(await list()).map((r) => r.domid));
    const f = cfgFile('e2e-crash', `name = "e2e-crash"\ntype = "pvh"\nkernel = "${path.join(GUESTS, 'crash.elf')}"\nmemory = 16\non_crash = "restart"\n`);
    assert.equal((await xl('create', '-q', f)).code, 0);
    const last = await until('the crash loop to be left shut down', async () => (await list()).find((x) => x.name === 'e2e-crash' && x.state === '---sc-'), 30_000);
    // the first incarnation had domid before+1: the one left is a later one, same name
    assert.ok(last.domid > before + 1, `domid ${last.domid} after ${before}`);
    assert.equal((await list()).filter((x) => x.name === 'e2e-crash').length, 1);
    assert.match((await xl('list', '-v', 'e2e-crash')).out, / {8}3 +-\n$/);
    assert.equal((await xl('destroy', 'e2e-crash')).code, 0);
  });

  test('shutdown: refused without a PV control interface (as libxl\'s NOPARAVIRT), written to control/shutdown with one', async () => {
    assert.equal((await xl('create', '-q', idleCfg('e2e-sd'))).code, 0);
    const id = (await list()).find((r) => r.name === 'e2e-sd')!.domid;
    const xs = await xenstore();
    try {
      // idle.elf never advertises control/feature-poweroff
      const no = await xl('shutdown', 'e2e-sd');
      assert.equal(no.code, 1);
      assert.equal(no.err, `Shutting down domain ${id}\nPV control interface not available: external graceful shutdown not possible.\n` +
        'Use "-F" to force it (xenode has no ACPI event to fall back to).\nshutdown failed (rc=-10)\n');
      // advertise it as a PV guest would, then the request lands in control/shutdown
      await xs.write(`/local/domain/${id}/control/feature-poweroff`, '1');
      assert.deepEqual(await xl('shutdown', 'e2e-sd'), { code: 0, out: '', err: `Shutting down domain ${id}\n` });
      assert.equal(await xs.read(`/local/domain/${id}/control/shutdown`), 'poweroff');
    } finally {
      xs.close();
      assert.equal((await xl('destroy', 'e2e-sd')).code, 0);
    }
  });

  test('xenstore-ls, -write, -read and -exists passthroughs reach the daemon\'s xenstore', async (t) => {
    if (!havePeer(t, which('xenstore-ls') !== null, 'xenstore-utils', 'apt-get install xenstore-utils')) return;
    assert.equal((await xl('create', '-q', idleCfg('e2e-xs'))).code, 0);
    const id = (await list()).find((r) => r.name === 'e2e-xs')!.domid;
    try {
      const ls = await xl('xenstore-ls', `/local/domain/${id}`);
      assert.equal(ls.code, 0, ls.err);
      assert.match(ls.out, /^name = "e2e-xs"$/m);
      assert.match(ls.out, new RegExp(`^domid = "${id}"$`, 'm'));
      assert.match(ls.out, /^control = ""$/m);
      assert.deepEqual(await xl('xenstore-write', `/local/domain/${id}/data/k`, 'v'), { code: 0, out: '', err: '' });
      assert.deepEqual(await xl('xenstore-read', `/local/domain/${id}/data/k`), { code: 0, out: 'v\n', err: '' });
      assert.equal((await xl('xenstore-exists', `/local/domain/${id}/data/k`)).code, 0);
      assert.equal((await xl('xenstore-exists', `/local/domain/${id}/nosuch`)).code, 1);
    } finally {
      assert.equal((await xl('destroy', 'e2e-xs')).code, 0);
    }
  });

  test('shutdown -F -w of a guest without a PV control interface: forced, waited for, gone (on_poweroff=destroy)', async () => {
    assert.equal((await xl('create', '-q', idleCfg('e2e-sf'))).code, 0);
    const id = (await list()).find((r) => r.name === 'e2e-sf')!.domid;
    const r = await xl('shutdown', '-F', '-w', 'e2e-sf');
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, new RegExp(`^Shutting down domain ${id}\nWaiting for 1 domains\nDomain ${id} has been (shut down, reason code 0|destroyed)\n$`));
    await until('it is gone', async () => ((await list()).some((x) => x.name === 'e2e-sf') ? undefined : true));
  });

  test('vcpu-list, vcpu-pin, info, uptime, dmesg, top -b', async () => {
    assert.equal((await xl('create', '-q', idleCfg('e2e-v'))).code, 0);
    // create returns once the domain is built; a pCPU worker takes its vCPU
    // up a moment later (on a loaded host, many moments)
    const vl = await until('e2e-v\'s vCPU 0 on a pCPU in vcpu-list', async () => {
      const r = await xl('vcpu-list', 'e2e-v');
      return /^e2e-v\s+\d+\s+0\s+\d+\s/m.test(r.out) ? r : undefined;
    });
    assert.equal(vl.code, 0, vl.err);
    const [head, row] = vl.out.trimEnd().split('\n');
    assert.equal(head, 'Name                                ID  VCPU   CPU State   Time(s) Affinity (Hard / Soft)');
    assert.match(row!, /^e2e-v\s+\d+\s+0\s+\d+\s+[r-][b-]-\s+[\d.]+ {2}all \/ all$/);
    // a hard affinity that keeps the pCPU the vCPU is on is set; one that leaves it out moves a KVM vCPU into
    // it and is refused for a software-CPU one (its domain's vCPUs share a worker)
    const at = Number(/^e2e-v\s+\d+\s+0\s+(\d+)\s/m.exec(vl.out)![1]);
    assert.equal((await xl('vcpu-pin', 'e2e-v', '0', String(at))).code, 0);
    assert.match((await xl('vcpu-list', 'e2e-v')).out, new RegExp(` {2}${at} \\/ all\\n$`));
    const nrCpus = Number(/^nr_cpus\s+: (\d+)$/m.exec((await xl('info')).out)![1]);
    if (nrCpus > 1) {
      const other = (at + 1) % nrCpus;
      const accel = (JSON.parse((await xl('list', '-l', 'e2e-v')).out) as { xenode_accel: string }[])[0]!.xenode_accel;
      const away = await xl('vcpu-pin', 'e2e-v', '0', String(other));
      if (/^kvm\b/.test(accel) && !/tcg/.test(accel)) {
        assert.equal(away.code, 0, away.err);
        assert.match((await xl('vcpu-list', 'e2e-v')).out, new RegExp(`^e2e-v\\s+\\d+\\s+0\\s+${other}\\s.* {2}${other} \\/ all\\n$`, 'm'), 'moved there');
      } else {
        assert.equal(away.code, 1);
        assert.match(away.err, new RegExp(`vCPU 0 of domain \\d+ runs on pCPU ${at}, which the hard affinity ${other} leaves out: a software-CPU domain's vCPUs share one worker and are not moved\\nCould not set affinity for vcpu \`0'\\.\\n$`));
        assert.match((await xl('vcpu-list', 'e2e-v')).out, new RegExp(` {2}${at} \\/ all\\n$`), 'unchanged');
      }
    }
    const badPin = await xl('vcpu-pin', 'e2e-v', '0', '99');
    assert.equal(badPin.code, 1);
    assert.match(badPin.err, /CPU 99 does not exist/);

    const info = await xl('info');
    assert.equal(info.code, 0);
    assert.match(info.out, /^host {19}: \S+/m);
    assert.match(info.out, /^nr_cpus {16}: \d+$/m);
    assert.match(info.out, /^cpu_mhz {16}: [1-9]\d*\.\d{3}$/m, 'the TSC rate, as Xen reports its cpu_khz');
    assert.match(info.out, /^xend_config_format {5}: 4\n$/m);
    assert.match((await xl('info', 'nr_cpus')).out, /^\d+\n$/);

    const up = await xl('uptime');
    assert.equal(up.out.split('\n')[0], uptimeHeader());
    assert.match(up.out.split('\n')[1]!, /^Domain-0 +0 +\d+:\d\d:\d\d$/);
    assert.ok(up.out.split('\n')[1]!.startsWith(`${'Domain-0'.padEnd(33)}    0 `));
    assert.match(up.out, /^e2e-v\s+\d+\s+0:00:\d\d$/m);

    const dm = await xl('dmesg');
    assert.equal(dm.code, 0);

    const top = await xl('top', '-b', '-i', '2', '-d', '0.2');
    assert.equal(top.code, 0, top.err);
    const screens = top.out.split(/^xentop - /m).filter(Boolean);
    assert.equal(screens.length, 2);
    assert.match(top.out, /^ +NAME +STATE +CPU\(sec\) CPU\(%\) +MEM\(k\) MEM\(%\) +MAXMEM\(k\) MAXMEM\(%\) VCPUS$/m);
    assert.match(top.out, /^ +e2e-v --[b-]--[r-] +\d+ +[\d.]+ +16384 /m);
    assert.equal((await xl('destroy', 'e2e-v')).code, 0);
  });

  test('vcpu-set writes cpu/N/availability for every vCPU as libxl does; sysrq writes control/sysrq', async () => {
    assert.equal((await xl('create', '-q', idleCfg('e2e-vs', 'vcpus = 1\nmaxvcpus = 4\n'))).code, 0);
    const id = (await list()).find((r) => r.name === 'e2e-vs')!.domid;
    const xs = await xenstore();
    const avail = async () => Promise.all([0, 1, 2, 3].map((i) => xs.read(`/local/domain/${id}/cpu/${i}/availability`)));
    try {
      assert.deepEqual(await avail(), ['online', 'offline', 'offline', 'offline'], 'vcpus online of maxvcpus at create');
      const host = Number((await xl('info', 'nr_cpus')).out);
      assert.deepEqual(await xl('vcpu-set', 'e2e-vs', '2'), { code: 0, out: '', err: '' });
      assert.deepEqual(await avail(), ['online', 'online', 'offline', 'offline']);
      if (host < 4) {
        // xl's overcommit check: more than online and more than the host has, unless -i
        assert.deepEqual(await xl('vcpu-set', 'e2e-vs', '4'), { code: 1, out: '', err: `You are overcommmitting! You have ${host} physical CPUs and want 4 vCPUs! Aborting, use --ignore-host to continue\n` });
        assert.deepEqual(await avail(), ['online', 'online', 'offline', 'offline'], 'unchanged');
      }
      assert.deepEqual(await xl('vcpu-set', '-i', 'e2e-vs', '4'), { code: 0, out: '', err: '' });
      assert.deepEqual(await avail(), ['online', 'online', 'online', 'online']);
      assert.deepEqual(await xl('vcpu-set', '--ignore-host', String(id), '1'), { code: 0, out: '', err: '' });
      assert.deepEqual(await avail(), ['online', 'offline', 'offline', 'offline']);
      const tooMany = await xl('vcpu-set', '-i', 'e2e-vs', '5');
      assert.equal(tooMany.code, 1);
      assert.equal(tooMany.err, `xl: Requested 5 VCPUs, however maxcpus is 4!\nlibxl_set_vcpuonline failed domid=${id} max_vcpus=5, rc: -6\n`);
      assert.equal((await xl('vcpu-set', 'e2e-vs', '0')).err, `xl: Requested 0 VCPUs!\nlibxl_set_vcpuonline failed domid=${id} max_vcpus=0, rc: -6\n`);
      assert.deepEqual(await xl('vcpu-set', 'e2e-vs', 'x'), { code: 1, out: '', err: 'Error: Invalid argument.\n' });
      assert.deepEqual(await avail(), ['online', 'offline', 'offline', 'offline'], 'refusals change nothing');

      assert.deepEqual(await xl('sysrq', 'e2e-vs', 's'), { code: 0, out: '', err: '' });
      assert.equal(await xs.read(`/local/domain/${id}/control/sysrq`), 's');
      const bad = await xl('sysrq', 'e2e-vs', 'ab');
      assert.equal(bad.code, 1);
      assert.equal(bad.err, 'Invalid sysrq.\n\n');
      assert.match(bad.out, /^Usage: xl \[-vtTf\] sysrq <Domain> <letter>\n/);
      assert.equal(await xs.read(`/local/domain/${id}/control/sysrq`), 's', 'unchanged');
    } finally {
      xs.close();
      assert.equal((await xl('destroy', 'e2e-vs')).code, 0);
    }
  });

  test('list -l: JSON array of {domid, config}', async () => {
    assert.equal((await xl('create', '-q', idleCfg('e2e-l'))).code, 0);
    const r = await xl('list', '-l');
    const arr = JSON.parse(r.out) as { domid: number; config: { name: string; memory: number }; xenode_accel: string }[];
    const e = arr.find((x) => x.config.name === 'e2e-l');
    assert.ok(e);
    assert.equal(e.config.memory, 16);
    assert.match(e.xenode_accel, /^(kvm|tcg|kvm\+tcg)\b/, 'which CPU runs it');
    assert.ok(!arr.some((x) => x.domid === 0));
    assert.equal((await xl('destroy', 'e2e-l')).code, 0);
  });

  test('console through a pty: output shown, Ctrl-] detaches with status 0, the domain keeps running', async (t) => {
    if (!havePeer(t, !spawnSync('script', ['--version']).error, 'util-linux script', 'apt-get install bsdutils')) return;
    assert.equal((await xl('create', '-q', idleCfg('e2e-con'))).code, 0);
    const p = spawn('script', ['-qfec', `${process.execPath} ${XL_JS} console e2e-con`, '/dev/null'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (b: Buffer) => { out += b.toString('latin1'); });
    p.stderr.on('data', (b: Buffer) => { out += b.toString('latin1'); });
    const exited = new Promise<number | null>((r) => p.on('close', r));
    await until('the guest line', async () => (out.includes('idle: blocking') ? true : undefined));
    p.stdin.write('typed\r');
    p.stdin.write(Buffer.from([0x1d]));
    let code: number | null;
    try {
      code = await within('xl console exiting on Ctrl-]', exited);
    } finally {
      p.kill('SIGKILL');
    }
    assert.equal(code, 0, out);
    // the terminal came back out of raw mode: script restores it, but our own restore must have run without error
    assert.doesNotMatch(out, /Error|xl:/);
    assert.ok((await list()).some((r) => r.name === 'e2e-con'));
    assert.equal((await xl('destroy', 'e2e-con')).code, 0);
  });
});
