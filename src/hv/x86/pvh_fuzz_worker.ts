// Worker for pvh.test.ts's corruption fuzz: mutates the given ELF images and
// feeds them to the parser and loader off the test's thread, publishing the
// iteration it is on, so the test can tell a hang (no progress) from a slow
// machine and name the iteration that hung.

import { parentPort, workerData } from 'node:worker_threads';
import { buildPvhE820 } from './e820.js';
import { PvhLoadError, loadPvh, parsePvhElf } from './pvh.js';

export interface FuzzData { bases: Uint8Array[]; iterations: number; seed: number; progress: SharedArrayBuffer }
export interface FuzzResult { parsed: number; escaped: string | null }

const MiB = 1024 * 1024;
const { bases, iterations, seed: seed0, progress } = workerData as FuzzData;
const at = new Int32Array(progress);
let seed = seed0;
const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed; };
let parsed = 0;
let escaped: string | null = null;
for (let i = 0; i < iterations && escaped === null; i++) {
  Atomics.store(at, 0, i);
  const b = bases[i % bases.length]!.slice();
  const nflips = 1 + (rnd() % 4);
  for (let j = 0; j < nflips; j++) {
    const off = rnd() % Math.min(b.length, 0x200);
    b[off] = rnd() & 0xff;
  }
  try {
    const img = parsePvhElf(b);
    parsed++;
    // Anything that parses must load or fail cleanly too.
    try { loadPvh(new Uint8Array(8 * MiB), img, { memmap: buildPvhE820(8 * MiB) }); } catch (e) {
      if (!(e instanceof PvhLoadError)) escaped = `iteration ${i}: loadPvh threw ${String(e)}`;
    }
  } catch (e) {
    if (!(e instanceof PvhLoadError)) escaped = `iteration ${i}: parsePvhElf threw ${String(e)}`;
  }
}
Atomics.store(at, 0, iterations);
parentPort!.postMessage({ parsed, escaped } satisfies FuzzResult);
