// Which CPU runs guest code, named as QEMU names it: `kvm`, `tcg` (the
// software CPU), or `auto`. The choice and the reason are reported (the
// hypervisor log, `xl info`), never made silently.

import fs from 'node:fs';
import { Kvm, KvmError } from '../kvm/kvm.js';
import { unicornAvailable } from '../tcg/unicorn.js';

export type AccelMode = 'auto' | 'kvm' | 'tcg';
export const ACCEL_MODES: readonly AccelMode[] = ['auto', 'kvm', 'tcg'];

export interface AccelChoice {
  /** What runs the domains' vCPUs. */
  accel: 'kvm' | 'tcg';
  /** One line for a user: what was chosen and why. */
  why: string;
  /** /dev/kvm can be used here (whatever was chosen). */
  kvmUsable: boolean;
  /** This host's KVM emulates guest CPL0 code in software (PVM): kernel code runs there ~1000x slower. */
  kvmEmulatesCpl0: boolean;
}

/** PVM ("pagetable-based virtual machine") is the KVM of hosts without VMX/SVM: it emulates every CPL0 instruction. */
function kvmIsPvm(): boolean {
  return fs.existsSync('/sys/module/kvm_pvm');
}

function probeKvm(): string | null {
  try {
    const k = Kvm.open();
    try {
      k.requireCapabilities();
    } finally {
      k.close();
    }
    return null;
  } catch (e) {
    if (e instanceof KvmError || (e as { call?: string }).call) return (e as Error).message;
    throw e;
  }
}

export class AccelError extends Error {}

export function chooseAccel(mode: AccelMode): AccelChoice {
  const kvmWhy = probeKvm();
  const kvmUsable = kvmWhy === null;
  const pvm = kvmUsable && kvmIsPvm();
  const tcg = unicornAvailable();
  switch (mode) {
    case 'kvm':
      if (!kvmUsable) throw new AccelError(`--accel kvm: ${kvmWhy}`);
      return { accel: 'kvm', kvmUsable, kvmEmulatesCpl0: pvm, why: pvm ? "kvm (asked for; this host's KVM is PVM: it emulates guest CPL0 code at ~1 us per instruction and cannot run many instructions there)" : 'kvm (asked for)' };
    case 'tcg':
      if (!tcg.ok) throw new AccelError(`--accel tcg: ${tcg.why}`);
      return { accel: 'tcg', kvmUsable, kvmEmulatesCpl0: pvm, why: `tcg (asked for; Unicorn ${tcg.version})` };
    case 'auto':
      if (kvmUsable && !pvm) return { accel: 'kvm', kvmUsable, kvmEmulatesCpl0: false, why: 'kvm (auto: hardware-assisted KVM)' };
      if (tcg.ok) {
        return {
          accel: 'tcg', kvmUsable, kvmEmulatesCpl0: pvm,
          why: kvmUsable
            ? `tcg (auto: this host's KVM is PVM, which emulates guest CPL0 code; the software CPU, Unicorn ${tcg.version}, runs all guest code)`
            : `tcg (auto: /dev/kvm cannot be used here: ${kvmWhy}; the software CPU is Unicorn ${tcg.version})`,
        };
      }
      if (kvmUsable) return { accel: 'kvm', kvmUsable, kvmEmulatesCpl0: pvm, why: `kvm (auto: the software CPU is unavailable: ${tcg.why})` };
      throw new AccelError(`no CPU to run guests: /dev/kvm: ${kvmWhy}; software CPU: ${tcg.why}`);
  }
}
