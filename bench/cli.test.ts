// Every benchmark answers --help with its usage, and a bad flag with the
// reason and the usage (exit 2), never with a stack trace.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const benches = fs.readdirSync(here).filter((f) => f.endsWith('.js') && f !== 'common.js' && !f.endsWith('.test.js')).sort();

test('the benchmarks are all here', () => {
  assert.deepEqual(benches, ['accel.js', 'block.js', 'boot.js', 'create.js', 'daemon.js', 'evtchn.js', 'grant.js', 'hypercall.js', 'linux.js', 'net.js', 'sched.js', 'timer.js', 'xenstore.js', 'xl.js']);
});

for (const b of benches) {
  const run = (...args: string[]) => spawnSync(process.execPath, [path.join(here, b), ...args], { encoding: 'utf8', timeout: 60_000 });

  test(`${b} --help prints its usage and exits 0`, () => {
    const r = run('--help');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^usage: node (--expose-gc )?dist/bench/${b.replace('.', '\\.')} `));
    assert.equal(r.stderr, '');
  });

  test(`${b} refuses an unknown flag with the reason and the usage (exit 2), no stack trace`, () => {
    const r = run('--no-such-flag');
    assert.equal(r.status, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /--no-such-flag/);
    assert.match(r.stderr, /usage: /);
    assert.doesNotMatch(r.stderr, /^\s+at /m);
  });
}
