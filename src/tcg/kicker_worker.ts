// The helper thread of a TcgKicker (kicker.ts): takes the kick signal for its
// pCPU and stops the pCPU's run in progress (or its next).

import { workerData } from 'node:worker_threads';
import { unicorn } from './unicorn.js';
import { takeKickSignal, waitKick } from '../kvm/kick.js';

const { flag, ready } = workerData as { flag: bigint; ready: Int32Array };
const request = unicorn().stopFlagRequest;
Atomics.store(ready, 0, takeKickSignal());
Atomics.notify(ready, 0);
// ready[1] set: the pCPU is going away (it kicks us after setting it).
while (Atomics.load(ready, 1) === 0) if (waitKick(1000)) request(flag);
