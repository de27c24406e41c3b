// The helper thread of a TcgKicker (kicker.ts): takes the kick signal for its
// pCPU and stops the running engine, or marks the next run as kicked.

import { workerData } from 'node:worker_threads';
import { unicorn } from './unicorn.js';
import { takeKickSignal, waitKick } from '../kvm/kick.js';
import { KICKER_SLOT, KICKER_STATE, KICKER_ENGINE } from './kicker.js';

const { sab } = workerData as { sab: SharedArrayBuffer };
const words = new Int32Array(sab);
const big = new BigInt64Array(sab);
const emuStop = unicorn().emuStopAddress;
const tid = takeKickSignal();
Atomics.store(words, KICKER_SLOT.tid, tid);
Atomics.notify(words, KICKER_SLOT.tid);

for (;;) {
  if (!waitKick(1000)) {
    if (Atomics.load(words, KICKER_SLOT.state) === KICKER_STATE.quit) break;
    continue;
  }
  for (;;) {
    const s = Atomics.load(words, KICKER_SLOT.state);
    if (s === KICKER_STATE.quit) process.exit(0);
    if (s === KICKER_STATE.running) {
      if (Atomics.compareExchange(words, KICKER_SLOT.state, KICKER_STATE.running, KICKER_STATE.stopping) !== KICKER_STATE.running) continue;
      Atomics.store(words, KICKER_SLOT.kicked, 1);
      emuStop(Atomics.load(big, KICKER_ENGINE));
      Atomics.store(words, KICKER_SLOT.state, KICKER_STATE.idle);
      Atomics.notify(words, KICKER_SLOT.state);
      break;
    }
    // Between runs: the next run must not start before the pCPU has looked (then re-check:
    // a run may have begun meanwhile, and it would not see the mark).
    Atomics.store(words, KICKER_SLOT.pending, 1);
    if (Atomics.load(words, KICKER_SLOT.state) !== KICKER_STATE.running) break;
  }
}
