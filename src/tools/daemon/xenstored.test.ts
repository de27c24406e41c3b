// The daemon's xenstored is a process of its own: kill -9 it and the
// toolstack starts it again, with nothing committed lost, the guests' rings
// served again (their requests go on), its own connections back, the
// driver domains it started given a new xenstore stream (their watches
// registered again), and new domains introduced to the new xenstored.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { needsGuestCpu } from '../../testing/accel.js';
import { guest, startDaemon, tmpStateDir, until } from './testing.js';

const XL_JS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'xl', 'xl.js');

test('kill -9 of the daemon\'s xenstored: started again, committed writes kept, a guest\'s ring served again (a shutdown request reaches it), the driver domain\'s connection comes back and its watches work, new domains are introduced', needsGuestCpu(), async () => {
  const d = await startDaemon(tmpStateDir(), ['--restart-delay', '0']);
  const env = { ...process.env, XENODE_SOCKET: d.socket, XENODE_STATE_DIR: '' };
  const xl = (...argv: string[]) => spawnSync(process.execPath, [XL_JS, ...argv], { env, encoding: 'utf8', timeout: 60_000 });
  const info = (key: string): string => new RegExp(`^${key}\\s*:\\s*(.*)$`, 'm').exec(xl('info').stdout)?.[1] ?? '';
  // the samples print through console_io: the hypervisor console
  const dmesg = (): string => xl('dmesg').stdout;
  const log = (): string => fs.readFileSync(path.join(d.stateDir, 'xenode.log'), 'utf8');
  const cfg = (name: string, lines: string[]): string => {
    const f = path.join(d.stateDir, `${name}.cfg`);
    fs.writeFileSync(f, [`name = "${name}"`, 'type = "pvh"', ...lines, ''].join('\n'));
    return f;
  };
  try {
    const pid = Number(info('xenstored_pid'));
    assert.ok(pid > 0 && pid !== d.proc.pid, `xenstored is a process of its own: ${pid}`);
    assert.equal(info('xenstored_starts'), '1');
    assert.equal(xl('xenstore-write', '/local/domain/0/data/kept', 'committed').status, 0);

    // a guest that reads control/shutdown through its ring every 100 ms
    const nf = xl('create', cfg('nf', [`kernel = "${guest('netfront')}"`, 'memory = 8', 'extra = "ip=10.0.0.2 pings=0 idle_ms=120000 look_ms=100"', `vif = [ 'mac=00:16:3e:00:00:41, bridge=xenbr0' ]`]));
    assert.equal(nf.status, 0, nf.stderr);
    await until('the netfront to connect', () => /netfront: connected/.test(dmesg()) || undefined, 60_000, 100);
    const nfId = Number(xl('domid', 'nf').stdout);
    // a disk a driver domain serves
    const img = path.join(d.stateDir, 'x.img');
    fs.writeFileSync(img, Buffer.alloc(1 << 20));
    const dk = xl('create', cfg('dk', [`kernel = "${guest('idle')}"`, 'memory = 16', `disk = [ 'format=raw, vdev=xvda, backend=xsdd, target=${img}' ]`]));
    assert.equal(dk.status, 0, dk.stderr);
    const be = `/local/domain/${Number(xl('domid', 'xsdd').stdout)}/backend/vbd/${Number(xl('domid', 'dk').stdout)}/51712`;
    assert.equal(xl('xenstore-read', `${be}/hotplug-status`).stdout, 'connected\n');

    process.kill(pid, 'SIGKILL');
    await until('xenstored to be started again', () => { const p = Number(info('xenstored_pid')); return (p > 0 && p !== pid) || undefined; }, 30_000, 100);
    assert.equal(info('xenstored_starts'), '2');
    assert.deepEqual([xl('xenstore-read', '/local/domain/0/data/kept').stdout], ['committed\n'], 'no committed write lost');
    assert.match(log(), /xenstored: domain \d+: connection restored/);

    // the driver domain lost its xenstore stream with xenstored; the toolstack hands it a new one and it goes on
    await until('the driver domain\'s xenstore connection back', () => /\(xsdd\): xenstore connection back/.test(log()) || undefined, 30_000, 100);
    assert.doesNotMatch(log(), /\(xsdd\): driver domain (started again|exited|killed)/, 'not restarted');
    assert.equal(xl('xenstore-read', `${be}/hotplug-status`).stdout, 'connected\n');
    // its watch on its backend directory is registered with the new xenstored: a disk attached now is taken up
    const img2 = path.join(d.stateDir, 'y.img');
    fs.writeFileSync(img2, Buffer.alloc(1 << 20));
    const att = xl('block-attach', 'dk', `format=raw, vdev=xvdb, backend=xsdd, target=${img2}`);
    assert.equal(att.status, 0, att.stderr);
    assert.equal(xl('xenstore-read', `${be.replace(/51712$/, '51728')}/hotplug-status`).stdout, 'connected\n');

    // the guest's ring, restored by the new xenstored: its next read of control/shutdown finds the request
    // (written as xl shutdown would; the sample does not advertise feature-poweroff, so xl itself refuses)
    assert.equal(xl('xenstore-write', `/local/domain/${nfId}/control/shutdown`, 'poweroff').status, 0);
    await until('the netfront to read it through its ring and power off', () => /netfront: control\/shutdown poweroff/.test(dmesg()) && xl('domid', 'nf').status !== 0 || undefined, 30_000, 100);

    // a domain made now is introduced to the new xenstored, and goes as usual
    const after = xl('create', cfg('after', [`kernel = "${guest('idle')}"`, 'memory = 16']));
    assert.equal(after.status, 0, after.stderr);
    const id = Number(xl('domid', 'after').stdout);
    assert.equal(xl('xenstore-read', `/local/domain/${id}/name`).stdout, 'after\n');
    assert.equal(xl('destroy', 'after').status, 0);
    assert.equal(xl('destroy', 'dk').status, 0);
    assert.doesNotMatch(xl('list').stdout, /^(after|dk|nf)\s/m);
  } finally {
    await d.stop();
  }
});
