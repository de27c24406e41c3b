// Test support: whether /dev/kvm can be used here, and a loud skip when not.

import { Kvm, type Segment, type Vcpu } from './kvm.js';

let cached: string | null | undefined;

/** null when KVM is usable, else the reason it is not. */
export function kvmUnavailableReason(): string | null {
  if (cached !== undefined) return cached;
  try {
    const k = Kvm.open();
    const missing = k.missingCapabilities();
    k.close();
    cached = missing.length ? `KVM lacks ${missing.join(', ')}` : null;
  } catch (e) {
    cached = e instanceof Error ? e.message : String(e);
  }
  if (cached) process.stderr.write(`\n*** SKIPPING KVM TESTS: ${cached} ***\n\n`);
  return cached;
}

/** Options for node:test: skip (with the reason, loudly) when KVM cannot be used. */
export function needsKvm(): { skip: string | false } {
  const r = kvmUnavailableReason();
  return { skip: r ? `needs /dev/kvm: ${r}` : false };
}

const flat32 = (type: number, selector: number): Segment => ({ base: 0, limit: 0xffffffff, selector, type, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1 });

/** Sets a vCPU up to run flat 32-bit protected-mode code at 0x1000 (no paging), stack at 0x8000. */
export function flat32AtPage1(kvm: Kvm, vcpu: Vcpu): void {
  vcpu.setCpuid(kvm.supportedCpuid());
  vcpu.setInitialState({
    regs: { rip: 0x1000n, rsp: 0x8000n },
    segs: { cs: flat32(11, 8), ds: flat32(3, 16), es: flat32(3, 16), ss: flat32(3, 16), fs: flat32(3, 16), gs: flat32(3, 16),
      tr: { base: 0, limit: 0x67, selector: 0, type: 11, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0 } },
    cr0: 0x11, cr4: 0, efer: 0,
  });
}
