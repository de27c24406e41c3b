// Shared helpers of the benchmarks: the machine description, order statistics,
// plain-text tables, JSON output, /proc memory readings and a generated idle
// PVH guest (for the density test).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { DaemonClient } from '../src/tools/daemon/client.js';

/** The repository root (this file runs from dist/bench/). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const XENODE_JS = path.join(REPO_ROOT, 'dist', 'src', 'tools', 'xenode.js');
export const GUESTS = path.join(REPO_ROOT, 'guests', 'build');

export interface Machine {
  nproc: number;
  cpu: string;
  kernel: string;
  node: string;
  kvmModule: string;
  memTotalMiB: number;
}

export function machine(): Machine {
  let cpu = 'unknown';
  try {
    const m = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpu = m[1]!.trim();
  } catch { /* not Linux */ }
  const mods = ['kvm_pvm', 'kvm_intel', 'kvm_amd'].filter((m) => fs.existsSync(`/sys/module/${m}`));
  return {
    nproc: os.availableParallelism(),
    cpu,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    kvmModule: mods.join(',') || 'unknown',
    memTotalMiB: Math.round(os.totalmem() / 2 ** 20),
  };
}

export function printMachine(m: Machine = machine()): void {
  console.log(`machine: ${m.nproc} CPUs, ${m.cpu}, ${m.memTotalMiB} MiB, ${m.kernel}, KVM module ${m.kvmModule}, node ${m.node}`);
}

export interface Stats {
  n: number;
  median: number;
  p10: number;
  p90: number;
  min: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentile `p` (0..1) of ascending `sorted`. */
export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
}

/** Order statistics (nearest-rank percentiles). */
export function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return { n: 0, median: NaN, p10: NaN, p90: NaN, min: NaN, max: NaN, mean: NaN };
  const q = (p: number) => percentile(s, p);
  const median = n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
  return { n, median, p10: q(0.1), p90: q(0.9), min: s[0]!, max: s[n - 1]!, mean: s.reduce((a, b) => a + b, 0) / n };
}

export function fmt(x: number, digits = 2): string {
  if (!Number.isFinite(x)) return '-';
  return x.toFixed(digits);
}

/** Prints a table with right-aligned columns (the first column left-aligned). */
export function table(headers: string[], rows: (string | number)[][]): void {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const w = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ');
  console.log(line(headers));
  console.log(w.map((x) => '-'.repeat(x)).join('  '));
  for (const r of cells.slice(1)) console.log(line(r));
}

/** A stats row: label, median, p10, p90, min, max, n. */
export function statsRow(label: string, s: Stats, digits = 2): string[] {
  return [label, fmt(s.median, digits), fmt(s.p10, digits), fmt(s.p90, digits), fmt(s.min, digits), fmt(s.max, digits), String(s.n)];
}
export const STATS_HEADERS = (unit: string) => [`(${unit})`, 'median', 'p10', 'p90', 'min', 'max', 'n'];

export function writeJson(file: string | undefined, data: unknown): void {
  if (!file) return;
  fs.writeFileSync(file, JSON.stringify(data, null, 2) + '\n');
  console.log(`\nwrote ${file}`);
}

/** Fields of /proc/self/status in KiB (VmRSS, RssAnon, RssFile, RssShmem, VmHWM...). */
export function procStatus(pid: number | 'self' = 'self'): Record<string, number> {
  const out: Record<string, number> = {};
  for (const l of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const m = /^(\w+):\s+(\d+) kB$/.exec(l);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

/** /proc/meminfo in KiB. */
export function memInfo(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const l of fs.readFileSync('/proc/meminfo', 'utf8').split('\n')) {
    const m = /^(\w+(?:\(\w+\))?):\s+(\d+)/.exec(l);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

export function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/**
 * An idle PVH guest, generated here because the sample guests all power off:
 * ELF32 with one PT_LOAD at 1 MiB and the PHYS32_ENTRY note. Its code is
 * `sti; hlt; jmp .-1`: HLT with interrupts open is Xen's "block until an
 * event" for an HVM vCPU (xenode: KVM_EXIT_HLT -> blockVcpu), and nothing
 * ever sends it one, so the vCPU stays blocked off the pCPU until destroyed.
 * Two CPL0 instructions run (emulated on PVM hosts): about 2 us of guest time.
 */
export function idleGuestElf(): Uint8Array {
  const LOAD_OFF = 0x1000;
  const PADDR = 0x100000;
  const code = [0xfb, 0xf4, 0xeb, 0xfd]; // sti; hlt; jmp hlt
  const noteOff = 0x10;
  const note = new Uint8Array(20);
  const nv = new DataView(note.buffer);
  nv.setUint32(0, 4, true); // namesz ("Xen\0")
  nv.setUint32(4, 4, true); // descsz
  nv.setUint32(8, 0x12, true); // XEN_ELFNOTE_PHYS32_ENTRY
  note.set([0x58, 0x65, 0x6e, 0], 12);
  nv.setUint32(16, PADDR, true);
  const segSize = noteOff + note.length;
  const b = new Uint8Array(LOAD_OFF + segSize);
  const d = new DataView(b.buffer);
  b.set([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1], 0); // ELF32, little endian, version 1
  d.setUint16(16, 2, true); // ET_EXEC
  d.setUint16(18, 3, true); // EM_386
  d.setUint32(20, 1, true); // EV_CURRENT
  d.setUint32(24, PADDR, true); // e_entry
  d.setUint32(28, 52, true); // e_phoff
  d.setUint16(40, 52, true); // e_ehsize
  d.setUint16(42, 32, true); // e_phentsize
  d.setUint16(44, 2, true); // e_phnum
  d.setUint16(46, 40, true); // e_shentsize
  const ph = (i: number, type: number, off: number, addr: number, size: number, flags: number, align: number) => {
    const o = 52 + i * 32;
    d.setUint32(o, type, true);
    d.setUint32(o + 4, off, true);
    d.setUint32(o + 8, addr, true);
    d.setUint32(o + 12, addr, true);
    d.setUint32(o + 16, size, true);
    d.setUint32(o + 20, size, true);
    d.setUint32(o + 24, flags, true);
    d.setUint32(o + 28, align, true);
  };
  ph(0, 1, LOAD_OFF, PADDR, segSize, 7, 0x1000); // PT_LOAD RWX
  ph(1, 4, LOAD_OFF + noteOff, PADDR + noteOff, note.length, 4, 4); // PT_NOTE
  b.set(code, LOAD_OFF);
  b.set(note, LOAD_OFF + noteOff);
  return b;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Waits until the daemon process `p` answers hello on `socket` (20 s); `output` explains a failure. */
export async function untilDaemonAnswers(p: ChildProcess, socket: string, output: () => string = () => ''): Promise<void> {
  for (let i = 0; ; i++) {
    if (p.exitCode !== null) throw new Error(`daemon exited with ${p.exitCode}: ${output()}`);
    try { (await DaemonClient.connect(socket)).close(); return; } catch { if (i >= 400) throw new Error(`daemon did not come up: ${output()}`); }
    await sleep(50);
  }
}

/**
 * Command-line handling every bench shares: `--help`/`-h` prints `usage` and
 * exits 0; a bad flag prints the reason and the usage and exits 2, with no
 * stack trace. `parse` is the bench's own parseArgs call.
 */
export function benchArgs<T>(usage: string, parse: (args: string[]) => T): T {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    console.log(usage.trim());
    process.exit(0);
  }
  try {
    return parse(args);
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${usage.trim()}`);
    process.exit(2);
  }
}

/** A numeric flag's value, or a usage error (exit 2) naming the flag. */
export function numArg(value: string | undefined, flag: string, usage: string, min = 1): number {
  const n = Number(value);
  if (value === undefined || !Number.isFinite(n) || n < min) {
    console.error(`${flag} must be a number >= ${min}, not ${JSON.stringify(value)}\n\n${usage.trim()}`);
    process.exit(2);
  }
  return n;
}

/** The host's TSC rate for a guest that must be told it (QEMU microvm's tsc_early_khz): /proc/cpuinfo's "cpu MHz". */
export function hostTscKhz(): number {
  const m = /^cpu MHz\s*:\s*([\d.]+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
  return m ? Math.round(Number(m[1]) * 1000) : 2_000_000;
}
