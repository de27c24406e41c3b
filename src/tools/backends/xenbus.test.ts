// Virtual device numbers as xen-vbd-interface(7) gives them, and the state
// values io/xenbus.h defines.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { vbdDevid, parseXenbusState, XenbusState } from './xenbus.js';

test('vbd device numbers: xvd in major 202 up to xvdp15, the extended form beyond; hd, sd and d<N>p<P>', () => {
  const want: [string, number][] = [
    ['xvda', 51712], ['xvda1', 51713], ['xvdb', 51728], ['xvdp15', (202 << 8) | (15 << 4) | 15],
    ['xvdq', (1 << 28) | (16 << 8)], ['xvda16', (1 << 28) | 16], ['xvdaa', (1 << 28) | (26 << 8)],
    ['hda', 768], ['hdb', 832], ['hdc', 5632], ['hdd1', 5697], ['sda', 2048], ['sdb2', 2066],
    ['d0', 1 << 28], ['d3p2', (1 << 28) | (3 << 8) | 2],
  ];
  for (const [vdev, id] of want) assert.equal(vbdDevid(vdev), id, vdev);
  for (const bad of ['xvd', 'xvda01', 'xvda256', 'hde', 'hda64', 'sdq', 'sda16', 'd', 'dp1', 'vda', 'xvdA', '']) assert.equal(vbdDevid(bad), null, bad);
});

test('a state node is a number 0..8; anything else is no state', () => {
  assert.equal(parseXenbusState('4'), XenbusState.Connected);
  assert.equal(parseXenbusState('6\n'), XenbusState.Closed);
  for (const v of [undefined, '', '9', '-1', '4x', 'Connected']) assert.equal(parseXenbusState(v), null, String(v));
});
