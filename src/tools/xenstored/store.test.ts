// Every message type and its error paths, through the in-process dom0 connection.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fixture, raw, type Fixture } from './helpers.js';
import { XsType } from './wire.js';

let f: Fixture;
before(async () => {
  f = await fixture();
});
after(async () => {
  await f.close();
});

describe('READ / WRITE', () => {
  test('write creates parents and read returns the value without a NUL', async () => {
    await f.dom0.write('/t/rw/a/b', 'hello');
    assert.equal(await f.dom0.read('/t/rw/a/b'), 'hello');
    assert.equal(await f.dom0.read('/t/rw/a'), '');
    assert.equal(await raw(f.dom0, XsType.READ, '/t/rw/a/b\0'), 'OK hello');
  });
  test('values are binary and may contain NULs; empty values are fine', async () => {
    const v = Buffer.from([0, 1, 2, 0, 255]);
    await f.dom0.write('/t/rw/bin', v);
    assert.deepEqual(await f.dom0.readBuffer('/t/rw/bin'), v);
    await f.dom0.write('/t/rw/empty', '');
    assert.equal(await f.dom0.read('/t/rw/empty'), '');
  });
  test('largest value that fits in a payload', async () => {
    const v = Buffer.alloc(4096 - '/t/rw/big\0'.length, 0x61);
    await f.dom0.write('/t/rw/big', v);
    assert.equal((await f.dom0.readBuffer('/t/rw/big')).length, v.length);
  });
  test('ENOENT for a missing node', async () => {
    assert.equal(await raw(f.dom0, XsType.READ, '/t/rw/none\0'), 'ERROR ENOENT|');
  });
  test('WRITE without a separator is EINVAL', async () => {
    assert.equal(await raw(f.dom0, XsType.WRITE, '/t/rw/x'), 'ERROR EINVAL|');
  });
  test('relative paths live under /local/domain/0 for dom0', async () => {
    await f.dom0.write('rel/x', '1');
    assert.equal(await f.dom0.read('/local/domain/0/rel/x'), '1');
  });
  test('path rules: characters, //, trailing /, lengths', async () => {
    for (const bad of ['/t/a b', '/t//x', '/t/x/', '/t/ä', '@foo', '/t/x.y', '', '/t/a:b']) {
      assert.equal(await raw(f.dom0, XsType.WRITE, `${bad}\0v`), 'ERROR EINVAL|', bad);
    }
    await f.dom0.write('/t/ok-_@/Z9', 'v');
    const longAbs = `/t/${'a'.repeat(3072 - 3)}`;
    assert.equal(longAbs.length, 3072);
    assert.equal(await raw(f.dom0, XsType.READ, `${longAbs}\0`), 'ERROR ENOENT|');
    assert.equal(await raw(f.dom0, XsType.READ, `${longAbs}a\0`), 'ERROR EINVAL|');
    assert.equal(await raw(f.dom0, XsType.READ, `${'a'.repeat(2048)}\0`), 'ERROR ENOENT|');
    assert.equal(await raw(f.dom0, XsType.READ, `${'a'.repeat(2049)}\0`), 'ERROR EINVAL|');
  });
  test('a single-argument request with data after the NUL is EINVAL', async () => {
    assert.equal(await raw(f.dom0, XsType.READ, '/t\0junk'), 'ERROR EINVAL|');
  });
});

describe('MKDIR / RM / DIRECTORY', () => {
  test('mkdir creates an empty node; again is fine', async () => {
    await f.dom0.mkdir('/t/md/x/y');
    await f.dom0.mkdir('/t/md/x/y');
    assert.equal(await f.dom0.read('/t/md/x/y'), '');
    assert.deepEqual(await f.dom0.directory('/t/md/x'), ['y']);
  });
  test('directory lists children in creation order', async () => {
    for (const k of ['c', 'a', 'b']) await f.dom0.write(`/t/dir/${k}`, k);
    assert.deepEqual(await f.dom0.directory('/t/dir'), ['c', 'a', 'b']);
    assert.equal(await raw(f.dom0, XsType.DIRECTORY, '/t/dir\0'), 'OK c|a|b|');
    assert.deepEqual(await f.dom0.directory('/t/dir/a'), []);
    assert.equal(await raw(f.dom0, XsType.DIRECTORY, '/t/nodir\0'), 'ERROR ENOENT|');
  });
  test('rm is recursive; a missing node with a parent is fine; no parent is ENOENT', async () => {
    await f.dom0.write('/t/rm/a/b/c', '1');
    await f.dom0.rm('/t/rm/a');
    assert.deepEqual(await f.dom0.directory('/t/rm'), []);
    await f.dom0.rm('/t/rm/a');
    assert.equal(await raw(f.dom0, XsType.RM, '/t/rm/a/b\0'), 'ERROR ENOENT|');
    assert.equal(await raw(f.dom0, XsType.RM, '/\0'), 'ERROR EINVAL|');
  });
  test('directory over a payload is E2BIG; DIRECTORY_PART pages through it', async () => {
    const names: string[] = [];
    for (let i = 0; i < 300; i++) names.push(`child-number-${String(i).padStart(4, '0')}`);
    await f.dom0.transaction(async (tx) => {
      for (const n of names) await f.dom0.write(`/t/big/${n}`, '', tx);
    });
    assert.equal(await raw(f.dom0, XsType.DIRECTORY, '/t/big\0'), 'ERROR E2BIG|');
    const got: string[] = [];
    let off = 0;
    let gen: string | null = null;
    for (let i = 0; i < 10; i++) {
      const p = await f.dom0.directoryPart('/t/big', off);
      if (gen === null) gen = p.gen;
      assert.equal(p.gen, gen);
      got.push(...p.names);
      off += p.names.reduce((s, n) => s + n.length + 1, 0);
      if (p.complete) break;
    }
    assert.deepEqual(got, names);
    const past = await raw(f.dom0, XsType.DIRECTORY_PART, `/t/big\0${off + 10}\0`);
    assert.equal(past, `OK ${gen}||`);
    assert.equal(await raw(f.dom0, XsType.DIRECTORY_PART, '/t/big\0'), 'ERROR EINVAL|');
    assert.equal(await raw(f.dom0, XsType.DIRECTORY_PART, '/t/big\0x\0'), 'ERROR EINVAL|');
  });
  test('DIRECTORY_PART on a small node returns everything plus the end marker', async () => {
    await f.dom0.write('/t/dp/a', '');
    await f.dom0.write('/t/dp/bb', '');
    const r = await raw(f.dom0, XsType.DIRECTORY_PART, '/t/dp\x000\x00');
    assert.match(r, /^OK \d+\|a\|bb\|\|$/);
  });
});

describe('GET_PERMS / SET_PERMS', () => {
  test('nodes inherit the parent ACL; set/get round-trips', async () => {
    await f.dom0.write('/t/p/a', '');
    assert.deepEqual(await f.dom0.getPerms('/t/p/a'), ['n0']);
    await f.dom0.setPerms('/t/p/a', ['n5', 'r6', 'w7', 'b8']);
    assert.deepEqual(await f.dom0.getPerms('/t/p/a'), ['n5', 'r6', 'w7', 'b8']);
    await f.dom0.write('/t/p/a/child', '');
    assert.deepEqual(await f.dom0.getPerms('/t/p/a/child'), ['n5', 'r6', 'w7', 'b8']);
  });
  test('malformed permissions are EINVAL; missing node ENOENT', async () => {
    await f.dom0.write('/t/p/b', '');
    for (const bad of ['/t/p/b\0', '/t/p/b\0x1\0', '/t/p/b\0r\0', '/t/p/b\0r1x\0', '/t/p/b\0r70000\0']) {
      assert.equal(await raw(f.dom0, XsType.SET_PERMS, bad), 'ERROR EINVAL|', bad);
    }
    assert.equal(await raw(f.dom0, XsType.SET_PERMS, '/t/p/none\0r0\0'), 'ERROR ENOENT|');
    assert.equal(await raw(f.dom0, XsType.GET_PERMS, '/t/p/none\0'), 'ERROR ENOENT|');
  });
  test('special nodes have perms too', async () => {
    assert.deepEqual(await f.dom0.getPerms('@releaseDomain'), ['n0']);
    await f.dom0.setPerms('@releaseDomain', ['n0', 'r9']);
    assert.deepEqual(await f.dom0.getPerms('@releaseDomain'), ['n0', 'r9']);
    await f.dom0.setPerms('@releaseDomain', ['n0']);
    assert.equal(await raw(f.dom0, XsType.GET_PERMS, '@nosuch\0'), 'ERROR ENOENT|');
  });
});

describe('domain messages', () => {
  test('GET_DOMAIN_PATH', async () => {
    assert.equal(await f.dom0.getDomainPath(7), '/local/domain/7');
    assert.equal(await raw(f.dom0, XsType.GET_DOMAIN_PATH, 'x\0'), 'ERROR EINVAL|');
    assert.equal(await raw(f.dom0, XsType.GET_DOMAIN_PATH, '32752\0'), 'ERROR EINVAL|');
  });
  test('INTRODUCE / IS_DOMAIN_INTRODUCED / RESUME / RELEASE', async () => {
    assert.equal(await f.dom0.isDomainIntroduced(0), true);
    assert.equal(await f.dom0.isDomainIntroduced(21), false);
    assert.equal(await raw(f.dom0, XsType.RESUME, '21\0'), 'ERROR ENOENT|');
    assert.equal(await raw(f.dom0, XsType.RELEASE, '21\0'), 'ERROR ENOENT|');
    await f.guest(21);
    assert.equal(await f.dom0.isDomainIntroduced(21), true);
    await f.dom0.resume(21);
    await f.dom0.release(21);
    assert.equal(await f.dom0.isDomainIntroduced(21), false);
  });
  test('INTRODUCE argument errors and a ring that cannot be mapped', async () => {
    assert.equal(await raw(f.dom0, XsType.INTRODUCE, '22\0'), 'ERROR EINVAL|');
    assert.equal(await raw(f.dom0, XsType.INTRODUCE, 'x\0\x31\0\x32\0'), 'ERROR EINVAL|');
    assert.equal(await raw(f.dom0, XsType.INTRODUCE, '22\0zz\0\x32\0'), 'ERROR EINVAL|');
    assert.equal(await raw(f.dom0, XsType.INTRODUCE, '0\0\x31\0\x32\0'), 'ERROR EINVAL|');
    // No ring registered for domain 23 in the fixture: mapDomainRing returns null.
    assert.equal(await raw(f.dom0, XsType.INTRODUCE, '23\0-1\0\x35\0'), 'ERROR EINVAL|');
  });
  test('SET_TARGET needs both domains', async () => {
    assert.equal(await raw(f.dom0, XsType.SET_TARGET, '31\0\x33\x32\0'), 'ERROR ENOENT|');
    assert.equal(await raw(f.dom0, XsType.SET_TARGET, '31\0'), 'ERROR EINVAL|');
    await f.guest(31);
    await f.guest(32);
    await f.dom0.setTarget(31, 32);
    await f.dom0.release(31);
    await f.dom0.release(32);
  });
  test('GET_FEATURE / SET_FEATURE', async () => {
    assert.equal(await f.dom0.getFeature(), 7);
    const g = await f.guest(41);
    assert.equal(await f.dom0.getFeature(41), 7);
    assert.equal(g.field(2064), 7);
    await f.dom0.setFeature(41, 1);
    assert.equal(await f.dom0.getFeature(41), 1);
    assert.equal(g.field(2064), 1);
    assert.equal(await raw(f.dom0, XsType.SET_FEATURE, '41\0\x36\x34\0'), 'ERROR EINVAL|');
    assert.equal(await raw(f.dom0, XsType.GET_FEATURE, '42\0'), 'ERROR ENOENT|');
    await f.dom0.release(41);
  });
  test('GET_QUOTA / SET_QUOTA', async () => {
    assert.match(await f.dom0.getQuota(), /^nodes watches transactions outstanding transaction-nodes memory/);
    assert.equal(await f.dom0.getQuota('nodes'), '1000');
    assert.equal(await f.dom0.getQuota('watches'), '128');
    assert.equal(await raw(f.dom0, XsType.GET_QUOTA, 'bogus\0'), 'ERROR EINVAL|');
    await f.guest(51);
    await f.dom0.setQuota('nodes', 5, 51);
    assert.equal(await f.dom0.getQuota('nodes', 51), '5');
    assert.equal(await f.dom0.getQuota('nodes'), '1000');
    assert.equal(await raw(f.dom0, XsType.SET_QUOTA, '52\0nodes\0\x35\0'), 'ERROR ENOENT|');
    await f.dom0.setQuota('watches', 100);
    assert.equal(await f.dom0.getQuota('watches'), '100');
    assert.equal(await f.dom0.getQuota('watches', 51), '100');
    await f.dom0.setQuota('watches', 128);
    await f.dom0.release(51);
  });
});

describe('CONTROL', () => {
  test('help, log, print, check, memreport, quota', async () => {
    assert.match(await f.dom0.control('help'), /memreport/);
    assert.equal(await f.dom0.control('log'), 'off');
    assert.equal(await f.dom0.control('log', 'on'), 'OK');
    await f.dom0.read('/tool');
    assert.equal(await f.dom0.control('log', 'off'), 'OK');
    assert.ok(f.logs.some((l) => l.includes('IN ') && l.includes('READ')));
    await f.dom0.control('print', 'hello', 'log');
    assert.ok(f.logs.includes('hello log'));
    assert.equal(await f.dom0.control('check'), 'OK');
    const mr = await f.dom0.control('memreport');
    assert.match(mr, /^nodes: \d+/);
    assert.match(mr, /domain 0: nodes \d+ memory \d+/);
    assert.match(await f.dom0.control('quota'), /nodes: 1000\nwatches: 128\n/);
    assert.equal(await f.dom0.control('quota', 'set', 'nodes', '2000'), 'OK');
    assert.match(await f.dom0.control('quota'), /nodes: 2000/);
    await f.dom0.control('quota', 'set', 'nodes', '1000');
    assert.match(await f.dom0.control('quota-soft'), /memory-soft: 2097152/);
    assert.equal(await raw(f.dom0, XsType.CONTROL, 'nope\0'), 'ERROR EINVAL|');
    assert.equal(await raw(f.dom0, XsType.CONTROL, ''), 'ERROR EINVAL|');
  });
});

describe('protocol odds and ends', () => {
  test('unknown and server-only message types are EINVAL', async () => {
    for (const t of [XsType.WATCH_EVENT, XsType.ERROR, 20, 27, 0xffff, 0xffffffff]) {
      assert.equal(await raw(f.dom0, t, ''), 'ERROR EINVAL|', `type ${t}`);
    }
  });
  test('an unknown transaction id is ENOENT', async () => {
    assert.equal(await raw(f.dom0, XsType.READ, '/tool\0', 999), 'ERROR ENOENT|');
    assert.equal(await raw(f.dom0, XsType.TRANSACTION_END, 'T\0', 999), 'ERROR ENOENT|');
  });
  test('RESET_WATCHES drops watches and transactions', async () => {
    await f.dom0.watch('/t/rw', 'rw');
    const tx = await f.dom0.transactionStart();
    await f.dom0.resetWatches();
    assert.equal(await raw(f.dom0, XsType.UNWATCH, '/t/rw\0rw\0'), 'ERROR ENOENT|');
    assert.equal(await raw(f.dom0, XsType.READ, '/tool\0', tx), 'ERROR ENOENT|');
  });
  test('the store stays consistent', async () => {
    assert.deepEqual(f.d.store.check(), []);
  });
});

describe('embedding', () => {
  test('openClient gives the toolstack a privileged in-process client', async () => {
    const c = f.d.openClient();
    await c.write('/embed/x', '1');
    assert.equal(await c.read('/embed/x'), '1');
    assert.equal(c.domid, 0);
    c.close();
    await assert.rejects(c.read('/embed/x'), /closed/);
  });
  test('two daemons in one process share nothing', async () => {
    const { Xenstored } = await import('./daemon.js');
    const other = new Xenstored({ log: () => {} });
    await other.start();
    const c = other.openClient();
    assert.equal(await c.tryRead('/embed/x'), undefined);
    await other.stop();
  });
});
