// Real Xen clients, unchanged, against the daemon: Debian's xenstore-utils,
// Xen's own test-xenstore and xenstore-control (extracted from the
// xen-utils-4.17 deb by scripts/fetch-test-xenstore.sh), and python3-pyxs.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test, type TestContext } from 'node:test';
import { LocalClient } from './client.js';
import { Xenstored } from './daemon.js';
import { REPO_ROOT, tmpDir, which } from './helpers.js';
import { havePeer, pythonHas } from '../../testing/peers.js';
import { until, within } from '../../testing/wait.js';

const run = promisify(execFile);
const XEN_BIN = process.env['XENODE_XEN_UTILS_BIN'] ?? path.join(REPO_ROOT, '.cache', 'xen-utils', 'usr', 'lib', 'xen-4.17', 'bin');
const TEST_XENSTORE = path.join(XEN_BIN, 'test-xenstore');
const XENSTORE_CONTROL = path.join(XEN_BIN, 'xenstore-control');
const PYTHON = pythonHas('pyxs');

let d: Xenstored;
let dom0: LocalClient;
let env: NodeJS.ProcessEnv;
before(async () => {
  const sock = path.join(tmpDir(), 'socket');
  d = new Xenstored({ socketPath: sock, log: () => {} });
  await d.start();
  dom0 = new LocalClient(d);
  env = { ...process.env, XENSTORED_PATH: sock };
});
after(async () => {
  await d.stop();
});

async function sh(cmd: string, ...args: string[]): Promise<{ out: string; code: number; err: string }> {
  try {
    const r = await run(cmd, args, { env, timeout: 30000 });
    return { out: r.stdout, err: r.stderr, code: 0 };
  } catch (e) {
    const x = e as { stdout?: string; stderr?: string; code?: number };
    return { out: x.stdout ?? '', err: x.stderr ?? '', code: typeof x.code === 'number' ? x.code : -1 };
  }
}

/** Fails in CI, skips loudly elsewhere, when `bin` (a path or a command name) is not there. */
function have(bin: string, install: string, t: TestContext): boolean {
  return havePeer(t, path.isAbsolute(bin) ? fs.existsSync(bin) : which(bin) !== null, bin, install);
}
const UTILS = 'apt-get install xenstore-utils';

describe('xenstore-utils', () => {
  test('xenstore-write / -read', async (t) => {
    if (!have('xenstore-write', UTILS, t)) return;
    assert.equal((await sh('xenstore-write', '/xu/a', 'one', '/xu/b', 'two words')).code, 0);
    assert.equal((await sh('xenstore-read', '/xu/a', '/xu/b')).out, 'one\ntwo words\n');
    assert.equal(await dom0.read('/xu/b'), 'two words');
    const miss = await sh('xenstore-read', '/xu/none');
    assert.notEqual(miss.code, 0);
    await sh('xenstore-write', 'relative', 'r');
    assert.equal(await dom0.read('/local/domain/0/relative'), 'r');
  });
  test('xenstore-ls and xenstore-list', async (t) => {
    if (!have('xenstore-ls', UTILS, t)) return;
    await dom0.write('/xu/tree/x/y', '1');
    const ls = await sh('xenstore-ls', '/xu/tree');
    assert.equal(ls.out, 'x = ""\n y = "1"\n');
    const lsp = await sh('xenstore-ls', '-p', '/xu/tree');
    assert.match(lsp.out, /\(n0\)/);
    assert.equal((await sh('xenstore-list', '/xu')).out, 'a\nb\ntree\n');
  });
  test('xenstore-list of a directory too big for one reply (libxenstore falls back to DIRECTORY_PART)', async (t) => {
    if (!have('xenstore-list', UTILS, t)) return;
    const names = Array.from({ length: 300 }, (_, i) => `child-number-${i}`);
    await dom0.transaction(async (tx) => {
      for (const n of names) await dom0.write(`/xubig/${n}`, '', tx);
    });
    const r = await sh('xenstore-list', '/xubig');
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(r.out.trim().split('\n'), names);
    await dom0.rm('/xubig');
  });
  test('xenstore-exists', async (t) => {
    if (!have('xenstore-exists', UTILS, t)) return;
    assert.equal((await sh('xenstore-exists', '/xu/a')).code, 0);
    assert.equal((await sh('xenstore-exists', '/xu/nope')).code, 1);
  });
  test('xenstore-chmod (plain and recursive)', async (t) => {
    if (!have('xenstore-chmod', UTILS, t)) return;
    assert.equal((await sh('xenstore-chmod', '/xu/a', 'n1', 'r2')).code, 0);
    assert.deepEqual(await dom0.getPerms('/xu/a'), ['n1', 'r2']);
    assert.equal((await sh('xenstore-chmod', '-r', '/xu/tree', 'b3')).code, 0);
    assert.deepEqual(await dom0.getPerms('/xu/tree/x/y'), ['b3']);
  });
  test('xenstore-rm', async (t) => {
    if (!have('xenstore-rm', UTILS, t)) return;
    assert.equal((await sh('xenstore-rm', '/xu/tree')).code, 0);
    assert.equal(await dom0.tryRead('/xu/tree/x'), undefined);
  });
  test('xenstore-watch sees the initial event and later changes', async (t) => {
    if (!have('xenstore-watch', UTILS, t)) return;
    const p = spawn('xenstore-watch', ['-n', '3', '/xu/w'], { env });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    const done = new Promise<number | null>((r) => p.on('exit', r));
    try {
      await until('xenstore-watch printing its initial event', () => out.includes('/xu/w'));
      await dom0.write('/xu/w/k', '1');
      await dom0.write('/xu/w', '2');
      assert.equal(await within('xenstore-watch -n 3 exiting after three events', done), 0);
    } finally {
      p.kill();
    }
    assert.equal(out, '/xu/w\n/xu/w/k\n/xu/w\n');
  });
});

describe('test-xenstore (Xen 4.17)', () => {
  const why = 'run scripts/fetch-test-xenstore.sh';
  test('lists its 12 tests', async (t) => {
    if (!have(TEST_XENSTORE, why, t)) return;
    const r = await sh(TEST_XENSTORE, '-l');
    assert.equal(r.out.trim().split('\n').length, 12);
  });
  test('all 12 tests pass', async (t) => {
    if (!have(TEST_XENSTORE, why, t)) return;
    const r = await sh(TEST_XENSTORE);
    const lines = r.out.trim().split('\n');
    assert.equal(r.code, 0, r.out + r.err);
    assert.equal(lines.length, 12, r.out);
    for (const l of lines) assert.match(l, /^.{10}: \d+ ns$/, l);
  });
  test('all 12 tests pass 50 times over (-i 50)', async (t) => {
    if (!have(TEST_XENSTORE, why, t)) return;
    const r = await sh(TEST_XENSTORE, '-i', '50');
    assert.equal(r.code, 0, r.out + r.err);
    assert.doesNotMatch(r.out, /failed|Exhaustive/);
    assert.equal(r.out.trim().split('\n').length, 12);
  });
  test('random mix for 2 seconds', async (t) => {
    if (!have(TEST_XENSTORE, why, t)) return;
    const r = await sh(TEST_XENSTORE, '-r', '2');
    assert.equal(r.code, 0, r.out + r.err);
  });
  test('it works under /local/domain/0/xenstore-test and cleans up after itself', async (t) => {
    if (!have(TEST_XENSTORE, why, t)) return;
    // A watch on its directory proves the run used it (else "absent afterwards" would prove nothing).
    const seen: string[] = [];
    const onWatch = (e: { path: string; token: string }) => { if (e.token === 'xt') seen.push(e.path); };
    dom0.on('watch', onWatch);
    try {
      await dom0.watch('/local/domain/0/xenstore-test', 'xt');
      const r = await sh(TEST_XENSTORE, '-t', 'write 1');
      assert.equal(r.code, 0, r.out + r.err);
      await dom0.unwatch('/local/domain/0/xenstore-test', 'xt');
    } finally {
      dom0.off('watch', onWatch);
    }
    assert.ok(seen.some((p) => p.startsWith('/local/domain/0/xenstore-test/')), `test-xenstore wrote under its directory (events: ${seen.join(' ')})`);
    assert.equal(await dom0.tryRead('/local/domain/0/xenstore-test'), undefined);
  });
  test('xenstore-control: check, memreport, quota, log', async (t) => {
    if (!have(XENSTORE_CONTROL, why, t)) return;
    assert.equal((await sh(XENSTORE_CONTROL, 'check')).out.trim(), 'OK');
    assert.match((await sh(XENSTORE_CONTROL, 'memreport')).out, /^nodes: \d+/);
    assert.match((await sh(XENSTORE_CONTROL, 'quota')).out, /watches: 128/);
    assert.equal((await sh(XENSTORE_CONTROL, 'log', 'off')).code, 0);
    assert.notEqual((await sh(XENSTORE_CONTROL, 'bogus')).code, 0);
  });
});

describe('python3-pyxs', () => {
  test('a pyxs session: read, write, mkdir, ls, perms, transaction, watch, domain calls', async (t) => {
    if (!havePeer(t, PYTHON !== null, 'python3 with the pyxs module', 'apt-get install python3-pyxs') || !PYTHON) return;
    const script = `
import pyxs
from pyxs import Client, PyXSError
out = []
with Client() as c:
    c.write(b'/py/a', b'1')
    c[b'/py/b'] = b'two'
    c.mkdir(b'/py/dir')
    out.append(c.read(b'/py/a').decode())
    out.append(','.join(x.decode() for x in c.list(b'/py')))
    c.set_perms(b'/py/a', [b'n0', b'r3'])
    out.append(','.join(x.decode() for x in c.get_perms(b'/py/a')))
    out.append(str(c.exists(b'/py/none')))
    try:
        c.read(b'/py/none')
    except PyXSError as e:
        out.append('err:' + str(e.args[0]))
    c.transaction()
    c.write(b'/py/t', b'in-tx')
    c.commit()
    out.append(c[b'/py/t'].decode())
    out.append(c.get_domain_path(7).decode())
    out.append(str(c.is_domain_introduced(0)))
    m = c.monitor()
    m.watch(b'/py', b'tok')
    w = next(m.wait())
    out.append(w.path.decode() + '|' + w.token.decode())
    c.delete(b'/py/dir')
    out.append(','.join(x.decode() for x in c.list(b'/py')))
print(';'.join(out))
`;
    const r = await sh(PYTHON, '-c', script);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out.trim(), '1;a,b,dir;n0,r3;False;err:2;in-tx;/local/domain/7;True;/py|tok;a,b,t');
  });
});
