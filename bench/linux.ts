// Debian's cloud kernel to the first line of a busybox /init: xenode against
// QEMU, same kernel, same initramfs, in one run.
//
//   node dist/bench/linux.js [--n 3] [--no-qemu] [--kernel bzimage|elf] [--timeout S] [--json FILE]
//
// The kernel is Debian 12's linux-image-*-cloud-amd64 (scripts/fetch-linux.sh);
// the initramfs is busybox with an /init whose first line is
// "xenode-bench: /init". The event compared is that line on the process's
// stdout, from spawn:
//   * xenode run <kernel> --ramdisk I --memory 256 --cmdline console=hvc0 --quiet
//     (the software CPU where this host's KVM emulates CPL0, else KVM)
//   * qemu-system-x86_64 -accel tcg -M microvm -m 256 -kernel vmlinux -initrd I
//     -append "console=ttyS0 tsc_early_khz=<host>" (its serial on stdout)
//   * the same with -accel kvm, where this host's KVM runs CPL0 natively
// QEMU's microvm has no PIT/HPET calibration a loaded host's TCG passes, so it
// is told the TSC rate on its command line (xenode's guest reads it from
// Xen's CPUID leaves and pvclock).

import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT, XENODE_JS, benchArgs, hostTscKhz, fmt, machine, numArg, printMachine, stats, statsRow, STATS_HEADERS, table, writeJson, type Stats } from './common.js';
import { busyboxInitramfs, busyboxPath, linuxBzImage, linuxElf } from '../src/testing/initramfs.js';

const QEMU = 'qemu-system-x86_64';
const FIRST_LINE = 'xenode-bench: /init';
const INIT = `echo "${FIRST_LINE}"\nmount -t proc proc /proc\nmount -t sysfs sysfs /sys\necho "cpus: $(nproc) clocksource: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"\npoweroff -f\n`;

let timeoutMs = 1_800_000;

const USAGE = `
usage: node dist/bench/linux.js [--n N] [--no-qemu] [--kernel bzimage|elf] [--timeout S] [--json FILE]

Debian's cloud kernel (scripts/fetch-linux.sh) booted to the first line of a
busybox /init ("${FIRST_LINE}"), spawn to that line on stdout: \`xenode run\`
against QEMU microvm (-accel tcg; -accel kvm too where this host's KVM runs
CPL0 natively), interleaved, medians over N rounds.

  --n N          rounds (default 3; under the software CPU a boot takes minutes here)
  --no-qemu      xenode alone
  --kernel K     what xenode boots: Debian's bzImage as shipped (default) or the ELF inside it
  --timeout S    a boot that has not printed the line after S seconds is a hang (default 1800)
  --json FILE    also write the figures as JSON
`;

// --- the parent --------------------------------------------------------------------

interface Sample { firstLine: number; hung: boolean; out: string }

/** Spawn -> the first line on stdout; the process is killed once it is seen (its poweroff is not timed). */
function timeToLine(cmd: string, args: string[]): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let out = '';
    let done = false;
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO_ROOT });
    const finish = (s: Sample) => { if (done) return; done = true; clearTimeout(timer); p.kill('SIGKILL'); resolve(s); };
    const timer = setTimeout(() => finish({ firstLine: NaN, hung: true, out }), timeoutMs);
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString('latin1');
      if (out.includes(FIRST_LINE)) finish({ firstLine: performance.now() - t0, hung: false, out });
    });
    p.stderr.on('data', (d: Buffer) => { out += d.toString('latin1'); });
    p.once('error', reject);
    p.once('exit', () => finish({ firstLine: NaN, hung: false, out }));
  });
}

async function main(): Promise<void> {
  const { values } = benchArgs(USAGE, (args) => parseArgs({
    args,
    options: {
      n: { type: 'string', default: '3' },
      json: { type: 'string' },
      'no-qemu': { type: 'boolean', default: false },
      kernel: { type: 'string', default: 'bzimage' },
      timeout: { type: 'string', default: '1800' },
    },
  }));
  timeoutMs = numArg(values.timeout, '--timeout', USAGE, 1) * 1000;
  const N = numArg(values.n, '--n', USAGE);
  if (values.kernel !== 'bzimage' && values.kernel !== 'elf') {
    process.stderr.write(`--kernel must be bzimage or elf\n${USAGE}`);
    process.exit(2);
  }
  const m = machine();
  printMachine(m);
  if (!fs.existsSync(XENODE_JS)) throw new Error('build first: npm run build');
  for (const f of [linuxBzImage, linuxElf, busyboxPath]) {
    if (!fs.existsSync(f)) throw new Error(`${f} is missing: run scripts/fetch-linux.sh`);
  }
  const version = fs.readFileSync(path.join(path.dirname(linuxElf), 'VERSION'), 'utf8').trim();
  console.log(`kernel: ${version}`);
  const kernel = values.kernel === 'elf' ? linuxElf : linuxBzImage;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-linux-'));
  const initrd = path.join(tmp, 'initrd.gz');
  fs.writeFileSync(initrd, busyboxInitramfs({ init: INIT }));

  let haveQemu = false;
  if (!values['no-qemu']) {
    haveQemu = spawnSync(QEMU, ['--version']).status === 0;
    if (!haveQemu) {
      console.log(`${QEMU} not found: apt-get install qemu-system-x86`);
      const sudo = process.getuid?.() === 0 ? [] : ['sudo'];
      const r = spawnSync(sudo[0] ?? 'apt-get', [...sudo.slice(1), ...(sudo.length ? ['apt-get'] : []), 'install', '-y', '-qq', '--no-install-recommends', 'qemu-system-x86'], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
      haveQemu = r.status === 0 && spawnSync(QEMU, ['--version']).status === 0;
    }
    if (!haveQemu) {
      console.log('\n' + '!'.repeat(78) + `\n!!! ${QEMU} COULD NOT BE INSTALLED: xenode alone, NO QEMU COMPARISON\n` + '!'.repeat(78) + '\n');
    }
  }
  const qemuVersion = haveQemu ? spawnSync(QEMU, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0]! : null;
  if (qemuVersion) console.log(`qemu: ${qemuVersion}`);
  const { chooseAccel } = await import('../src/hv/accel.js');
  const accel = chooseAccel('auto');
  console.log(`xenode's CPU: ${accel.why}`);
  const kvmNative = accel.kvmUsable && !accel.kvmEmulatesCpl0;
  if (!kvmNative) console.log(`qemu -accel kvm: not measured (${accel.kvmUsable ? "this host's KVM is PVM: it emulates guest CPL0 code, so a kernel boot there is no comparison" : '/dev/kvm cannot be used here'})`);

  const tsc = hostTscKhz();
  const qemuArgs = (acc: string) => ['-accel', acc, '-M', 'microvm', '-m', '256', '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-no-reboot',
    '-kernel', linuxElf, '-initrd', initrd, '-append', `console=ttyS0 tsc_early_khz=${tsc}`];
  const kinds: { name: string; cmd: string; args: string[] }[] = [
    { name: `xenode run (${accel.accel}, ${values.kernel === 'elf' ? 'vmlinux' : 'bzImage'})`, cmd: process.execPath, args: [XENODE_JS, 'run', kernel, '--memory', '256', '--ramdisk', initrd, '--cmdline', 'console=hvc0', '--quiet'] },
  ];
  if (haveQemu) kinds.push({ name: 'qemu microvm -accel tcg (vmlinux)', cmd: QEMU, args: qemuArgs('tcg') });
  if (haveQemu && kvmNative) kinds.push({ name: 'qemu microvm -accel kvm (vmlinux)', cmd: QEMU, args: qemuArgs('kvm') });

  const times: Record<string, number[]> = Object.fromEntries(kinds.map((k) => [k.name, []]));
  const hangs: Record<string, number> = Object.fromEntries(kinds.map((k) => [k.name, 0]));
  console.log(`\n${N} rounds, interleaved: ${kinds.map((k) => k.name).join(' | ')}`);
  for (let i = 0; i < N; i++) {
    for (let j = 0; j < kinds.length; j++) {
      const k = kinds[(i + j) % kinds.length]!;
      const s = await timeToLine(k.cmd, k.args);
      if (s.hung || Number.isNaN(s.firstLine)) {
        hangs[k.name]!++;
        console.log(`!!! ${k.name}: ${s.hung ? `no "${FIRST_LINE}" after ${timeoutMs / 1000} s` : 'exited without the line'} (not counted); its output ended with:\n${s.out.slice(-1500)}`);
        continue;
      }
      times[k.name]!.push(s.firstLine);
      console.log(`  round ${i + 1}: ${k.name}: ${fmt(s.firstLine / 1000)} s`);
    }
  }
  const st: Record<string, Stats> = Object.fromEntries(kinds.map((k) => [k.name, stats(times[k.name]!)]));
  console.log(`\nspawn -> "${FIRST_LINE}" on stdout (s)`);
  table(STATS_HEADERS('s'), kinds.map((k) => statsRow(k.name, { ...st[k.name]!, median: st[k.name]!.median / 1000, p10: st[k.name]!.p10 / 1000, p90: st[k.name]!.p90 / 1000, min: st[k.name]!.min / 1000, max: st[k.name]!.max / 1000 })));
  const ratios: Record<string, number> = {};
  const x = st[kinds[0]!.name]!;
  if (haveQemu) {
    ratios.tcg = x.median / st['qemu microvm -accel tcg (vmlinux)']!.median;
    console.log(`\nratio xenode / QEMU TCG (medians, same event): ${fmt(ratios.tcg)}x (target <= 1.5x: ${ratios.tcg <= 1.5 ? 'MET' : 'NOT MET'})`);
    if (kvmNative) {
      ratios.kvm = x.median / st['qemu microvm -accel kvm (vmlinux)']!.median;
      console.log(`ratio xenode / QEMU KVM (medians): ${fmt(ratios.kvm)}x`);
    }
  }

  fs.rmSync(tmp, { recursive: true, force: true });
  writeJson(values.json, { bench: 'linux', machine: m, kernel: version, qemu: qemuVersion, accel: accel.why, n: N, firstLineMs: st, hangs, ratios });
}

await main();
