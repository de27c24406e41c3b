// Guest memory mappings: memfds mapped into this thread's arena (one
// ArrayBuffer for many memories, so V8 sees no external-memory churn), or a
// mapping of their own when large.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SharedMemory, ARENA_MAX_RANGE, arenaStats } from './memory.js';

test('two mappings of one memfd see the same bytes, through views that start at their own offset', () => {
  const a = SharedMemory.create('t-a', 0x10000);
  const b = SharedMemory.attach(a.fd, a.size);
  try {
    assert.equal(a.bytes.length, 0x10000);
    assert.equal(a.buffer, b.buffer, 'one arena ArrayBuffer for both');
    assert.notEqual(a.address, b.address);
    a.bytes[0x1234] = 0x5a;
    assert.equal(b.bytes[0x1234], 0x5a);
    b.dataView().setUint32(0xfffc, 0xdeadbeef, true);
    assert.equal(a.dataView().getUint32(0xfffc, true), 0xdeadbeef);
    assert.equal(a.dataView().byteLength, 0x10000);
    assert.equal(a.address - BigInt(a.bytes.byteOffset), b.address - BigInt(b.bytes.byteOffset), 'both in the same chunk');
  } finally {
    b.close();
    a.close();
  }
});

test('ranges are reused as late as possible (next-fit), and a closed memory starts zeroed when its range comes back', () => {
  const first = SharedMemory.create('t-1', 0x4000);
  const addr1 = first.address;
  first.bytes.fill(0xee);
  first.close();
  const second = SharedMemory.create('t-2', 0x4000);
  assert.notEqual(second.address, addr1, 'not the range just freed');
  assert.ok(second.bytes.every((x) => x === 0));
  second.close();
  assert.ok(arenaStats().chunks >= 1);
});

test('a memory larger than an arena range gets a mapping of its own', () => {
  const big = SharedMemory.create('t-big', ARENA_MAX_RANGE + 0x1000);
  try {
    assert.equal(big.bytes.byteOffset, 0);
    assert.equal(big.buffer.byteLength, ARENA_MAX_RANGE + 0x1000);
    big.bytes[ARENA_MAX_RANGE] = 7; // touches one page only
    assert.equal(big.bytes[ARENA_MAX_RANGE], 7);
  } finally {
    big.close();
  }
});

test('sizes that are not a positive page multiple are refused', () => {
  assert.throws(() => SharedMemory.create('t-bad', 100), RangeError);
  assert.throws(() => SharedMemory.create('t-bad', 0), RangeError);
});
