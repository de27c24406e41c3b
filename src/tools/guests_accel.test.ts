// Every sample guest on every CPU that can run it here: KVM, the software CPU
// (--accel tcg) and --accel auto's choice. The same hypervisor handles every
// exit whichever CPU produced it, so each guest's verdict must not depend on
// the CPU. Without /dev/kvm, auto runs the software CPU and says so; --accel
// kvm is refused with the host's reason.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { runnableAccels, needsTcg } from '../testing/accel.js';
import { guest, verdict, xenodeJs, xenodeRun as run } from '../testing/xenode.js';

interface Case {
  elf: string;
  args?: string[];
  /** exit status of `xenode run` */
  code: number;
  /** a self-checking guest: RESULT with no failure */
  checks?: boolean;
  out?: RegExp;
}

const CASES: Case[] = [
  { elf: 'hello', code: 0, out: /Hello from xenode guest \(PV console\)/ },
  { elf: 'minimal', args: ['--quiet'], code: 0, out: /^M\n$/ },
  { elf: 'hypercalls', code: 0, checks: true },
  { elf: 'evtchn', args: ['--vcpus', '2'], code: 0, checks: true },
  { elf: 'fifo', args: ['--vcpus', '2'], code: 0, checks: true },
  { elf: 'timer', code: 0, checks: true },
  { elf: 'lapic', code: 0, checks: true },
  { elf: 'smp', args: ['--vcpus', '4'], code: 0, checks: true },
  { elf: 'watchdog', code: 13, checks: true },
  { elf: 'spin', args: ['--cmdline', 'rounds=1'], code: 0, checks: true },
  // without exclusive_ms every exclusivity command is -EPERM (the granted checks: guests_exclusive.test.ts)
  { elf: 'exclusive', args: ['--cmdline', 'granted=0'], code: 0, checks: true },
  // the netif handshake with nothing to answer on the in-process switch, idle, then Closing and Closed
  // (the pings: guests_net.test.ts)
  { elf: 'netfront', args: ['--vif', 'bridge=xenode-nf0', '--cmdline', 'pings=0 idle_ms=300'], code: 0, checks: true, out: /netfront: connected/ },
  { elf: 'shutdown-reboot', code: 10 },
  { elf: 'crash', code: 12 },
];

for (const accel of runnableAccels()) {
  for (const c of CASES) {
    test(`${c.elf} ${(c.args ?? []).join(' ')} runs under --accel ${accel}`.replace(/ +/g, ' '), async () => {
      const r = await run([guest(c.elf), '--accel', accel, ...(c.args ?? [])], { timeoutMs: 120_000 });
      if (c.checks) {
        const v = verdict(r);
        assert.deepEqual(v.fails, []);
        assert.ok(v.passed > 0, 'the guest ran its checks');
      }
      if (c.out) assert.match(r.stdout, c.out);
      if (c.elf === 'crash') assert.match(r.stderr, /triple fault/);
      assert.equal(r.code, c.code, r.stderr);
    });
  }
}

// The guests that need more of the CPU than this host's KVM may have: SSE, x87, INT3 and a page fault at
// CPL 0 (cpl0, which also does system calls and INT3s from CPL 3), and 32-bit paging in each mode. On a
// PVM host, KVM alone fails them, and the failure must be reported as the host's; tcg, auto (tcg there) and
// kvm+tcg run them, and for cpl0 under kvm+tcg the log shows KVM meeting an instruction it cannot emulate in the first kernel code after an INT3
// from CPL 3 (an entry point KVM is not told to stop at) and the software CPU running it.
const pvm = existsSync('/sys/module/kvm_pvm');
const KERNEL_CASES: { elf: string; checks: number; beyondPvm: boolean }[] = [
  { elf: 'cpl0', checks: 17, beyondPvm: true },
  { elf: 'paging32-none', checks: 2, beyondPvm: false },
  { elf: 'paging32-pse', checks: 6, beyondPvm: true },
  { elf: 'paging32-pae', checks: 6, beyondPvm: true },
];

for (const accel of runnableAccels()) {
  for (const c of KERNEL_CASES) {
    const hostFails = accel === 'kvm' && pvm && c.beyondPvm;
    test(`${c.elf} under --accel ${accel}${hostFails ? ": the host's KVM cannot run it, and says so" : ''}`, async () => {
      const r = await run([guest(c.elf), '--accel', accel], { timeoutMs: 120_000 });
      if (hostFails) {
        assert.match(r.stderr, /crashed: .*limitation of this host's KVM/);
        assert.equal(r.code, 12, r.stderr);
        return;
      }
      const v = verdict(r);
      assert.deepEqual(v.fails, []);
      assert.ok(v.passed >= c.checks, `${v.passed} checks passed, want ${c.checks}`);
      if (c.elf === 'cpl0' && accel === 'kvm+tcg' && pvm) {
        assert.match(r.stderr, /CPU: kvm\+tcg \(CPL0 code in the software CPU, CPL3 code in KVM\)/);
        assert.match(r.stderr, /KVM could not emulate the instruction at rip 0x[0-9a-f]+ .*the software CPU runs it/);
      }
      assert.equal(r.code, 0, r.stderr);
    });
  }
}

// A host without /dev/kvm, made with a private mount namespace whose /dev is empty.
const canHideKvm = process.getuid?.() === 0 && existsSync('/usr/bin/unshare');
function withoutKvm(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const cmd = `mount -t tmpfs none /dev && exec "$0" "$@"`;
  const r = spawnSync('unshare', ['-m', 'sh', '-c', cmd, process.execPath, xenodeJs, 'run', ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('without /dev/kvm, --accel auto runs the guest on the software CPU and says why', { ...needsTcg(), skip: needsTcg().skip || (!canHideKvm && 'needs root and unshare(1) to hide /dev/kvm') }, () => {
  const r = withoutKvm([guest('hypercalls'), '--accel', 'auto']);
  assert.match(r.stderr, /CPU: tcg \(auto: \/dev\/kvm cannot be used here: \/dev\/kvm does not exist/);
  assert.match(r.stdout, /RESULT: \d+ passed, 0 failed/);
  assert.equal(r.code, 0, r.stderr);
});

test('without /dev/kvm, --accel kvm is refused with the host\'s reason (exit 1) and nothing runs', { skip: !canHideKvm && 'needs root and unshare(1) to hide /dev/kvm' }, () => {
  const r = withoutKvm([guest('hello'), '--accel', 'kvm']);
  assert.match(r.stderr, /--accel kvm: \/dev\/kvm does not exist/);
  assert.equal(r.stdout, '');
  assert.equal(r.code, 1);
});

test('a bad --accel is a usage error (exit 2)', async () => {
  const r = await run([guest('hello'), '--accel', 'hvf']);
  assert.match(r.stderr, /--accel must be auto, kvm, tcg or kvm\+tcg, got 'hvf'/);
  assert.equal(r.code, 2);
});
