// Which CPU runs guest code, named as QEMU names it: `kvm`, `tcg` (the
// software CPU), or `auto`. The choice and the reason are reported (the
// hypervisor log, `xl info`), never made silently.

import fs from 'node:fs';
import { Kvm, KvmError } from '../kvm/kvm.js';
import { KVM_XEN_HVM_CONFIG } from '../kvm/abi.js';
import { unicornAvailable } from '../tcg/unicorn.js';
import type { DomainSpec } from './domain.js';

/** `kvm+tcg`: KVM with the software CPU beside it, guest CPL0 code in the software CPU where KVM emulates it (hybrid.ts). */
export type AccelMode = 'auto' | 'kvm' | 'tcg' | 'kvm+tcg';
export const ACCEL_MODES: readonly AccelMode[] = ['auto', 'kvm', 'tcg', 'kvm+tcg'];

export interface AccelChoice {
  /** What runs the domains' vCPUs. */
  accel: 'kvm' | 'tcg';
  /** KVM with the software CPU beside it: an instruction KVM cannot emulate runs there (hybrid.ts). */
  fallback: boolean;
  /** With `fallback`: guest CPL 0 code runs in the software CPU, CPL 3 code in KVM (a host whose KVM emulates CPL 0). */
  kernelInSoftware: boolean;
  /** One line for a user: what was chosen and why. */
  why: string;
  /** /dev/kvm can be used here (whatever was chosen). */
  kvmUsable: boolean;
  /** This host's KVM emulates guest CPL0 code in software (PVM): kernel code runs there ~1000x slower. */
  kvmEmulatesCpl0: boolean;
  /**
   * KVM hands guests' VMCALL/VMMCALL to us (KVM_CAP_XEN_HVM with
   * KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL). Without it KVM answers them itself as
   * its own hypercalls (-KVM_ENOSYS), so a guest that makes Xen hypercalls that
   * way (Linux since 6.1.123) cannot run on KVM; the software CPU traps them.
   */
  kvmXenHypercalls: boolean;
}

/** Whether KVM_CAP_XEN_HVM's flags say VMCALL/VMMCALL reach user space. */
export function xenHypercallIntercept(flags: number): boolean {
  return (flags & KVM_XEN_HVM_CONFIG.INTERCEPT_HCALL) !== 0;
}

/** The note a KVM choice carries about VMCALL hypercalls. */
function hcallNote(kvmXenHypercalls: boolean): string {
  return kvmXenHypercalls
    ? '; VMCALL/VMMCALL hypercalls through KVM\'s Xen intercept (KVM_CAP_XEN_HVM, KVM_EXIT_XEN)'
    : '; VMCALL/VMMCALL hypercalls (Linux since 6.1.123) do not reach xenode on this KVM (no KVM_CAP_XEN_HVM intercept): such guests need --accel tcg';
}

/** PVM ("pagetable-based virtual machine") is the KVM of hosts without VMX/SVM: it emulates every CPL0 instruction. */
function kvmIsPvm(): boolean {
  return fs.existsSync('/sys/module/kvm_pvm');
}

/** null when KVM can be used (and its KVM_CAP_XEN_HVM flags), else why not. */
function probeKvm(): { why: string | null; xenHvm: number } {
  try {
    const k = Kvm.open();
    try {
      k.requireCapabilities();
      return { why: null, xenHvm: k.checkExtension('XEN_HVM') };
    } finally {
      k.close();
    }
  } catch (e) {
    if (e instanceof KvmError || (e as { call?: string }).call) return { why: (e as Error).message, xenHvm: 0 };
    throw e;
  }
}

export class AccelError extends Error {}

export function chooseAccel(mode: AccelMode): AccelChoice {
  const probe = probeKvm();
  const kvmWhy = probe.why;
  const kvmUsable = kvmWhy === null;
  const kvmXenHypercalls = kvmUsable && xenHypercallIntercept(probe.xenHvm);
  const pvm = kvmUsable && kvmIsPvm();
  const tcg = unicornAvailable();
  switch (mode) {
    case 'kvm':
      if (!kvmUsable) throw new AccelError(`--accel kvm: ${kvmWhy}`);
      return { accel: 'kvm', fallback: false, kernelInSoftware: false, kvmUsable, kvmEmulatesCpl0: pvm, kvmXenHypercalls, why: (pvm ? "kvm (asked for; this host's KVM is PVM: it emulates guest CPL0 code at ~1 us per instruction and cannot run many instructions there" : 'kvm (asked for') + `${hcallNote(kvmXenHypercalls)})` };
    case 'tcg':
      if (!tcg.ok) throw new AccelError(`--accel tcg: ${tcg.why}`);
      return { accel: 'tcg', fallback: false, kernelInSoftware: false, kvmUsable, kvmEmulatesCpl0: pvm, kvmXenHypercalls, why: `tcg (asked for; Unicorn ${tcg.version})` };
    case 'kvm+tcg':
      if (!kvmUsable) throw new AccelError(`--accel kvm+tcg: ${kvmWhy}`);
      if (!tcg.ok) throw new AccelError(`--accel kvm+tcg: ${tcg.why}`);
      return {
        accel: 'kvm', fallback: true, kernelInSoftware: pvm, kvmUsable, kvmEmulatesCpl0: pvm, kvmXenHypercalls,
        why: pvm
          ? `kvm+tcg (asked for; this host's KVM is PVM, which emulates guest CPL0 code: CPL0 code runs in the software CPU, Unicorn ${tcg.version}, CPL3 code in KVM${hcallNote(kvmXenHypercalls)})`
          : `kvm+tcg (asked for; what KVM cannot emulate runs in the software CPU, Unicorn ${tcg.version}${hcallNote(kvmXenHypercalls)})`,
      };
    case 'auto':
      if (kvmUsable && tcg.ok && !pvm) {
        return {
          accel: 'kvm', fallback: true, kernelInSoftware: false, kvmUsable, kvmEmulatesCpl0: false, kvmXenHypercalls,
          why: `kvm (auto: hardware-assisted KVM; what it cannot emulate runs in the software CPU, Unicorn ${tcg.version}${hcallNote(kvmXenHypercalls)})`,
        };
      }
      if (kvmUsable && tcg.ok) {
        // The split (kvm+tcg) runs CPL3 in KVM, but under PVM a guest's SYSCALL from CPL3 never reaches its
        // kernel (PVM stops at the target still at CPL3), so Linux's user space dies at its first system call.
        return {
          accel: 'tcg', fallback: false, kernelInSoftware: false, kvmUsable, kvmEmulatesCpl0: pvm, kvmXenHypercalls,
          why: `tcg (auto: this host's KVM is PVM, which emulates guest CPL0 code; the software CPU, Unicorn ${tcg.version}, runs all guest code: --accel kvm+tcg runs CPL3 code in KVM, but SYSCALL from CPL3 does not reach the guest's kernel under PVM)`,
        };
      }
      if (kvmUsable) return { accel: 'kvm', fallback: false, kernelInSoftware: false, kvmUsable, kvmEmulatesCpl0: pvm, kvmXenHypercalls, why: `kvm (auto: the software CPU is unavailable: ${tcg.ok ? '' : tcg.why}${hcallNote(kvmXenHypercalls)})` };
      if (tcg.ok) {
        return { accel: 'tcg', fallback: false, kernelInSoftware: false, kvmUsable, kvmEmulatesCpl0: false, kvmXenHypercalls, why: `tcg (auto: /dev/kvm cannot be used here: ${kvmWhy}; the software CPU is Unicorn ${tcg.version})` };
      }
      throw new AccelError(`no CPU to run guests: /dev/kvm: ${kvmWhy}; software CPU: ${tcg.why}`);
  }
}

/** Which CPU runs a domain's vCPUs, in words (the log; `xl list -l`). */
export function domainCpu(spec: Pick<DomainSpec, 'accel' | 'software'>): string {
  if (spec.accel === 'tcg') return 'tcg (the software CPU)';
  if (!spec.software) return 'kvm';
  return spec.software.kernelInSoftware
    ? 'kvm+tcg (CPL0 code in the software CPU, CPL3 code in KVM)'
    : 'kvm (what KVM cannot emulate runs in the software CPU)';
}
