// The helper thread of a TcgKicker (kicker.ts): stops the pCPU's running
// engine when its doorbell moves past what the pCPU has seen, or at the armed deadline.

import { workerData } from 'node:worker_threads';
import { unicorn } from './unicorn.js';
import { KICKER_STATE, KICKER_STATE_SLOT, KICKER_KICKED_SLOT, KICKER_SEEN_SLOT, KICKER_DEADLINE_SLOT, KICKER_ENGINE_SLOT } from './kicker.js';

const { sab, hostSab, doorbell } = workerData as { sab: SharedArrayBuffer; hostSab: SharedArrayBuffer; doorbell: number };
const words = new Int32Array(sab);
const big = new BigInt64Array(sab);
const host = new Int32Array(hostSab);
const emuStop = unicorn().emuStopAddress;

for (;;) {
  const db = Atomics.load(host, doorbell);
  const state = Atomics.load(words, KICKER_STATE_SLOT);
  if (state === KICKER_STATE.quit) break;
  let timeout = Infinity;
  if (state === KICKER_STATE.running) {
    const deadline = Atomics.load(big, KICKER_DEADLINE_SLOT);
    const now = process.hrtime.bigint();
    if (db !== Atomics.load(words, KICKER_SEEN_SLOT) || (deadline !== 0n && now >= deadline)) {
      if (Atomics.compareExchange(words, KICKER_STATE_SLOT, KICKER_STATE.running, KICKER_STATE.stopping) === KICKER_STATE.running) {
        Atomics.store(words, KICKER_KICKED_SLOT, 1);
        emuStop(Atomics.load(big, KICKER_ENGINE_SLOT));
        Atomics.store(words, KICKER_STATE_SLOT, KICKER_STATE.stopped);
        Atomics.notify(words, KICKER_STATE_SLOT);
      }
      continue;
    }
    if (deadline !== 0n) timeout = Number(deadline - now) / 1e6;
  }
  Atomics.wait(host, doorbell, db, timeout);
}
