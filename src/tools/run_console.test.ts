// What `xenode run` shows on stdout: the domain's PV console ring as it
// comes, and its hypervisor-console lines (console_io, 0xE9), each line once
// however many of those outputs the guest wrote it to.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { needsKvm } from '../kvm/testing.js';
import { guest, xenodeRun } from '../testing/xenode.js';
import { MergedConsole, MERGE_WINDOW_MS } from './run.js';

function merged() {
  let out = '';
  let t = 0;
  const m = new MergedConsole((s) => { out += s; }, () => t);
  const ring = (s: string) => m.ring(Buffer.from(s, 'latin1'));
  return { m, ring, out: () => out, advance: (ms: number) => { t += ms; } };
}

describe('MergedConsole', () => {
  test('a line written to console_io, 0xE9 and the ring is shown once, whichever comes first', () => {
    const c = merged();
    c.m.hypervisorLine('console_io', 'one', true);
    c.m.hypervisorLine('debugport', 'one', true);
    c.ring('one\n');
    c.ring('two\r\n');
    c.m.hypervisorLine('console_io', 'two', true);
    c.m.hypervisorLine('debugport', 'two', true);
    assert.equal(c.out(), 'one\ntwo\r\n');
  });

  test('different lines on different outputs are all shown, in arrival order', () => {
    const c = merged();
    c.m.hypervisorLine('console_io', 'Hello (console_io)', true);
    c.m.hypervisorLine('debugport', 'Hello (port 0xE9)', true);
    c.ring('Hello (PV console)\n');
    assert.equal(c.out(), 'Hello (console_io)\nHello (port 0xE9)\nHello (PV console)\n');
  });

  test('a line repeated on one output is shown every time; each copy on another output is absorbed once', () => {
    const c = merged();
    for (let i = 0; i < 3; i++) {
      c.m.hypervisorLine('console_io', 'tick', true);
      c.ring('tick\n');
    }
    c.ring('tick\n');
    assert.equal(c.out(), 'tick\n'.repeat(4));
  });

  test('copies further apart than the merge window are both shown', () => {
    const c = merged();
    c.m.hypervisorLine('console_io', 'late', true);
    c.advance(MERGE_WINDOW_MS + 1);
    c.ring('late\n');
    assert.equal(c.out(), 'late\nlate\n');
  });

  test('ring bytes are written as they come: a prompt without newline at once; a line cut by the drain is not dropped', () => {
    const c = merged();
    c.ring('login: ');
    assert.equal(c.out(), 'login: ');
    c.m.hypervisorLine('console_io', 'cut line', true);
    c.ring('cut ');
    c.ring('line\n');
    assert.equal(c.out(), 'login: cut line\ncut line\n', 'its start was out already: shown in full');
  });

  test('a partial hypervisor line (flushed when the domain ends) is written as it is', () => {
    const c = merged();
    c.m.hypervisorLine('debugport', 'M', false);
    assert.equal(c.out(), 'M');
  });
});

test('xenode run: a guest printing each line on console_io, 0xE9 and the PV ring shows it once', needsKvm(), async () => {
  const r = await xenodeRun([guest('shutdown-poweroff'), '--cmdline', 'console=all']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.match(/shutdown-poweroff: calling SCHEDOP_shutdown/g)?.length, 1, r.stdout);
});

test('xenode run: the console ring alone and console_io alone each show the line', needsKvm(), async () => {
  for (const c of ['pv', 'io', 'e9']) {
    const r = await xenodeRun([guest('shutdown-poweroff'), '--cmdline', `console=${c}`]);
    assert.equal(r.stdout.match(/shutdown-poweroff: calling SCHEDOP_shutdown/g)?.length, 1, `console=${c}: ${r.stdout}`);
  }
});
