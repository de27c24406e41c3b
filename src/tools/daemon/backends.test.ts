// The daemon's driver domains beyond those a disk names: `--disk-backend
// NAME` / `--vif-backend NAME` put every disk and vif that names no other
// backend in the driver domain NAME (started on first use); an explicit
// backend= and a vif that asked for vif-bridge keep theirs; a bad name is
// refused before the daemon starts. And a driver domain some other process
// starts, which connects to the daemon's privileged socket by itself.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { needsGuestCpu } from '../../testing/accel.js';
import { XENODE_JS, guest, startDaemon, tmpStateDir, until } from './testing.js';

const XL_JS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'xl', 'xl.js');

test('--disk-backend and --vif-backend: devices that name no backend are the driver domain\'s; the others keep theirs', needsGuestCpu(), async () => {
  const d = await startDaemon(tmpStateDir(), ['--restart-delay', '0', '--disk-backend', 'dflt', '--vif-backend', 'dflt']);
  const env = { ...process.env, XENODE_SOCKET: d.socket, XENODE_STATE_DIR: '' };
  const xl = (...argv: string[]) => spawnSync(process.execPath, [XL_JS, ...argv], { env, encoding: 'utf8', timeout: 60_000 });
  try {
    const img = path.join(d.stateDir, 'b.img');
    fs.writeFileSync(img, Buffer.alloc(1 << 20));
    const cfg = path.join(d.stateDir, 'b.cfg');
    fs.writeFileSync(cfg, [
      'name = "b"', 'type = "pvh"', `kernel = "${guest('idle')}"`, 'memory = 16',
      `disk = [ '${img},raw,xvda,rw', 'format=raw, vdev=xvdb, access=ro, backend=other, target=${img}' ]`,
      `vif = [ 'mac=00:16:3e:00:00:31, bridge=xenbr0' ]`, '',
    ].join('\n'));
    const c = xl('create', cfg);
    assert.equal(c.status, 0, c.stderr);
    const id = Number(xl('domid', 'b').stdout), dflt = Number(xl('domid', 'dflt').stdout), other = Number(xl('domid', 'other').stdout);
    assert.ok(dflt > 0 && other > 0 && dflt !== other, `two driver domains: ${dflt}, ${other}`);
    const blocks = xl('block-list', 'b').stdout;
    assert.match(blocks, new RegExp(`\\n51712 +${dflt} +${id} .*/local/domain/${dflt}/backend/vbd/${id}/51712`), blocks);
    assert.match(blocks, new RegExp(`\\n51728 +${other} +${id} .*/local/domain/${other}/backend/vbd/${id}/51728`), blocks);
    assert.equal(xl('xenstore-read', `/local/domain/${id}/device/vif/0/backend-id`).stdout, `${dflt}\n`);
    assert.equal(xl('destroy', 'b').status, 0);
  } finally {
    await d.stop();
  }
});

test('--disk-backend with a domid or a bad name: refused before anything starts', () => {
  for (const [flag, value, why] of [['--disk-backend', '7', /--disk-backend: backend '7': name the driver domain/], ['--vif-backend', 'a/b', /--vif-backend: backend 'a\/b': not a driver domain name/]] as const) {
    const r = spawnSync(process.execPath, [XENODE_JS, 'daemon', flag, value], { env: { ...process.env, XENODE_STATE_DIR: tmpStateDir() }, encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, why);
  }
});

test('a driver domain that connects by itself (xenode driver-domain --connect): a domain of its own, serving a guest\'s disk; killed and started again, it takes its domid back and the disk is served again', needsGuestCpu(), async () => {
  const d = await startDaemon(tmpStateDir(), ['--restart-delay', '0']);
  const env = { ...process.env, XENODE_SOCKET: d.socket, XENODE_STATE_DIR: '' };
  const xl = (...argv: string[]) => spawnSync(process.execPath, [XL_JS, ...argv], { env, encoding: 'utf8', timeout: 60_000 });
  const privcmd = d.socket.replace(/(\.sock)?$/, '-privcmd.sock');
  const procs: ChildProcess[] = [];
  const start = () => {
    const p = spawn(process.execPath, [XENODE_JS, 'driver-domain', '--connect', privcmd, '--name', 'ext'], { stdio: ['ignore', 'ignore', 'pipe'] });
    procs.push(p);
    let err = '';
    p.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
    return { p, said: () => err };
  };
  try {
    const a = start();
    await until('the driver domain to connect', () => /driver domain up/.test(a.said()) || undefined, 30_000, 20);
    const ext = Number(xl('domid', 'ext').stdout);
    assert.ok(ext > 0, `listed with a domid of its own: ${xl('list').stdout}`);
    // a second process of the same name is refused
    const b = spawnSync(process.execPath, [XENODE_JS, 'driver-domain', '--connect', privcmd, '--name', 'ext'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(b.status, 1);
    assert.match(b.stderr, /refused: a driver domain called 'ext' is running/);
    const img = path.join(d.stateDir, 'e.img');
    fs.writeFileSync(img, Buffer.alloc(1 << 20));
    const cfg = path.join(d.stateDir, 'e.cfg');
    fs.writeFileSync(cfg, ['name = "e"', 'type = "pvh"', `kernel = "${guest('idle')}"`, 'memory = 16', `disk = [ 'format=raw, vdev=xvda, backend=ext, target=${img}' ]`, ''].join('\n'));
    const c = xl('create', cfg);
    assert.equal(c.status, 0, c.stderr);
    const id = Number(xl('domid', 'e').stdout);
    const be = `/local/domain/${ext}/backend/vbd/${id}/51712`;
    assert.equal(xl('xenstore-read', `${be}/hotplug-status`).stdout, 'connected\n');
    // it dies: its domain goes; started again, it is given the same domid and takes the device up again
    a.p.kill('SIGKILL');
    await until('the domain to go', () => xl('domid', 'ext').status !== 0 || undefined, 20_000, 50);
    // its mark taken away, so that only the new process can put it back
    assert.equal(xl('xenstore-rm', `${be}/hotplug-status`).status, 0);
    assert.equal(xl('xenstore-exists', `${be}/hotplug-status`).status, 1);
    const a2 = start();
    await until('it to connect again', () => /driver domain up, serving 1 device/.test(a2.said()) || undefined, 30_000, 20);
    assert.equal(Number(xl('domid', 'ext').stdout), ext, 'the same domid');
    await until('the device served again', () => xl('xenstore-read', `${be}/hotplug-status`).stdout === 'connected\n' || undefined, 20_000, 50);
    assert.equal(xl('destroy', 'e').status, 0);
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    await d.stop();
  }
});
