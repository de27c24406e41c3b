// Test support: whether /dev/kvm can be used here, and a loud skip when not.

import { Kvm } from './kvm.js';

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
