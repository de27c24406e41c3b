// Stopping a software-CPU vCPU from outside its run: a KVM vCPU is kicked out
// of KVM_RUN by a signal, but an engine inside uc_emu_start only stops when
// someone calls uc_emu_stop. Each pCPU thread that runs engines has a small
// helper thread for that: it sleeps on the pCPU's doorbell (every kick rings it
// first) and on the pCPU timer's deadline, and stops the running engine when
// either moves. Nothing waits for the helper on the hot path.

import { Worker } from 'node:worker_threads';

// Int32 slots of the shared state
const STATE = 0;
const KICKED = 1;
const SEEN = 2;
// BigInt64 slots (bytes 16, 24)
const DEADLINE = 2;
const ENGINE = 3;
export const KICKER_BYTES = 32;

export const KICKER_STATE = { idle: 0, running: 1, stopping: 2, stopped: 3, quit: 4 } as const;

export class TcgKicker {
  private readonly words: Int32Array;
  private readonly big: BigInt64Array;
  private readonly worker: Worker;
  private armedAt = -1n;

  /** `doorbell`: the pCPU's doorbell word in `hostSab`; `seen()`: the doorbell value its loop has acted on. */
  constructor(private readonly hostSab: SharedArrayBuffer, private readonly doorbell: number, private readonly seen: () => number) {
    const sab = new SharedArrayBuffer(KICKER_BYTES);
    this.words = new Int32Array(sab);
    this.big = new BigInt64Array(sab);
    this.worker = new Worker(new URL('./kicker_worker.js', import.meta.url), { workerData: { sab, hostSab, doorbell } });
    this.worker.unref();
  }

  private wake(): void {
    Atomics.notify(new Int32Array(this.hostSab), this.doorbell);
  }

  /** The pCPU timer: stop the running engine at absolute monotonic time `ns` (0: never). */
  arm(ns: bigint): void {
    if (ns === this.armedAt) return;
    this.armedAt = ns;
    Atomics.store(this.big, DEADLINE, ns);
    this.wake();
  }

  /** Before uc_emu_start of the engine at `address`. */
  enter(address: bigint): void {
    Atomics.store(this.big, ENGINE, address);
    Atomics.store(this.words, KICKED, 0);
    Atomics.store(this.words, SEEN, this.seen());
    Atomics.store(this.words, STATE, KICKER_STATE.running);
    this.wake();
  }

  /** After uc_emu_start returns; true when the helper stopped it. */
  leave(): boolean {
    if (Atomics.compareExchange(this.words, STATE, KICKER_STATE.running, KICKER_STATE.idle) !== KICKER_STATE.running) {
      // The helper is stopping it (or has): wait for it to be done with the engine.
      while (Atomics.load(this.words, STATE) === KICKER_STATE.stopping) Atomics.wait(this.words, STATE, KICKER_STATE.stopping, 10);
      Atomics.store(this.words, STATE, KICKER_STATE.idle);
    }
    return Atomics.load(this.words, KICKED) === 1;
  }

  /** An engine is going away: the helper never touches an engine outside a run, so nothing to do but check. */
  forget(address: bigint): void {
    if (Atomics.load(this.words, STATE) !== KICKER_STATE.idle && Atomics.load(this.big, ENGINE) === address) throw new Error('software CPU: closing an engine that is running');
  }

  close(): void {
    Atomics.store(this.words, STATE, KICKER_STATE.quit);
    this.wake();
  }
}

export { STATE as KICKER_STATE_SLOT, KICKED as KICKER_KICKED_SLOT, SEEN as KICKER_SEEN_SLOT, DEADLINE as KICKER_DEADLINE_SLOT, ENGINE as KICKER_ENGINE_SLOT };
