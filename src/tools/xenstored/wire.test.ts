import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FrameReader, OutBuf, XS_ERRORS, XsType, encodeMessage, nulJoin, splitNul } from './wire.js';

test('message type numbers follow xs_wire.h', () => {
  assert.equal(XsType.CONTROL, 0);
  assert.equal(XsType.WRITE, 11);
  assert.equal(XsType.WATCH_EVENT, 15);
  assert.equal(XsType.ERROR, 16);
  assert.equal(XsType.SET_TARGET, 19);
  assert.equal(XsType.RESET_WATCHES, 21);
  assert.equal(XsType.DIRECTORY_PART, 22);
  assert.equal(XsType.SET_QUOTA, 26);
  assert.deepEqual(XS_ERRORS.slice(0, 5), ['EINVAL', 'EACCES', 'EEXIST', 'EISDIR', 'ENOENT']);
  assert.equal(XS_ERRORS.at(-1), 'EPERM');
});

test('header is four little-endian u32 then the payload', () => {
  const b = encodeMessage(XsType.READ, 0x01020304, 7, 'a/b\0');
  assert.equal(b.length, 20);
  assert.deepEqual([...b.subarray(0, 16)], [2, 0, 0, 0, 4, 3, 2, 1, 7, 0, 0, 0, 4, 0, 0, 0]);
  assert.equal(b.subarray(16).toString('latin1'), 'a/b\0');
});

test('FrameReader reassembles frames split at every byte boundary', () => {
  const stream = Buffer.concat([
    encodeMessage(XsType.READ, 1, 0, 'x\0'),
    encodeMessage(XsType.WRITE, 2, 3, Buffer.from('p\0value')),
    encodeMessage(XsType.DIRECTORY, 3, 0, ''),
  ]);
  for (let cut = 0; cut <= stream.length; cut++) {
    const r = new FrameReader();
    const got: string[] = [];
    for (const part of [stream.subarray(0, cut), stream.subarray(cut)]) {
      r.push(part);
      for (;;) {
        const m = r.next();
        if (m === 'need-more') break;
        assert.notEqual(m, 'oversize');
        if (typeof m === 'string') break;
        got.push(`${m.type}/${m.reqId}/${m.txId}/${m.payload.toString('latin1')}`);
      }
    }
    assert.deepEqual(got, ['2/1/0/x\0', '11/2/3/p\0value', '1/3/0/'], `cut at ${cut}`);
    assert.equal(r.buffered, 0);
  }
});

test('FrameReader reports an oversize payload as soon as the header is in', () => {
  const r = new FrameReader();
  const h = Buffer.alloc(16);
  h.writeUInt32LE(4097, 12);
  r.push(h);
  assert.equal(r.next(), 'oversize');
  const ok = new FrameReader();
  const m = encodeMessage(XsType.WRITE, 0, 0, Buffer.alloc(4096));
  ok.push(m);
  const f = ok.next();
  assert.ok(typeof f === 'object' && f.payload.length === 4096);
});

test('splitNul / nulJoin', () => {
  assert.deepEqual(splitNul(Buffer.from('a\0b\0')), ['a', 'b']);
  assert.deepEqual(splitNul(Buffer.from('a\0b')), ['a', 'b']);
  assert.deepEqual(splitNul(Buffer.from('')), []);
  assert.deepEqual(splitNul(Buffer.from('\0')), ['']);
  assert.equal(nulJoin(['x', 'yz']).toString('latin1'), 'x\0yz\0');
});

test('OutBuf frames many messages into one buffer and grows', () => {
  const o = new OutBuf(32);
  for (let i = 0; i < 100; i++) o.message(XsType.READ, i, 0, i % 2 ? 'abc' : Buffer.from('de'));
  assert.equal(o.count, 100);
  const b = o.take();
  assert.equal(o.length, 0);
  const r = new FrameReader();
  r.push(b);
  for (let i = 0; i < 100; i++) {
    const m = r.next();
    assert.ok(typeof m === 'object');
    assert.equal(m.reqId, i);
    assert.equal(m.payload.toString(), i % 2 ? 'abc' : 'de');
  }
});
