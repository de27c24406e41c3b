// Test support: which CPUs can run guests here (KVM, the software CPU), and a
// loud skip when one cannot. In CI (CI=true) the software CPU is required:
// scripts/setup.sh installs it, so its absence is a broken set-up, not a skip.

import { kvmUnavailableReason } from '../kvm/testing.js';
import { unicornAvailable } from '../tcg/unicorn.js';

let tcgWhy: string | null | undefined;

/** null when the software CPU can run here, else why not. */
export function tcgUnavailableReason(): string | null {
  if (tcgWhy !== undefined) return tcgWhy;
  const a = unicornAvailable();
  tcgWhy = a.ok ? null : a.why;
  if (tcgWhy) {
    if (process.env.CI === 'true') throw new Error(`the software CPU is required in CI: ${tcgWhy}`);
    process.stderr.write(`\n*** SKIPPING SOFTWARE CPU TESTS: ${tcgWhy} ***\n\n`);
  }
  return tcgWhy;
}

/** Options for node:test: skip (loudly) when the software CPU cannot run here. */
export function needsTcg(): { skip: string | false } {
  const r = tcgUnavailableReason();
  return { skip: r ? `needs the software CPU: ${r}` : false };
}

/** Options for node:test: skip (loudly) only when no CPU at all can run guests here (--accel auto's choice). */
export function needsGuestCpu(): { skip: string | false } {
  const tcg = tcgUnavailableReason();
  const kvm = kvmUnavailableReason();
  return { skip: tcg && kvm ? `needs /dev/kvm or the software CPU: ${kvm}; ${tcg}` : false };
}

/** The --accel modes that can run here, each with a runnable CPU. */
export function runnableAccels(): ('kvm' | 'tcg' | 'auto' | 'kvm+tcg')[] {
  const out: ('kvm' | 'tcg' | 'auto' | 'kvm+tcg')[] = [];
  if (!kvmUnavailableReason()) out.push('kvm');
  if (!tcgUnavailableReason()) out.push('tcg');
  if (out.length === 2) out.push('kvm+tcg');
  if (out.length) out.push('auto');
  return out;
}
