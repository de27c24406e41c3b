// Stopping a software-CPU vCPU from outside its run. A KVM vCPU is kicked out
// of KVM_RUN by the kick signal; an engine inside uc_emu_start is stopped
// through the pCPU's stop flag (msr_exit.c), at the next block boundary. So a
// pCPU that runs engines has a helper thread that takes the kick signal in its
// place: other threads' kicks and the pCPU timer (a POSIX timer aimed at the
// helper) reach it, and it stops the run in progress. Asked for between runs,
// the stop ends the next run before its first instruction: nothing is lost,
// nothing waits.

import koffi from 'koffi';
import { Worker } from 'node:worker_threads';
import { unicorn } from './unicorn.js';
import { kick } from '../kvm/kick.js';

export class TcgKicker {
  private readonly worker: Worker;
  private readonly ready: Int32Array;
  /** The stop flag of this pCPU's runs (native memory). */
  readonly flag: unknown;
  /** The helper's thread id: kicks and the pCPU timer are aimed at it. */
  readonly tid: number;

  /**
   * `kvmTid`: the pCPU also runs vCPUs in KVM (a vCPU that moves between the
   * two): each kick is passed on to that thread too, where it ends KVM_RUN
   * (or, pending, the next one).
   */
  constructor(kvmTid = 0) {
    const u = unicorn();
    this.flag = u.stopFlagNew();
    this.ready = new Int32Array(new SharedArrayBuffer(8));
    this.worker = new Worker(new URL('./kicker_worker.js', import.meta.url), { workerData: { flag: koffi.address(this.flag), ready: this.ready, kvmTid } });
    this.worker.unref();
    // The helper publishes its thread id once it blocks the kick signal.
    for (let waited = 0; Atomics.load(this.ready, 0) === 0; waited += 10) {
      if (waited >= 10_000) throw new Error('software CPU: the kick helper thread did not start within 10 s');
      Atomics.wait(this.ready, 0, 0, 10);
    }
    this.tid = Atomics.load(this.ready, 0);
  }

  /** Asks the running engine (from inside its run: an access it made) or the next run to stop. */
  request(): void {
    unicorn().stopFlagRequest(koffi.address(this.flag));
  }

  /** Also stop the next run (on this thread) before its first instruction outside CPL 0 ('user'), or after its first block ('block'). */
  atUser(mode: 'user' | 'block' | null): void {
    unicorn().stopFlagAtUser(this.flag, mode === 'user' ? 1 : mode === 'block' ? 2 : 0);
  }

  /** After a run: whether it stopped for atUser. */
  userTaken(): boolean {
    return unicorn().stopFlagUserTaken(this.flag) !== 0;
  }

  close(): void {
    // Wake the helper out of its wait so it sees the word and ends.
    Atomics.store(this.ready, 1, 1);
    kick({ pid: process.pid, tid: this.tid });
  }
}
