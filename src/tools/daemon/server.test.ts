// The API socket's framing.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LineReader } from './protocol.js';

test('LineReader: lines across chunks, blank lines skipped, an overlong line dropped whole once', () => {
  let overlong = 0;
  const r = new LineReader(10, () => overlong++);
  const all = () => { const out: string[] = []; let l; while ((l = r.shift()) !== null) out.push(l); return out; };
  r.push('ab');
  assert.deepEqual(all(), []);
  r.push('c\n\n  \nde');
  assert.deepEqual(all(), ['abc']);
  r.push('f\n0123456789ab');
  assert.deepEqual(all(), ['def']);
  assert.equal(overlong, 1);
  r.push('cdefghijklmnop');
  r.push('qrstuvwxyz');
  assert.deepEqual(all(), []);
  assert.equal(overlong, 1);
  r.push('end of it\nnext\n');
  assert.deepEqual(all(), ['next']);
});
