// The privileged interface's framing: a frame is a u32 length, a u32 header
// length, a JSON object, then raw bytes; a stream may cut frames anywhere
// and carry several at once; a frame over the limits or whose header is not
// an object is refused (the server then drops that stream).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeFrame, FrameSplitter, PRIVCMD_MAX_HEADER } from './privcmd.js';

test('frames come out whole and in order, however the stream cuts them', () => {
  const a = encodeFrame({ op: 'notify', port: 3 });
  const b = encodeFrame({ id: 7, statuses: [0, -10] }, Uint8Array.from([1, 2, 3, 4, 5]));
  const c = encodeFrame({ op: 'event', port: 9 });
  const all = Buffer.concat([a, b, c]);
  for (const cut of [1, 3, 8, a.length, a.length + 5, all.length - 1]) {
    const f = new FrameSplitter();
    const got: { header: Record<string, unknown>; data: number[] }[] = [];
    for (const part of [all.subarray(0, cut), all.subarray(cut)]) {
      f.push(Buffer.from(part));
      for (let x = f.next(); x; x = f.next()) got.push({ header: x.header, data: [...x.data] });
    }
    assert.deepEqual(got, [
      { header: { op: 'notify', port: 3 }, data: [] },
      { header: { id: 7, statuses: [0, -10] }, data: [1, 2, 3, 4, 5] },
      { header: { op: 'event', port: 9 }, data: [] },
    ], `cut at ${cut}`);
  }
});

test('a header past the limit, a length shorter than its header, or a header that is not an object is refused', () => {
  const bad = (len: number, hlen: number, body = Buffer.alloc(0)) => {
    const f = Buffer.alloc(8);
    f.writeUInt32LE(len, 0);
    f.writeUInt32LE(hlen, 4);
    return Buffer.concat([f, body]);
  };
  for (const [what, frame] of [
    ['a header past the limit', bad(4 + PRIVCMD_MAX_HEADER + 1, PRIVCMD_MAX_HEADER + 1)],
    ['a frame shorter than its header', bad(4, 10)],
    ['a header that is a list', bad(4 + 2, 2, Buffer.from('[]'))],
    ['a header that is not JSON', bad(4 + 3, 3, Buffer.from('{x}'))],
  ] as const) {
    const f = new FrameSplitter();
    f.push(frame);
    assert.throws(() => f.next(), Error, what);
  }
});
