// The helper thread of a TcgKicker (kicker.ts): takes the kick signal for its
// pCPU and stops the pCPU's run in progress (or its next), and passes the kick
// on to the pCPU's thread when it also runs KVM vCPUs.

import { workerData } from 'node:worker_threads';
import { unicorn } from './unicorn.js';
import { takeKickSignal, waitKick, kick } from '../kvm/kick.js';

const { flag, ready, kvmTid } = workerData as { flag: bigint; ready: Int32Array; kvmTid: number };
const request = unicorn().stopFlagRequest;
Atomics.store(ready, 0, takeKickSignal());
Atomics.notify(ready, 0);
// ready[1] set: the pCPU is going away (it kicks us after setting it).
const pcpu = { pid: process.pid, tid: kvmTid };
while (Atomics.load(ready, 1) === 0) {
  if (!waitKick(1000)) continue;
  request(flag);
  if (kvmTid) kick(pcpu);
}
