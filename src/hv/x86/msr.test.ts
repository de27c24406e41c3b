import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import { AMD64_DE_CFG_LFENCE_SERIALISE, MSR_AMD64_DE_CFG, K8_MTRRFIXRANGE_DRAM_ENABLE, MSR_AMD64_NB_CFG, MSR_K8_SYSCFG, MSR_K8_TOP_MEM1, MSR_K8_TOP_MEM2, guestMsr } from './msr.js';

test('NB_CFG reads 0 and drops writes (nothing behind it to enable); other MSRs are not this module\'s', () => {
  assert.deepEqual(guestMsr(false, MSR_AMD64_NB_CFG, 0n), { gp: false, value: 0n });
  assert.deepEqual(guestMsr(true, MSR_AMD64_NB_CFG, 1n << 46n), { gp: false, value: 0n });
  assert.deepEqual(guestMsr(false, MSR_AMD64_NB_CFG, 0n), { gp: false, value: 0n }, 'the write changed nothing');
  assert.equal(guestMsr(false, 0xc0011000, 0n), null);
  assert.equal(guestMsr(true, 0x12345678, 0n), null);
});

test('SYSCFG and TOP_MEM1/2 as Xen gives them to a domU: MtrrFixDramEn only, 0, writes ignored', () => {
  assert.deepEqual(guestMsr(false, MSR_K8_SYSCFG, 0n), { gp: false, value: K8_MTRRFIXRANGE_DRAM_ENABLE });
  assert.deepEqual(guestMsr(true, MSR_K8_SYSCFG, 1n << 21n), { gp: false, value: K8_MTRRFIXRANGE_DRAM_ENABLE });
  assert.deepEqual(guestMsr(false, MSR_K8_SYSCFG, 0n), { gp: false, value: K8_MTRRFIXRANGE_DRAM_ENABLE }, 'MtrrTom2En did not stick');
  for (const m of [MSR_K8_TOP_MEM1, MSR_K8_TOP_MEM2]) assert.deepEqual(guestMsr(false, m, 0n), { gp: false, value: 0n });
});

test('DE_CFG says LFENCE is serialising and keeps saying so after a write', () => {
  assert.deepEqual(guestMsr(false, MSR_AMD64_DE_CFG, 0n), { gp: false, value: AMD64_DE_CFG_LFENCE_SERIALISE });
  assert.deepEqual(guestMsr(true, MSR_AMD64_DE_CFG, 0n), { gp: false, value: AMD64_DE_CFG_LFENCE_SERIALISE });
});
