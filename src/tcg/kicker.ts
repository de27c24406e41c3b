// Stopping a software-CPU vCPU from outside its run. A KVM vCPU is kicked out
// of KVM_RUN by the kick signal; an engine inside uc_emu_start only stops
// when someone calls uc_emu_stop. So a pCPU that runs engines has a helper
// thread that takes the kick signal in its place: other threads' kicks and
// the pCPU timer (a POSIX timer aimed at the helper) reach it, and it stops
// the engine that is running, or, between runs, leaves word that the next run
// must not start. Nothing waits for the helper on the hot path.

import { Worker } from 'node:worker_threads';

// Int32 slots of the shared state
export const KICKER_SLOT = { state: 0, kicked: 1, pending: 2, tid: 3 } as const;
// BigInt64 slot (byte 16): the running engine's address
export const KICKER_ENGINE = 2;
export const KICKER_BYTES = 24;
export const KICKER_STATE = { idle: 0, running: 1, stopping: 2, quit: 3 } as const;

const { state: STATE, kicked: KICKED, pending: PENDING, tid: TID } = KICKER_SLOT;

export class TcgKicker {
  private readonly words: Int32Array;
  private readonly big: BigInt64Array;
  private readonly worker: Worker;
  /** The helper's thread id: kicks and the pCPU timer are aimed at it. */
  readonly tid: number;

  constructor() {
    const sab = new SharedArrayBuffer(KICKER_BYTES);
    this.words = new Int32Array(sab);
    this.big = new BigInt64Array(sab);
    this.worker = new Worker(new URL('./kicker_worker.js', import.meta.url), { workerData: { sab } });
    this.worker.unref();
    // The helper publishes its thread id once its signal mask is in place.
    for (let waited = 0; Atomics.load(this.words, TID) === 0; waited += 10) {
      if (waited >= 10_000) throw new Error('software CPU: the kick helper thread did not start within 10 s');
      Atomics.wait(this.words, TID, 0, 10);
    }
    this.tid = Atomics.load(this.words, TID);
  }

  /**
   * Before uc_emu_start of the engine at `address`; false when a kick came
   * since the last run (the run must not start: the pCPU has to look first).
   */
  enter(address: bigint): boolean {
    Atomics.store(this.big, KICKER_ENGINE, address);
    Atomics.store(this.words, KICKED, 0);
    Atomics.store(this.words, STATE, KICKER_STATE.running);
    if (Atomics.exchange(this.words, PENDING, 0) !== 0 && Atomics.compareExchange(this.words, STATE, KICKER_STATE.running, KICKER_STATE.idle) === KICKER_STATE.running) return false;
    return true;
  }

  /** After uc_emu_start returns; true when the helper stopped it. */
  leave(): boolean {
    if (Atomics.compareExchange(this.words, STATE, KICKER_STATE.running, KICKER_STATE.idle) !== KICKER_STATE.running) {
      // The helper is stopping it (or has, if enter() found a kick): let it finish with the engine.
      while (Atomics.load(this.words, STATE) === KICKER_STATE.stopping) Atomics.wait(this.words, STATE, KICKER_STATE.stopping, 1);
      Atomics.store(this.words, STATE, KICKER_STATE.idle);
      return true;
    }
    return Atomics.load(this.words, KICKED) === 1;
  }

  close(): void {
    Atomics.store(this.words, STATE, KICKER_STATE.quit);
    void this.worker.terminate();
  }
}
