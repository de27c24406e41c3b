// The daemon's default backends: `--disk-backend NAME` / `--vif-backend NAME`
// put every disk and vif that names no other backend in the driver domain
// NAME (started on first use); an explicit backend= and a vif that asked for
// vif-bridge keep theirs; a bad name is refused before the daemon starts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { needsGuestCpu } from '../../testing/accel.js';
import { XENODE_JS, guest, startDaemon, tmpStateDir } from './testing.js';

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
