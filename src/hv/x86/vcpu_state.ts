// A vCPU's registers in KVM's layout (struct kvm_regs and kvm_sregs,
// asm/kvm.h), whichever CPU runs it: the form a core dump records them in.

import { KVM_REGS_SIZE, KVM_SREGS_SIZE, SREGS } from '../../kvm/abi.js';
import { writeKvmSegment } from '../../kvm/kvm.js';
import type { AccelVcpu, SegName } from '../../accel/vcpu.js';

const SEGS: SegName[] = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'];

export function kvmLayoutRegisters(hw: AccelVcpu): { regs: Uint8Array; sregs: Uint8Array } {
  const regs = new Uint8Array(KVM_REGS_SIZE);
  const r = new DataView(regs.buffer);
  for (let i = 0; i < 18; i++) r.setBigUint64(i * 8, hw.reg(i), true);
  const sregs = new Uint8Array(KVM_SREGS_SIZE);
  const d = new DataView(sregs.buffer);
  for (const name of SEGS) writeKvmSegment(d, SREGS[name], hw.segment(name));
  for (const t of ['gdt', 'idt'] as const) {
    const v = hw.descriptorTable(t);
    d.setBigUint64(SREGS[t], v.base, true);
    d.setUint16(SREGS[t] + 8, v.limit, true);
  }
  d.setBigUint64(SREGS.cr0, BigInt(hw.cr0), true);
  d.setBigUint64(SREGS.cr2, hw.cr2, true);
  d.setBigUint64(SREGS.cr3, hw.cr3, true);
  d.setBigUint64(SREGS.cr4, BigInt(hw.cr4), true);
  d.setBigUint64(SREGS.efer, BigInt(hw.efer), true);
  return { regs, sregs };
}
