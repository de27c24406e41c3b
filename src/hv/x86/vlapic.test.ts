import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { DEFAULT_WAIT_MS } from '../../testing/wait.js';
import {
  Vlapic, APIC, APIC_ESR, APIC_LVT_MASKED, APIC_TIMER_MODE, APIC_DM, APIC_SHORT, APIC_DEST_LOGICAL, APIC_INT_ASSERT,
  APIC_INT_LEVELTRIG, MSR_IA32_APICBASE, MSR_IA32_TSC_DEADLINE, VLAPIC_SHARED_BYTES, VLAPIC_SHARED_WORDS,
  acceptInterrupt, setIrq, ipiTargets, type Ipi, type VlapicClock,
} from './vlapic.js';

/** A clock the test moves by hand; the guest TSC runs at 2 GHz (2 ticks per ns). */
class FakeClock implements VlapicClock {
  t = 1_000_000n;
  readonly tscKhz = 2_000_000;
  now(): bigint { return this.t; }
  guestTsc(): bigint { return this.t * 2n; }
}

interface Opts { vcpuId?: number; x2apic?: boolean; tscDeadline?: boolean; clock?: FakeClock }
function lapic(o: Opts = {}): { l: Vlapic; clock: FakeClock } {
  const clock = o.clock ?? new FakeClock();
  const l = new Vlapic({ vcpuId: o.vcpuId ?? 0, x2apic: o.x2apic ?? true, tscDeadline: o.tscDeadline ?? true, clock });
  return { l, clock };
}
const rd = (l: Vlapic, off: number): number => l.mmioRead(off, 4);
const wr = (l: Vlapic, off: number, v: number): Ipi | null => l.mmioWrite(off, 4, v);
/** Software-enables the APIC (SVR bit 8, spurious vector 0xff). */
const enable = (l: Vlapic): void => { wr(l, APIC.SPIV, 0x1ff); };
const x2msr = (off: number): number => 0x800 + (off >> 4);
function toX2apic(l: Vlapic): void {
  assert.equal(l.wrmsr(MSR_IA32_APICBASE, 0xfee00000n | 0xc00n).gp, false);
}
/** The guest's view of ESR: write (latch), then read. */
function esr(l: Vlapic): number {
  wr(l, APIC.ESR, 0);
  return rd(l, APIC.ESR);
}
/** Injects what the APIC offers, as the pCPU loop does before entry. */
function inject(l: Vlapic): number {
  const v = l.pendingVector();
  if (v >= 0) l.ackInterrupt(v);
  return v;
}

// --- reset and register access ---------------------------------------------

test('reset values: ID = vCPU id << 24, version 0x50014, DFR flat, SVR 0xff (software-disabled), every LVT masked', () => {
  const { l } = lapic({ vcpuId: 3 });
  assert.equal(rd(l, APIC.ID), 3 << 24);
  assert.equal(rd(l, APIC.LVR), 0x00050014);
  for (const r of [APIC.TASKPRI, APIC.PROCPRI, APIC.LDR, APIC.ESR, APIC.ICR, APIC.ICR2, APIC.TMICT, APIC.TMCCT, APIC.TDCR]) assert.equal(rd(l, r), 0, `reg 0x${r.toString(16)}`);
  assert.equal(rd(l, APIC.DFR), 0xffffffff);
  assert.equal(rd(l, APIC.SPIV), 0xff);
  for (const r of [APIC.LVTT, APIC.LVTTHMR, APIC.LVTPC, APIC.LVT0, APIC.LVT1, APIC.LVTERR]) assert.equal(rd(l, r), APIC_LVT_MASKED);
  for (let i = 0; i < 8; i++) for (const b of [APIC.ISR, APIC.TMR, APIC.IRR]) assert.equal(rd(l, b + 0x10 * i), 0);
  assert.equal(l.enabled, false);
});

test('the base MSR: 0xFEE00000 enabled, BSP only on vCPU 0; the MMIO window is the 4 KiB page there', () => {
  assert.equal(lapic({ vcpuId: 0 }).l.rdmsr(MSR_IA32_APICBASE).value, 0xfee00900n);
  const { l } = lapic({ vcpuId: 1 });
  assert.equal(l.rdmsr(MSR_IA32_APICBASE).value, 0xfee00800n);
  assert.equal(l.mmioOffset(0xfee00000n), 0);
  assert.equal(l.mmioOffset(0xfee00ffcn), 0xffc);
  assert.equal(l.mmioOffset(0xfee01000n), -1);
  assert.equal(l.mmioOffset(0xfedff000n), -1);
});

test('read-only registers ignore MMIO writes: version, PPR, ISR, TMR, IRR, current count', () => {
  const { l } = lapic();
  enable(l);
  for (const r of [APIC.LVR, APIC.PROCPRI, APIC.ISR, APIC.ISR + 0x70, APIC.TMR, APIC.IRR, APIC.IRR + 0x10, APIC.TMCCT]) {
    const before = rd(l, r);
    wr(l, r, 0xffffffff);
    assert.equal(rd(l, r), before, `reg 0x${r.toString(16)}`);
  }
  assert.equal(l.pendingVector(), -1, 'a write to IRR does not raise anything');
});

test('register write masks: TPR 8 bits, LDR bits 31:24, DFR low bits read as ones, SVR 10 bits, TDCR bits 0,1,3', () => {
  const { l } = lapic();
  wr(l, APIC.TASKPRI, 0x1234);
  assert.equal(rd(l, APIC.TASKPRI), 0x34);
  wr(l, APIC.LDR, 0x12345678);
  assert.equal(rd(l, APIC.LDR), 0x12000000);
  wr(l, APIC.DFR, 0);
  assert.equal(rd(l, APIC.DFR), 0x0fffffff);
  wr(l, APIC.SPIV, 0xffffffff);
  assert.equal(rd(l, APIC.SPIV), 0x3ff);
  wr(l, APIC.TDCR, 0xff);
  assert.equal(rd(l, APIC.TDCR), 0xb);
  wr(l, APIC.LVT0, 0xffffffff);
  assert.equal(rd(l, APIC.LVT0), 0x1f7ff, 'LINT: vector, mode, status, polarity, remote IRR, trigger, mask');
  wr(l, APIC.LVTERR, 0xffffffff);
  assert.equal(rd(l, APIC.LVTERR), 0x110ff);
});

test('MMIO: sub-word accesses inside one register work; wider, straddling and out-of-range ones read 0 and write nothing', () => {
  const { l } = lapic({ vcpuId: 0x12 });
  assert.equal(l.mmioRead(APIC.LVR, 1), 0x14);
  assert.equal(l.mmioRead(APIC.LVR + 2, 1), 0x05);
  assert.equal(l.mmioRead(APIC.LVR + 2, 2), 0x0005);
  assert.equal(l.mmioRead(APIC.ID + 3, 1), 0x12);
  assert.equal(l.mmioRead(APIC.LVR + 3, 2), 0, 'straddles the 32-bit register');
  assert.equal(l.mmioRead(APIC.LVR + 4, 4), 0, 'bytes 4..15 of a register slot');
  assert.equal(l.mmioRead(APIC.LVR, 8), 0, '8-byte access');
  assert.equal(l.mmioRead(0x400, 4), 0, 'beyond the last register');
  wr(l, APIC.TASKPRI, 0x00);
  l.mmioWrite(APIC.TASKPRI, 1, 0x7f);
  assert.equal(rd(l, APIC.TASKPRI), 0x7f);
  l.mmioWrite(APIC.LDR + 2, 2, 0xab00);
  assert.equal(rd(l, APIC.LDR), 0xab000000, 'a 2-byte write merges into the register');
  l.mmioWrite(APIC.TASKPRI + 3, 2, 0xffff);
  l.mmioWrite(APIC.TASKPRI, 8, 0xff);
  assert.equal(rd(l, APIC.TASKPRI), 0x7f);
});

// --- acceptance, priority, EOI ----------------------------------------------

test('interrupts are dropped while software-disabled; the upcall path (setIrq) holds its vector until the APIC is enabled', () => {
  const { l } = lapic();
  assert.equal(l.accept(0x40), false);
  assert.equal(rd(l, APIC.IRR + 0x20), 0);
  assert.equal(l.setIrq(0x41), true);
  assert.equal(l.pendingVector(), -1, 'nothing is injected while disabled');
  enable(l);
  assert.equal(l.pendingVector(), 0x41);
  assert.equal(l.accept(0x40), true, 'newly pending: the caller kicks');
  assert.equal(l.accept(0x40), false, 'already pending: no second kick');
  assert.equal(rd(l, APIC.IRR + 0x20), 0b11);
});

test('the highest vector is injected first and moves IRR -> ISR; EOI retires in-service vectors highest first', () => {
  const { l } = lapic();
  enable(l);
  l.accept(0x31);
  assert.equal(inject(l), 0x31);
  assert.ok(l.isInService(0x31) && !l.isRequested(0x31));
  l.accept(0x32);
  assert.equal(l.pendingVector(), -1, 'same priority class as the in-service vector waits');
  l.accept(0x51);
  assert.equal(inject(l), 0x51, 'a higher class nests');
  assert.equal(rd(l, APIC.ISR + 0x20), 1 << (0x51 - 0x40));
  assert.equal(rd(l, APIC.PROCPRI), 0x50);
  wr(l, APIC.EOI, 0);
  assert.ok(!l.isInService(0x51) && l.isInService(0x31), 'EOI pops the highest in-service vector');
  assert.equal(l.pendingVector(), -1, '0x32 still waits for 0x31');
  wr(l, APIC.EOI, 0xdead);
  assert.equal(l.isInService(0x31), false, 'any value is an EOI in xAPIC mode');
  assert.equal(inject(l), 0x32);
  wr(l, APIC.EOI, 0);
  wr(l, APIC.EOI, 0);
  assert.equal(rd(l, APIC.ISR + 0x10), 0, 'EOI with nothing in service does nothing');
});

test('TPR masks priority classes at or below it; PPR is the higher of TPR and the in-service class', () => {
  const { l } = lapic();
  enable(l);
  wr(l, APIC.TASKPRI, 0x57);
  assert.equal(rd(l, APIC.PROCPRI), 0x57);
  l.accept(0x5f);
  assert.equal(l.pendingVector(), -1, 'class 5 <= TPR class 5');
  l.accept(0x60);
  assert.equal(inject(l), 0x60);
  assert.equal(rd(l, APIC.PROCPRI), 0x60, 'ISR class above TPR: PPR = ISR class');
  wr(l, APIC.TASKPRI, 0x80);
  assert.equal(rd(l, APIC.PROCPRI), 0x80);
  wr(l, APIC.EOI, 0);
  wr(l, APIC.TASKPRI, 0x40);
  assert.equal(inject(l), 0x5f, 'lowering TPR releases the held vector');
});

test('software-disabling masks every LVT entry, LVT writes stay masked while disabled, enabling unmasks none', () => {
  const { l } = lapic();
  enable(l);
  wr(l, APIC.LVTT, 0x40);
  wr(l, APIC.LVT0, 0x700);
  assert.equal(rd(l, APIC.LVTT), 0x40);
  wr(l, APIC.SPIV, 0xff);
  assert.equal(rd(l, APIC.LVTT), APIC_LVT_MASKED | 0x40);
  assert.equal(rd(l, APIC.LVT0), APIC_LVT_MASKED | 0x700);
  wr(l, APIC.LVTPC, 0x41);
  assert.equal(rd(l, APIC.LVTPC), APIC_LVT_MASKED | 0x41);
  enable(l);
  assert.equal(rd(l, APIC.LVTT), APIC_LVT_MASKED | 0x40);
  l.setIrq(0x70);
  wr(l, APIC.SPIV, 0xff);
  assert.equal(l.pendingVector(), -1, 'a pending vector is held while disabled');
  enable(l);
  assert.equal(l.pendingVector(), 0x70);
});

// --- illegal vectors and ESR --------------------------------------------------

test('illegal vectors (< 16) set ESR bits instead of IRR; ESR shows errors latched before the last ESR write', () => {
  const { l } = lapic();
  enable(l);
  assert.equal(l.accept(5), false);
  assert.equal(rd(l, APIC.IRR), 0);
  assert.equal(rd(l, APIC.ESR), 0, 'not visible before the guest writes ESR');
  assert.equal(esr(l), APIC_ESR.RECVILL);
  assert.equal(esr(l), 0, 'the write cleared it');
  assert.equal(wr(l, APIC.ICR, APIC_DM.FIXED | 0x0f), null, 'a fixed IPI with an illegal vector is not sent');
  assert.equal(esr(l), APIC_ESR.SENDILL);
  wr(l, APIC.ICR, APIC_DM.LOWEST | 0x01);
  assert.equal(esr(l), APIC_ESR.SENDILL);
  const nmi = wr(l, APIC.ICR, APIC_DM.NMI | APIC_SHORT.SELF);
  assert.equal(nmi?.mode, 'nmi', 'the vector of an NMI is not checked');
  assert.equal(esr(l), 0);
});

test('a newly latched error raises the LVT error vector unless masked; an illegal error vector folds into RECVILL', () => {
  const { l } = lapic();
  enable(l);
  wr(l, APIC.LVTERR, 0xee);
  l.accept(3);
  assert.equal(inject(l), 0xee);
  wr(l, APIC.EOI, 0);
  l.accept(4);
  assert.equal(l.pendingVector(), -1, 'the same bit again, not yet cleared by an ESR write: no new interrupt');
  wr(l, APIC.ICR, 2);
  assert.equal(inject(l), 0xee, 'a different bit interrupts again');
  wr(l, APIC.EOI, 0);
  wr(l, APIC.LVTERR, 0x08);
  esr(l);
  wr(l, APIC.ICR, 2);
  assert.equal(l.pendingVector(), -1);
  assert.equal(esr(l), APIC_ESR.SENDILL | APIC_ESR.RECVILL);
  wr(l, APIC.LVTERR, APIC_LVT_MASKED | 0xee);
  l.accept(1);
  assert.equal(l.pendingVector(), -1, 'masked: latched only');
  assert.equal(esr(l), APIC_ESR.RECVILL);
});

// --- IPIs --------------------------------------------------------------------

/** A domain of n vCPUs, all software-enabled. */
function domain(n: number, o: Opts = {}): { apics: Vlapic[]; views: Int32Array[]; clock: FakeClock } {
  const clock = o.clock ?? new FakeClock();
  const apics = Array.from({ length: n }, (_, i) => lapic({ ...o, vcpuId: i, clock }).l);
  for (const a of apics) enable(a);
  return { apics, views: apics.map((a) => a.shared), clock };
}

function sendXapic(a: Vlapic, low: number, destId = 0): Ipi {
  wr(a, APIC.ICR2, destId << 24);
  const ipi = wr(a, APIC.ICR, low);
  assert.ok(ipi);
  return ipi;
}

test('ICR fixed, physical destination: the named APIC ID, or 0xff for all; delivery status always reads idle', () => {
  const { apics, views } = domain(4);
  const ipi = sendXapic(apics[0]!, APIC_DM.FIXED | 0x40 | 0x1000, 2);
  assert.deepEqual({ mode: ipi.mode, vector: ipi.vector, shorthand: ipi.shorthand, logical: ipi.logical, dest: ipi.dest, source: ipi.source },
    { mode: 'fixed', vector: 0x40, shorthand: 'none', logical: false, dest: 2, source: 0 });
  assert.deepEqual(ipiTargets(ipi, views), [2]);
  assert.equal(rd(apics[0]!, APIC.ICR), 0x40, 'bit 12 (send pending) is never set');
  assert.equal(rd(apics[0]!, APIC.ICR2), 2 << 24);
  assert.deepEqual(ipiTargets(sendXapic(apics[1]!, 0x40, 0xff), views), [0, 1, 2, 3]);
  assert.deepEqual(ipiTargets(sendXapic(apics[1]!, 0x40, 7), views), []);
  for (const id of ipiTargets(ipi, views)) assert.equal(acceptInterrupt(views[id]!, ipi.vector), true);
  assert.equal(apics[2]!.pendingVector(), 0x40);
  assert.equal(apics[0]!.pendingVector(), -1);
});

test('ICR shorthands: self, all including self, all excluding self (the destination field is ignored)', () => {
  const { apics, views } = domain(3);
  const s = apics[1]!;
  assert.deepEqual(ipiTargets(sendXapic(s, APIC_SHORT.SELF | 0x50, 0), views), [1]);
  assert.deepEqual(ipiTargets(sendXapic(s, APIC_SHORT.ALLINC | 0x50, 0), views), [0, 1, 2]);
  assert.deepEqual(ipiTargets(sendXapic(s, APIC_SHORT.ALLBUT | 0x50, 1), views), [0, 2]);
  assert.equal(sendXapic(s, APIC_SHORT.ALLBUT | 0x50).shorthand, 'others');
});

test('ICR logical destination, xAPIC flat model: LDR bits ANDed with the 8-bit destination', () => {
  const { apics, views } = domain(4);
  apics.forEach((a, i) => wr(a, APIC.LDR, (1 << i) << 24));
  assert.deepEqual(ipiTargets(sendXapic(apics[0]!, APIC_DEST_LOGICAL | 0x40, 0b1010), views), [1, 3]);
  assert.deepEqual(ipiTargets(sendXapic(apics[0]!, APIC_DEST_LOGICAL | 0x40, 0xff), views), [0, 1, 2, 3]);
  assert.ok(apics[3]!.matchesLogical(0x08) && !apics[3]!.matchesLogical(0x07));
});

test('ICR logical destination, xAPIC cluster model: cluster in the high nibble, members in the low nibble', () => {
  const { apics, views } = domain(4);
  const ldr = [0x11, 0x12, 0x21, 0x22];
  apics.forEach((a, i) => { wr(a, APIC.DFR, 0x0fffffff); wr(a, APIC.LDR, ldr[i]! << 24); });
  assert.deepEqual(ipiTargets(sendXapic(apics[0]!, APIC_DEST_LOGICAL | 0x40, 0x23), views), [2, 3]);
  assert.deepEqual(ipiTargets(sendXapic(apics[0]!, APIC_DEST_LOGICAL | 0x40, 0x12), views), [1]);
  assert.deepEqual(ipiTargets(sendXapic(apics[0]!, APIC_DEST_LOGICAL | 0x40, 0x32), views), []);
});

test('ICR lowest priority: one enabled target, the one with the lowest PPR', () => {
  const { apics, views } = domain(4);
  wr(apics[0]!, APIC.TASKPRI, 0x30);
  wr(apics[1]!, APIC.TASKPRI, 0x20);
  wr(apics[2]!, APIC.TASKPRI, 0x10);
  wr(apics[3]!, APIC.SPIV, 0xff);
  const ipi = sendXapic(apics[0]!, APIC_DM.LOWEST | APIC_SHORT.ALLINC | 0x40);
  assert.equal(ipi.mode, 'lowest');
  assert.deepEqual(ipiTargets(ipi, views), [2], 'vCPU 3 is software-disabled, vCPU 2 has the lowest PPR');
});

test('NMI, INIT and STARTUP are reported for the caller; an INIT level de-assert sends nothing', () => {
  const { apics } = domain(2);
  assert.equal(sendXapic(apics[0]!, APIC_DM.NMI, 1).mode, 'nmi');
  assert.equal(sendXapic(apics[0]!, APIC_DM.INIT | APIC_INT_ASSERT | APIC_INT_LEVELTRIG, 1).mode, 'init');
  assert.equal(wr(apics[0]!, APIC.ICR, APIC_DM.INIT | APIC_INT_LEVELTRIG), null);
  const sipi = sendXapic(apics[0]!, APIC_DM.STARTUP | 0x9a, 1);
  assert.deepEqual([sipi.mode, sipi.vector], ['startup', 0x9a]);
  assert.equal(sendXapic(apics[0]!, APIC_DM.SMI, 1).mode, 'smi');
  assert.equal(sendXapic(apics[0]!, APIC_DM.EXTINT, 1).mode, 'extint');
});

// --- x2APIC --------------------------------------------------------------------

test('x2APIC MSRs #GP until x2APIC mode; in x2APIC mode the MMIO window is no longer decoded', () => {
  const { l } = lapic({ vcpuId: 1 });
  assert.equal(l.rdmsr(x2msr(APIC.ID)).gp, true);
  assert.equal(l.wrmsr(x2msr(APIC.EOI), 0n).gp, true);
  toX2apic(l);
  assert.equal(l.x2apicMode, true);
  assert.equal(l.mmioOffset(0xfee00000n), -1);
  assert.deepEqual(l.rdmsr(x2msr(APIC.ID)), { gp: false, value: 1n, ipi: null });
  assert.equal(l.rdmsr(x2msr(APIC.LVR)).value, 0x50014n);
});

test('x2APIC ID is the vCPU id and the LDR is read-only cluster << 16 | 1 << (id & 15)', () => {
  const { l } = lapic({ vcpuId: 0x23 });
  toX2apic(l);
  assert.equal(l.rdmsr(x2msr(APIC.ID)).value, 0x23n);
  assert.equal(l.rdmsr(x2msr(APIC.LDR)).value, (2n << 16n) | (1n << 3n));
  for (const r of [APIC.ID, APIC.LVR, APIC.LDR, APIC.PROCPRI, APIC.ISR, APIC.IRR + 0x70, APIC.TMR, APIC.TMCCT]) {
    assert.equal(l.wrmsr(x2msr(r), 0n).gp, true, `write 0x${x2msr(r).toString(16)}`);
  }
});

test('x2APIC #GP cases: DFR, ICR2 and reserved MSRs do not exist, EOI and SELF_IPI are write-only, reserved bits set', () => {
  const { l } = lapic();
  toX2apic(l);
  for (const m of [x2msr(APIC.DFR), x2msr(APIC.ICR2), 0x801, 0x840, 0x8ff]) {
    assert.equal(l.rdmsr(m).gp, true, `read 0x${m.toString(16)}`);
    assert.equal(l.wrmsr(m, 0n).gp, true, `write 0x${m.toString(16)}`);
  }
  assert.equal(l.rdmsr(x2msr(APIC.EOI)).gp, true);
  assert.equal(l.rdmsr(0x83f).gp, true);
  assert.equal(l.wrmsr(x2msr(APIC.EOI), 1n).gp, true, 'EOI must be written with 0');
  assert.equal(l.wrmsr(x2msr(APIC.ESR), 1n).gp, true, 'ESR must be written with 0');
  assert.equal(l.wrmsr(x2msr(APIC.TASKPRI), 0x100n).gp, true);
  assert.equal(l.wrmsr(x2msr(APIC.SPIV), 0x1000n).gp, true);
  assert.equal(l.wrmsr(x2msr(APIC.LVTT), 0x80000n).gp, true);
  assert.equal(l.wrmsr(x2msr(APIC.LVTERR), 0x700n).gp, true, 'no delivery mode in LVT error');
  assert.equal(l.wrmsr(x2msr(APIC.TDCR), 0x4n).gp, true);
  assert.equal(l.wrmsr(x2msr(APIC.ICR), 0x1000n).gp, true, 'delivery status is not writable');
  assert.equal(l.wrmsr(0x83f, 0x100n).gp, true);
  assert.equal(l.wrmsr(x2msr(APIC.TMICT), 1n << 32n).gp, true, 'bits 63:32 of a 32-bit register');
  assert.equal(l.wrmsr(x2msr(APIC.TASKPRI), 0x20n).gp, false);
  assert.equal(l.rdmsr(x2msr(APIC.TASKPRI)).value, 0x20n);
});

test('x2APIC EOI, SELF_IPI and the 64-bit ICR with 32-bit destinations and cluster logical mode', () => {
  const { apics, views } = domain(20, { x2apic: true });
  for (const a of apics) toX2apic(a);
  const s = apics[0]!;
  const self = s.wrmsr(0x83f, 0x61n);
  assert.deepEqual([self.gp, self.ipi?.shorthand, self.ipi?.vector, self.ipi?.mode], [false, 'self', 0x61, 'fixed']);
  assert.deepEqual(ipiTargets(self.ipi!, views), [0]);
  acceptInterrupt(views[0]!, 0x61);
  assert.equal(inject(s), 0x61);
  assert.equal(s.wrmsr(x2msr(APIC.EOI), 0n).gp, false);
  assert.equal(s.isInService(0x61), false);
  const phys = s.wrmsr(x2msr(APIC.ICR), (17n << 32n) | 0x45n);
  assert.equal(phys.ipi?.dest, 17);
  assert.deepEqual(ipiTargets(phys.ipi!, views), [17]);
  assert.equal(s.rdmsr(x2msr(APIC.ICR)).value, (17n << 32n) | 0x45n);
  const bcast = s.wrmsr(x2msr(APIC.ICR), (0xffffffffn << 32n) | 0x45n);
  assert.equal(ipiTargets(bcast.ipi!, views).length, 20);
  // cluster 1 = vCPUs 16..31; members 0 and 3 -> vCPUs 16 and 19
  const logical = s.wrmsr(x2msr(APIC.ICR), (((1n << 16n) | 0b1001n) << 32n) | BigInt(APIC_DEST_LOGICAL | 0x45));
  assert.deepEqual(ipiTargets(logical.ipi!, views), [16, 19]);
  assert.equal(apics[16]!.matchesLogical(0x10001), true);
  assert.equal(apics[0]!.matchesLogical(0x10001), false);
});

test('base MSR transitions: EXTD only if offered, never x2APIC -> xAPIC or disabled -> x2APIC; relocation and reserved bits #GP', () => {
  const noX2 = lapic({ x2apic: false }).l;
  assert.equal(noX2.wrmsr(MSR_IA32_APICBASE, 0xfee00c00n).gp, true, 'x2APIC not offered');
  const { l } = lapic();
  assert.equal(l.wrmsr(MSR_IA32_APICBASE, 0xfed00900n).gp, true, 'moving the xAPIC window');
  assert.equal(l.wrmsr(MSR_IA32_APICBASE, 0xfee00901n).gp, true, 'reserved bit');
  assert.equal(l.wrmsr(MSR_IA32_APICBASE, 0xfee00500n).gp, true, 'EXTD without ENABLE');
  toX2apic(l);
  assert.equal(l.wrmsr(MSR_IA32_APICBASE, 0xfee00900n).gp, true, 'x2APIC -> xAPIC');
  assert.equal(l.wrmsr(MSR_IA32_APICBASE, 0xfee00100n).gp, false, 'x2APIC -> disabled');
  assert.equal(l.hardwareEnabled, false);
  assert.equal(l.mmioOffset(0xfee00000n), -1);
  assert.equal(l.accept(0x40), false);
  assert.equal(l.wrmsr(MSR_IA32_APICBASE, 0xfee00d00n).gp, true, 'disabled -> x2APIC');
  assert.equal(l.rdmsr(MSR_IA32_APICBASE).value, 0xfee00100n, 'a refused write changes nothing');
});

test('re-enabling a hardware-disabled APIC resets it', () => {
  const { l } = lapic({ vcpuId: 2 });
  enable(l);
  wr(l, APIC.TASKPRI, 0x30);
  l.accept(0x99);
  l.wrmsr(MSR_IA32_APICBASE, 0xfee00000n);
  assert.equal(l.wrmsr(MSR_IA32_APICBASE, 0xfee00800n).gp, false);
  assert.equal(rd(l, APIC.TASKPRI), 0);
  assert.equal(rd(l, APIC.SPIV), 0xff);
  assert.equal(l.isRequested(0x99), false);
  assert.equal(rd(l, APIC.ID), 2 << 24);
});

test('INIT (init(), what an INIT IPI does to its target): x2APIC mode, ID and LDR stay; IRR, ISR, TPR, LVTs, SVR and the timer go', () => {
  const { l, clock } = lapic({ vcpuId: 1 });
  toX2apic(l);
  const ldr = l.rdmsr(x2msr(APIC.LDR)).value;
  assert.equal(l.wrmsr(x2msr(APIC.SPIV), 0x1ffn).gp, false);
  l.wrmsr(x2msr(APIC.TASKPRI), 0x20n);
  l.wrmsr(x2msr(APIC.LVTT), 0x30n);
  l.wrmsr(x2msr(APIC.TMICT), 1000n);
  l.accept(0x99);
  l.accept(0x51);
  assert.equal(inject(l), 0x99, 'one vector in service, one requested');
  assert.notEqual(l.nextDeadline(), 0n);
  l.init();
  assert.equal(l.x2apicMode, true, 'the base MSR is kept');
  assert.equal(l.rdmsr(MSR_IA32_APICBASE).value, 0xfee00c00n);
  assert.equal(l.rdmsr(x2msr(APIC.ID)).value, 1n);
  assert.equal(l.rdmsr(x2msr(APIC.LDR)).value, ldr);
  assert.equal(l.rdmsr(x2msr(APIC.SPIV)).value, 0xffn, 'software-disabled');
  assert.equal(l.enabled, false);
  assert.equal(l.rdmsr(x2msr(APIC.TASKPRI)).value, 0n);
  for (const r of [APIC.LVTT, APIC.LVTTHMR, APIC.LVTPC, APIC.LVT0, APIC.LVT1, APIC.LVTERR]) assert.equal(l.rdmsr(x2msr(r)).value, BigInt(APIC_LVT_MASKED));
  assert.equal([l.isInService(0x99), l.isRequested(0x51), l.pendingVector()].join(), 'false,false,-1');
  assert.equal(l.rdmsr(x2msr(APIC.TMICT)).value, 0n);
  assert.equal(l.nextDeadline(), 0n, 'the timer is stopped');
  clock.t += 1_000_000n;
  assert.equal(l.tick(clock.t), false);
});

test('software-enabling the APIC requests the upcall vector again while an upcall is pending (an INIT cleared its IRR)', () => {
  let pending = 0;
  const l = new Vlapic({ vcpuId: 1, x2apic: true, tscDeadline: true, clock: new FakeClock(), upcallOnEnable: () => pending });
  enable(l);
  assert.equal(l.pendingVector(), -1);
  pending = 0xf3; // the event-channel core set evtchn_upcall_pending and raised the edge
  assert.equal(l.setIrq(0xf3), true);
  l.init(); // the edge is gone with IRR; evtchn_upcall_pending stays set in vcpu_info
  assert.equal(l.isRequested(0xf3), false);
  enable(l);
  assert.equal(inject(l), 0xf3, 'requested again as the guest enables its APIC');
  wr(l, APIC.EOI, 0);
  wr(l, APIC.SPIV, 0x1fe);
  assert.equal(l.pendingVector(), -1, 'a write that leaves it enabled requests nothing');
  wr(l, APIC.SPIV, 0xff);
  pending = 0;
  enable(l);
  assert.equal(l.pendingVector(), -1, 'nothing pending: nothing requested');
});

// --- timer ------------------------------------------------------------------------

/** Bus cycles are 10 ns (100 MHz); TDCR 0xb divides by 1. */
test('one-shot timer: counts TMICT down at 100 MHz / divisor, fires once at the deadline, then reads 0', () => {
  const { l, clock } = lapic();
  enable(l);
  wr(l, APIC.TDCR, 0xb);
  wr(l, APIC.LVTT, 0x30);
  const t0 = clock.t;
  wr(l, APIC.TMICT, 1000);
  assert.equal(rd(l, APIC.TMICT), 1000);
  assert.equal(rd(l, APIC.TMCCT), 1000);
  assert.equal(l.nextDeadline(), t0 + 10_000n);
  clock.t = t0 + 2_500n;
  assert.equal(rd(l, APIC.TMCCT), 750);
  assert.equal(l.tick(clock.t), false, 'not yet due');
  clock.t = t0 + 10_000n;
  assert.equal(l.tick(clock.t), true);
  assert.equal(inject(l), 0x30);
  assert.equal(rd(l, APIC.TMCCT), 0);
  assert.equal(l.nextDeadline(), 0n);
  clock.t += 1_000_000n;
  assert.equal(l.tick(clock.t), false, 'one-shot: no second interrupt');
  wr(l, APIC.TMICT, 0);
  assert.equal(l.nextDeadline(), 0n, 'writing 0 stops the timer');
});

test('periodic timer: reloads TMICT each period; late ticks collapse into one interrupt and keep the phase', () => {
  const { l, clock } = lapic();
  enable(l);
  wr(l, APIC.TDCR, 0xb);
  wr(l, APIC.LVTT, APIC_TIMER_MODE.PERIODIC | 0x31);
  const t0 = clock.t;
  wr(l, APIC.TMICT, 100); // 1 us
  clock.t = t0 + 1_000n;
  assert.equal(l.tick(clock.t), true);
  assert.equal(l.nextDeadline(), t0 + 2_000n);
  clock.t = t0 + 1_250n;
  assert.equal(rd(l, APIC.TMCCT), 75, 'reloaded');
  clock.t = t0 + 5_500n;
  l.tick(clock.t);
  assert.equal(l.nextDeadline(), t0 + 6_000n, 'next boundary after now');
  assert.equal(inject(l), 0x31);
  assert.equal(l.pendingVector(), -1, 'one interrupt for the missed periods');
});

test('divide configuration: TDCR encodings give divisors 2..128 and 1', () => {
  const { l, clock } = lapic();
  enable(l);
  wr(l, APIC.LVTT, 0x30);
  const table: [number, bigint][] = [[0x0, 2n], [0x1, 4n], [0x2, 8n], [0x3, 16n], [0x8, 32n], [0x9, 64n], [0xa, 128n], [0xb, 1n]];
  for (const [tdcr, div] of table) {
    wr(l, APIC.TDCR, tdcr);
    wr(l, APIC.TMICT, 10);
    assert.equal(l.nextDeadline(), clock.t + 10n * 10n * div, `TDCR ${tdcr}`);
  }
});

test('changing the divisor mid-count keeps the current count and scales the time left', () => {
  const { l, clock } = lapic();
  enable(l);
  wr(l, APIC.TDCR, 0xb); // /1
  wr(l, APIC.LVTT, 0x30);
  const t0 = clock.t;
  wr(l, APIC.TMICT, 1000);
  clock.t = t0 + 4_000n; // 400 counted, 600 left
  wr(l, APIC.TDCR, 0x0); // /2
  assert.equal(rd(l, APIC.TMCCT), 600);
  assert.equal(l.nextDeadline(), clock.t + 600n * 20n);
  clock.t += 600n * 10n;
  assert.equal(rd(l, APIC.TMCCT), 300);
});

test('switching one-shot -> periodic keeps the running count; a finished one-shot stays finished', () => {
  const { l, clock } = lapic();
  enable(l);
  wr(l, APIC.TDCR, 0xb);
  wr(l, APIC.LVTT, 0x30);
  const t0 = clock.t;
  wr(l, APIC.TMICT, 100);
  clock.t = t0 + 400n;
  wr(l, APIC.LVTT, APIC_TIMER_MODE.PERIODIC | 0x30);
  assert.equal(rd(l, APIC.TMCCT), 60);
  assert.equal(l.nextDeadline(), t0 + 1_000n);
  clock.t = t0 + 1_000n;
  assert.equal(l.tick(clock.t), true);
  assert.equal(inject(l), 0x30);
  wr(l, APIC.EOI, 0);
  assert.equal(l.nextDeadline(), t0 + 2_000n, 'now periodic');
  wr(l, APIC.LVTT, 0x30);
  clock.t = t0 + 2_000n;
  assert.equal(l.tick(clock.t), true);
  assert.equal(l.nextDeadline(), 0n, 'back to one-shot: stops after this period');
});

test('a masked LVT timer keeps counting but raises nothing, and a missed expiry does not fire on unmask', () => {
  const { l, clock } = lapic();
  enable(l);
  wr(l, APIC.TDCR, 0xb);
  wr(l, APIC.LVTT, APIC_LVT_MASKED | 0x30);
  const t0 = clock.t;
  wr(l, APIC.TMICT, 100);
  assert.equal(l.nextDeadline(), 0n, 'no wakeups for a masked timer');
  clock.t = t0 + 500n;
  assert.equal(rd(l, APIC.TMCCT), 50);
  clock.t = t0 + 2_000n;
  assert.equal(l.tick(clock.t), false);
  wr(l, APIC.LVTT, 0x30);
  assert.equal(l.pendingVector(), -1);
  clock.t += 1_000_000n;
  assert.equal(l.tick(clock.t), false);
  wr(l, APIC.LVTT, APIC_TIMER_MODE.PERIODIC | APIC_LVT_MASKED | 0x30);
  wr(l, APIC.TMICT, 100);
  clock.t += 5_500n;
  wr(l, APIC.LVTT, APIC_TIMER_MODE.PERIODIC | 0x30);
  assert.equal(l.pendingVector(), -1, 'periods that ended while masked are lost');
  assert.equal(l.nextDeadline(), clock.t + 500n);
});

test('a timer with an illegal vector latches RECVILL', () => {
  const { l, clock } = lapic();
  enable(l);
  wr(l, APIC.TDCR, 0xb);
  wr(l, APIC.LVTT, 0x0e);
  wr(l, APIC.TMICT, 1);
  clock.t += 10n;
  assert.equal(l.tick(clock.t), false);
  assert.equal(esr(l), APIC_ESR.RECVILL);
});

test('TSC-deadline: #GP unless offered; without the mode, writes are ignored and reads are 0', () => {
  const off = lapic({ tscDeadline: false }).l;
  assert.equal(off.rdmsr(MSR_IA32_TSC_DEADLINE).gp, true);
  assert.equal(off.wrmsr(MSR_IA32_TSC_DEADLINE, 5n).gp, true);
  enable(off);
  wr(off, APIC.LVTT, APIC_TIMER_MODE.TSC_DEADLINE | 0x30);
  assert.equal(rd(off, APIC.LVTT), 0x30, 'mode 2 is not writable without TSC-deadline');
  const { l, clock } = lapic();
  enable(l);
  wr(l, APIC.LVTT, 0x30);
  assert.equal(l.wrmsr(MSR_IA32_TSC_DEADLINE, clock.guestTsc() + 100n).gp, false);
  assert.equal(l.rdmsr(MSR_IA32_TSC_DEADLINE).value, 0n);
  assert.equal(l.nextDeadline(), 0n);
});

test('TSC-deadline timer: fires when the guest TSC reaches the deadline, then reads 0; a past deadline fires at once; 0 disarms', () => {
  const { l, clock } = lapic();
  enable(l);
  wr(l, APIC.LVTT, APIC_TIMER_MODE.TSC_DEADLINE | 0x32);
  const t0 = clock.t;
  const deadline = clock.guestTsc() + 3_001n; // 2 GHz TSC: 1500.5 ns, rounded up
  l.wrmsr(MSR_IA32_TSC_DEADLINE, deadline);
  assert.equal(l.rdmsr(MSR_IA32_TSC_DEADLINE).value, deadline);
  assert.equal(l.nextDeadline(), t0 + 1_501n);
  wr(l, APIC.TMICT, 5);
  assert.equal(rd(l, APIC.TMICT), 0, 'TMICT is ignored in TSC-deadline mode');
  assert.equal(rd(l, APIC.TMCCT), 0);
  clock.t = t0 + 1_501n;
  assert.equal(l.tick(clock.t), true);
  assert.equal(inject(l), 0x32);
  assert.equal(l.rdmsr(MSR_IA32_TSC_DEADLINE).value, 0n);
  wr(l, APIC.EOI, 0);
  l.wrmsr(MSR_IA32_TSC_DEADLINE, 1n);
  assert.equal(l.pendingVector(), 0x32, 'already past: pending at once');
  l.ackInterrupt(0x32);
  wr(l, APIC.EOI, 0);
  l.wrmsr(MSR_IA32_TSC_DEADLINE, clock.guestTsc() + 1000n);
  l.wrmsr(MSR_IA32_TSC_DEADLINE, 0n);
  assert.equal(l.nextDeadline(), 0n);
  clock.t += 1_000_000n;
  assert.equal(l.tick(clock.t), false);
});

test('TSC-deadline: leaving the mode disarms; a masked deadline passes silently and reads 0', () => {
  const { l, clock } = lapic();
  enable(l);
  wr(l, APIC.LVTT, APIC_TIMER_MODE.TSC_DEADLINE | 0x32);
  l.wrmsr(MSR_IA32_TSC_DEADLINE, clock.guestTsc() + 1000n);
  wr(l, APIC.LVTT, 0x32);
  assert.equal(l.nextDeadline(), 0n);
  wr(l, APIC.LVTT, APIC_TIMER_MODE.TSC_DEADLINE | 0x32);
  assert.equal(l.rdmsr(MSR_IA32_TSC_DEADLINE).value, 0n, 'the deadline did not survive the mode change');
  wr(l, APIC.LVTT, APIC_TIMER_MODE.TSC_DEADLINE | APIC_LVT_MASKED | 0x32);
  const d = clock.guestTsc() + 1000n;
  l.wrmsr(MSR_IA32_TSC_DEADLINE, d);
  assert.equal(l.rdmsr(MSR_IA32_TSC_DEADLINE).value, d);
  clock.t += 500n;
  assert.equal(l.rdmsr(MSR_IA32_TSC_DEADLINE).value, 0n);
  wr(l, APIC.LVTT, APIC_TIMER_MODE.TSC_DEADLINE | 0x32);
  assert.equal(l.pendingVector(), -1);
});

// --- threads, save/restore -----------------------------------------------------------

test('another thread delivers into the shared view with Atomics while this one injects and EOIs', async () => {
  const sab = new SharedArrayBuffer(VLAPIC_SHARED_BYTES);
  const clock = new FakeClock();
  const l = new Vlapic({ vcpuId: 0, x2apic: true, tscDeadline: true, clock, shared: new Int32Array(sab) });
  enable(l);
  const url = new URL('./vlapic.js', import.meta.url).href;
  const src = `const { workerData, parentPort } = require('node:worker_threads');
    import(${JSON.stringify(url)}).then((m) => {
      const view = new Int32Array(workerData);
      let kicks = 0;
      for (let round = 0; round < 2000; round++) for (let v = 0x40; v < 0x60; v++) if (m.acceptInterrupt(view, v)) kicks++;
      parentPort.postMessage(kicks);
    });`;
  const w = new Worker(src, { eval: true, workerData: sab });
  const done = new Promise<number>((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });
  let injected = 0;
  let finished = false;
  // ends on the worker's answer or its error (then awaited below), or fails naming what never came
  void done.then(() => { finished = true; }, () => { finished = true; });
  const deadline = Date.now() + DEFAULT_WAIT_MS * 3;
  while (!finished) {
    assert.ok(Date.now() < deadline, 'the accepting worker did not finish its 64000 acceptInterrupt calls');
    const v = inject(l);
    if (v >= 0) { injected++; wr(l, APIC.EOI, 0); }
    await new Promise((r) => setImmediate(r));
  }
  for (let v = inject(l); v >= 0; v = inject(l)) { injected++; wr(l, APIC.EOI, 0); }
  const kicks = await done;
  await w.terminate();
  assert.equal(injected, kicks, 'every newly pending vector was injected exactly once');
  assert.equal(rd(l, APIC.IRR + 0x20), 0);
});

test('save and restore carry registers, pending errors, mode and the running timer to another APIC', () => {
  const { l, clock } = lapic({ vcpuId: 1 });
  enable(l);
  toX2apic(l);
  l.wrmsr(x2msr(APIC.TDCR), 0xbn);
  l.wrmsr(x2msr(APIC.LVTT), BigInt(APIC_TIMER_MODE.PERIODIC | 0x33));
  l.wrmsr(x2msr(APIC.TMICT), 100n);
  l.accept(0x70);
  l.accept(2);
  clock.t += 250n;
  const state = l.save(clock.t);
  const other = new FakeClock();
  other.t = 9_000_000n;
  const m = lapic({ vcpuId: 1, clock: other }).l;
  m.restore(structuredClone(state), other.t);
  assert.equal(m.x2apicMode, true);
  assert.equal(m.rdmsr(x2msr(APIC.TMCCT)).value, 75n);
  assert.equal(m.nextDeadline(), other.t + 750n);
  assert.equal(m.pendingVector(), 0x70);
  assert.equal(m.wrmsr(x2msr(APIC.ESR), 0n).gp, false);
  assert.equal(m.rdmsr(x2msr(APIC.ESR)).value, BigInt(APIC_ESR.RECVILL));
  assert.deepEqual(m.save(other.t), { ...state, pendingEsr: 0, regs: m.save(other.t).regs });
});

test('a malformed saved state is refused and changes nothing', () => {
  const { l, clock } = lapic();
  enable(l);
  wr(l, APIC.TASKPRI, 0x20);
  const good = l.save(clock.t);
  const before = l.save(clock.t);
  const bad: [string, object][] = [
    ['short regs', { ...good, regs: good.regs.slice(1) }],
    ['x2APIC while disabled', { ...good, apicBase: 0xfee00400n }],
    ['relocated', { ...good, apicBase: 0xfe000800n }],
    ['bad TDCR', { ...good, regs: good.regs.map((w, i) => (i === APIC.TDCR >> 2 ? 0x4 : w)) }],
    ['number base', { ...good, apicBase: 0xfee00800 }],
  ];
  for (const [why, s] of bad) assert.throws(() => l.restore(s as typeof good, clock.t), /LAPIC state refused/, why);
  const noX2 = lapic({ x2apic: false }).l;
  assert.throws(() => noX2.restore({ ...good, apicBase: 0xfee00c00n }, clock.t), /does not offer/);
  assert.deepEqual(l.save(clock.t), before);
});

test('a shared view of the wrong size is refused; setIrq range-checks its vector', () => {
  const clock = new FakeClock();
  assert.throws(() => new Vlapic({ vcpuId: 0, x2apic: false, tscDeadline: false, clock, shared: new Int32Array(VLAPIC_SHARED_WORDS - 1) }), /words/);
  const { l } = lapic();
  assert.throws(() => setIrq(l.shared, 256), RangeError);
});
