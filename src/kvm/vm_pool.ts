// A few KVM VMs made ahead of need, on a helper thread. KVM_CREATE_VM and the
// VM-wide setup after it (capabilities, MSR filter) take most of a small
// domain's creation time on this host (~0.8 ms of ~2), and none of it depends
// on the domain: a VM fd is valid in every thread of the process, so a helper
// makes them while the main thread does other work, and take() hands one over
// at once. When the pool is empty (a burst of creates), take() makes one on
// the spot, as without a pool.

import { Worker } from 'node:worker_threads';
import { Kvm, Vm, type MsrFilterRange } from './kvm.js';
import type { CapName } from './abi.js';
import * as libc from './libc.js';

/** What every VM gets before use: capabilities to enable, the MSR filter, KVM_XEN_HVM_CONFIG flags (0: none). */
export interface VmRecipe {
  caps: { cap: CapName; args: number[] }[];
  msrFilter: MsrFilterRange[];
  xenHvmFlags?: number;
}

/** Applies the recipe to a fresh VM (the helper thread and the fallback path share it). */
export function prepareVm(kvm: Kvm, r: VmRecipe): Vm {
  const vm = kvm.createVm();
  try {
    for (const c of r.caps) vm.enableCap(c.cap, c.args);
    vm.setMsrFilter(r.msrFilter);
    if (r.xenHvmFlags) vm.setXenHvmConfig(r.xenHvmFlags);
  } catch (e) {
    vm.close();
    throw e;
  }
  return vm;
}

export type PoolToHelper = { type: 'make'; n: number } | { type: 'stop' };
export type HelperToPool = { type: 'made'; fd: number } | { type: 'failed'; error: string };

export class VmPool {
  private readonly ready: number[] = [];
  private requested = 0;
  private helper: Worker | null;
  private stopped = false;
  /** the helper's last failure (the pool then just makes VMs on the spot) */
  lastError: string | null = null;

  /** `size` VMs are kept ready (0: no helper thread at all). */
  constructor(private readonly kvm: Kvm, private readonly recipe: VmRecipe, private readonly size = 2) {
    if (size <= 0) {
      this.helper = null;
      return;
    }
    this.helper = new Worker(new URL('./vm_pool_helper.js', import.meta.url), { workerData: recipe });
    this.helper.unref();
    this.helper.on('message', (m: HelperToPool) => this.onMessage(m));
    this.helper.on('error', (e) => { this.lastError = e.message; this.helper = null; });
    this.refill();
  }

  /** A prepared VM: one made ahead if there is one, else made now. */
  take(): Vm {
    const fd = this.ready.shift();
    this.refill();
    if (fd !== undefined) return new Vm(this.kvm, fd);
    return prepareVm(this.kvm, this.recipe);
  }

  get readyCount(): number {
    return this.ready.length;
  }

  private refill(): void {
    if (!this.helper || this.stopped) return;
    const want = this.size - this.ready.length - this.requested;
    if (want <= 0) return;
    this.requested += want;
    this.helper.postMessage({ type: 'make', n: want } satisfies PoolToHelper);
  }

  private onMessage(m: HelperToPool): void {
    this.requested = Math.max(0, this.requested - 1);
    if (m.type === 'failed') {
      this.lastError = m.error;
      return; // take() falls back to making VMs itself; no retry storm
    }
    if (this.stopped) libc.close(m.fd);
    else this.ready.push(m.fd);
  }

  /** Stops the helper and closes the VMs nobody took. */
  async close(): Promise<void> {
    this.stopped = true;
    const h = this.helper;
    this.helper = null;
    if (h) {
      h.ref(); // unref'd so it never keeps a process up; waiting for it must
      const exited = new Promise<void>((r) => h.once('exit', () => r()));
      h.postMessage({ type: 'stop' } satisfies PoolToHelper);
      await exited;
    }
    for (const fd of this.ready.splice(0)) libc.close(fd);
  }
}
