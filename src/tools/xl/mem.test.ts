// xl mem-set and mem-max against a running daemon, seen by a guest that
// balloons (guests/samples/balloon.c): the target reaches it through
// memory/target, it gives frames back with XENMEM_decrease_reservation and
// xl list shows the smaller reservation; the limit mem-set and mem-max set
// is what XENMEM_populate_physmap stops at when the guest takes frames back.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { needsKvm } from '../../kvm/testing.js';
import { consoleLogPath } from '../daemon/consoles.js';
import { guest, startDaemon, tmpStateDir, until, type TestDaemon } from '../daemon/testing.js';
import { parseMemSizeKb } from './commands/memory.js';

const XL_JS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), 'xl.js');

let daemon: TestDaemon;
let env: NodeJS.ProcessEnv;

function xl(...argv: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [XL_JS, ...argv], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    p.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    p.on('close', (code) => resolve({ code, out, err }));
  });
}

/** xl list's Mem column for one domain. */
async function mem(name: string): Promise<number> {
  const r = await xl('list', name);
  assert.equal(r.code, 0, r.err);
  return Number(/^\S+\s+\d+\s+(\d+)/.exec(r.out.split('\n')[1]!)![1]);
}

const consoleLog = (name: string): string => {
  try { return fs.readFileSync(consoleLogPath(daemon.stateDir, name), 'latin1'); } catch { return ''; }
};

test('mem sizes as xl reads them: MB by default, b k m g t suffixes, anything else invalid', () => {
  assert.equal(parseMemSizeKb('12'), 12 * 1024);
  assert.equal(parseMemSizeKb('12m'), 12 * 1024);
  assert.equal(parseMemSizeKb('512k'), 512);
  assert.equal(parseMemSizeKb('1G'), 1 << 20);
  assert.equal(parseMemSizeKb('1t'), 2 ** 30);
  assert.equal(parseMemSizeKb('4096b'), 4);
  for (const bad of ['', 'x', '12mb', '1.5g', '-1']) assert.equal(parseMemSizeKb(bad), -1, bad);
});

describe('mem-set and mem-max with a ballooning guest', needsKvm(), () => {
  before(async () => {
    daemon = await startDaemon(tmpStateDir());
    env = { ...process.env, XENODE_SOCKET: daemon.socket, XENODE_STATE_DIR: '' };
  });
  after(async () => { await daemon?.stop(); });

  test('mem-set: the guest gives frames back to the target and xl list shows it; mem-max bounds what it takes back', async () => {
    const cfg = path.join(daemon.stateDir, 'bal.cfg');
    fs.writeFileSync(cfg, `name = "bal"\ntype = "pvh"\nkernel = "${guest('balloon')}"\nmemory = 16\nmaxmem = 16\ncmdline = "console=pv"\n`);
    // console=pv: the console log is the PV ring (console_io lines go to xl dmesg)
    assert.equal((await xl('create', '-q', cfg)).code, 0);
    await until('the balloon guest to start', () => consoleLog('bal').includes('balloon: target 16384 KiB'));
    // the frame shared_info was mapped over went back to the host, as in Xen: what the guest holds is what xl list shows
    const held = Number(/balloon: ready, reservation (\d+) pages/.exec(consoleLog('bal'))![1]);
    assert.ok(held <= 4096 && held > 4000, String(held));
    assert.equal(await mem('bal'), Math.floor(held / 256));

    assert.deepEqual(await xl('mem-set', 'bal', '12m'), { code: 0, out: '', err: '' });
    await until('the guest to reach 12 MiB', () => consoleLog('bal').includes(`balloon: target 12288 KiB: reservation ${held} -> 3072 pages (gave back ${held - 3072})`));
    assert.equal(await mem('bal'), 12);

    // above static-max (maxmem) is refused as libxl does, and nothing changes
    const over = await xl('mem-set', 'bal', '32');
    assert.equal(over.code, 1);
    assert.equal(over.err, 'xl: memory_dynamic_max must be less than or equal to memory_static_max\ncannot set domid ' +
      `${(await xl('domid', 'bal')).out.trim()} dynamic max memory to : 32\n`);
    // below the target is refused for mem-max
    assert.match((await xl('mem-max', 'bal', '8')).err, /^xl: memory_static_max must be greater than or equal to memory_dynamic_max\ncannot set domid \d+ static max memory to : 8\n$/);
    assert.deepEqual(await xl('mem-set', 'bal', '1x'), { code: 1, out: '', err: 'invalid memory size: 1x\n' });

    // mem-set 12 left Xen's limit at 12 MiB + LIBXL_MAXMEM_CONSTANT (1 MiB): a target of 16 MiB written
    // straight into xenstore gets the guest only 256 of the 1024 frames it asks for
    const id = (await xl('domid', 'bal')).out.trim();
    const w = await xl('xenstore-write', `/local/domain/${id}/memory/target`, '16384');
    if (w.code !== 127) {
      assert.equal(w.code, 0, w.err);
      await until('the guest to take back what max_pages allows', () => consoleLog('bal').includes('balloon: target 16384 KiB: reservation 3072 -> 3328 pages (took back 256 of 1024)'));
      assert.equal(await mem('bal'), 13);
    }
    // mem-set raises the limit with the target: the guest then gets all of it
    assert.equal((await xl('mem-set', 'bal', '15')).code, 0);
    await until('the guest at 15 MiB', () => /balloon: target 15360 KiB: reservation \d+ -> 3840 pages/.test(consoleLog('bal')));
    assert.equal(await mem('bal'), 15);
    assert.equal((await xl('destroy', 'bal')).code, 0);
  });
});
