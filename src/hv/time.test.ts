import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tscScale, scaleDelta } from './time.js';

test('pvclock scale converts one second of TSC ticks to one second of ns', () => {
  for (const khz of [1_000, 999_999, 1_000_000, 2_100_000, 2_899_998, 3_700_000, 5_000_000]) {
    const s = tscScale(khz);
    assert.ok(s.mul >= 2 ** 31 && s.mul < 2 ** 32, `mul in range for ${khz}`);
    const ns = scaleDelta(BigInt(khz) * 1000n, s);
    assert.ok(ns >= 999_999_000n && ns <= 1_000_000_000n, `${khz} kHz -> ${ns} ns`);
  }
});

test('a zero or negative frequency is refused (a zero multiplier would stop guest time)', () => {
  assert.throws(() => tscScale(0));
  assert.throws(() => tscScale(-5));
});
