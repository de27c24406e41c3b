// Core files as xc_core writes them, read back by Debian's gdb: xl dump-core
// of a running guest (its vCPU stopped in the hypercall page, a backtrace
// into its C code with the guest's ELF, a string read from guest memory by
// address) and on_crash="coredump-destroy". The layout numbers are checked
// against Xen's public headers and glibc's procfs.h with gcc.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { needsKvm } from '../kvm/testing.js';
import { havePeer, which } from '../testing/peers.js';
import { guest, startDaemon, tmpStateDir, until, type TestDaemon } from './daemon/testing.js';
import { CPU_USER_REGS, PRSTATUS, VCPU_GUEST_CONTEXT_SIZE, VGC, XC_CORE_MAGIC_HVM, XEN_ELFNOTE_DUMPCORE } from './core_dump.js';

const XL_JS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), 'xl', 'xl.js');

test('the core layout numbers are those of Xen\'s headers and of glibc\'s elf_prstatus', (t) => {
  if (!havePeer(t, which('gcc') !== null && fs.existsSync('/usr/include/xenctrl.h'), 'gcc and Xen\'s headers', 'apt-get install gcc libxen-dev')) return;
  const lines = [
    '#include <stddef.h>', '#include <stdint.h>', '#include <sys/procfs.h>', '#include <xen/xen.h>', '#include <xen/elfnote.h>', '#include <xenctrl.h>',
    `_Static_assert(sizeof(vcpu_guest_context_any_t) == ${VCPU_GUEST_CONTEXT_SIZE}, "ctx");`,
    `_Static_assert(XC_CORE_MAGIC_HVM == ${XC_CORE_MAGIC_HVM}, "magic");`,
    `_Static_assert(sizeof(struct elf_prstatus) == ${PRSTATUS.size} && offsetof(struct elf_prstatus, pr_pid) == ${PRSTATUS.pid} && offsetof(struct elf_prstatus, pr_reg) == ${PRSTATUS.reg}, "prstatus");`,
    ...Object.entries(XEN_ELFNOTE_DUMPCORE).map(([k, v]) => `_Static_assert(XEN_ELFNOTE_DUMPCORE_${k} == ${v}, "${k}");`),
    ...Object.entries(VGC).map(([k, v]) => `_Static_assert(offsetof(struct vcpu_guest_context, ${k}) == ${v}, "${k}");`),
    ...Object.entries(CPU_USER_REGS).map(([k, v]) => `_Static_assert(offsetof(struct cpu_user_regs, ${k}) == ${v}, "${k}");`),
  ];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'core-layout-'));
  try {
    const c = path.join(dir, 'layout.c');
    fs.writeFileSync(c, `${lines.join('\n')}\n`);
    const r = spawnSync('gcc', ['-fsyntax-only', '-D__XEN_TOOLS__', c], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** A section's contents, found by name through the ELF64 section headers. */
function section(elf: Buffer, name: string): Buffer {
  const shoff = Number(elf.readBigUInt64LE(40));
  const shnum = elf.readUInt16LE(60);
  const strtab = shoff + 64 * elf.readUInt16LE(62);
  const strOff = Number(elf.readBigUInt64LE(strtab + 24));
  for (let i = 0; i < shnum; i++) {
    const o = shoff + 64 * i;
    const n = strOff + elf.readUInt32LE(o);
    if (elf.toString('latin1', n, elf.indexOf(0, n)) === name) {
      const off = Number(elf.readBigUInt64LE(o + 24));
      return elf.subarray(off, off + Number(elf.readBigUInt64LE(o + 32)));
    }
  }
  throw new Error(`no section ${name}`);
}

function notes(b: Buffer): { name: string; type: number; desc: Buffer }[] {
  const out = [];
  for (let o = 0; o < b.length;) {
    const namesz = b.readUInt32LE(o), descsz = b.readUInt32LE(o + 4), type = b.readUInt32LE(o + 8);
    const name = b.toString('latin1', o + 12, o + 12 + namesz - 1);
    const d = o + 12 + Math.ceil(namesz / 4) * 4;
    out.push({ name, type, desc: b.subarray(d, d + descsz) });
    o = d + Math.ceil(descsz / 4) * 4;
  }
  return out;
}

describe('xl dump-core and on_crash="coredump-destroy", read by gdb', needsKvm(), () => {
  let daemon: TestDaemon;
  let env: NodeJS.ProcessEnv;
  const xl = (...argv: string[]) => spawnSync(process.execPath, [XL_JS, ...argv], { env, encoding: 'utf8' });
  before(async () => {
    daemon = await startDaemon(tmpStateDir());
    env = { ...process.env, XENODE_SOCKET: daemon.socket, XENODE_STATE_DIR: '' };
  });
  after(async () => { await daemon?.stop(); });

  const cfg = (name: string, kernel: string, extra = '') => {
    const f = path.join(daemon.stateDir, `${name}.cfg`);
    // console=pv: the console log is the PV ring (console_io lines go to xl dmesg)
    fs.writeFileSync(f, `name = "${name}"\ntype = "pvh"\nkernel = "${guest(kernel)}"\nmemory = 16\ncmdline = "console=pv"\n${extra}`);
    return f;
  };

  test('dump-core of a running guest: xc_core\'s sections, and gdb shows its vCPU in the hypercall page and its memory by address', async (t) => {
    assert.equal(xl('create', '-q', cfg('dc-idle', 'idle')).status, 0);
    const log = path.join(daemon.stateDir, 'console', 'dc-idle.log');
    await until('idle to block', () => fs.existsSync(log) && fs.readFileSync(log, 'latin1').includes('idle: blocking'));
    const core = path.join(daemon.stateDir, 'dc-idle.core');
    const r = xl('dump-core', 'dc-idle', core);
    assert.deepEqual([r.status, r.stdout, r.stderr], [0, '', '']);
    // the domain goes on as it was
    assert.match(xl('list', 'dc-idle').stdout.split('\n')[1]!, /^dc-idle\s+\d+\s+16\s+1\s+-b----/);
    assert.equal(fs.statSync(core).mode & 0o777, 0o600);

    const elf = fs.readFileSync(core);
    assert.deepEqual([...elf.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46]);
    assert.equal(elf.readUInt16LE(16), 4, 'ET_CORE');
    if (!havePeer(t, which('readelf') !== null && which('gdb') !== null, "binutils' readelf and gdb", 'apt-get install binutils gdb')) return;
    const sections = execFileSync('readelf', ['-SW', core], { encoding: 'utf8' });
    for (const s of ['.shstrtab', '.note.Xen', '.xen_prstatus', '.xen_shared_info', '.xen_pfn', '.xen_pages']) assert.ok(sections.includes(` ${s} `), s);
    // .note.Xen holds xc_core's four notes; the header counts one vCPU and every page .xen_pfn names
    const xen = notes(section(elf, '.note.Xen'));
    assert.deepEqual(xen.map((n) => [n.name, n.type]), Object.values(XEN_ELFNOTE_DUMPCORE).map((ty) => ['Xen', ty]));
    const h = xen[1]!.desc;
    assert.deepEqual([h.readBigUInt64LE(0), h.readBigUInt64LE(8), h.readBigUInt64LE(16), h.readBigUInt64LE(24)],
      [BigInt(XC_CORE_MAGIC_HVM), 1n, BigInt(section(elf, '.xen_pfn').length / 8), 4096n]);
    assert.equal(section(elf, '.xen_pages').length, section(elf, '.xen_pfn').length / 8 * 4096);
    assert.equal(section(elf, '.xen_prstatus').length, VCPU_GUEST_CONTEXT_SIZE);
    assert.match(execFileSync('readelf', ['-nW', core], { encoding: 'utf8' }), /CORE\s+0x00000150\s+NT_PRSTATUS/);

    const gdb = spawnSync('gdb', ['-nx', '-batch', guest('idle'), '-c', core,
      '-ex', 'info symbol $pc', '-ex', 'bt 3', '-ex', 'find /b 0x100000, 0x140000, 0x69, 0x64, 0x6c, 0x65, 0x3a, 0x20, 0x62', '-ex', 'x/s $_'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(gdb.status, 0, gdb.stderr);
    // SCHEDOP_block: the sched_op stub (hypercall 29 of 32 bytes each), after its `out`
    assert.match(gdb.stdout, /^hypercall_page \+ 935 in section \.data$/m);
    assert.match(gdb.stdout, /^#1 .* in HYPERVISOR_sched_op \(arg=0x0, cmd=1\) at lib\/hypercall\.h:\d+\n#2 +main \(\) at samples\/idle\.c:\d+$/m);
    assert.match(gdb.stdout, /^0x[0-9a-f]+:\s+"idle: blocking\\n"$/m);
    const regs = spawnSync('gdb', ['-nx', '-batch', '-c', core, '-ex', 'info registers rip cs ss'], { encoding: 'utf8', timeout: 60_000 });
    // without the guest's ELF, the same vCPU state from the notes alone
    const pc = BigInt(/^#0 +(0x[0-9a-f]+) in hypercall_page/m.exec(gdb.stdout)![1]!);
    assert.match(regs.stdout, new RegExp(`^rip\\s+0x${pc.toString(16)}\\s`, 'm'));
    assert.match(regs.stdout, /^cs\s+0x8\s/m);
    assert.equal(xl('destroy', 'dc-idle').status, 0);
  });

  test('on_crash="coredump-destroy": the crashed domain is dumped to the daemon\'s dump directory, then destroyed', async () => {
    assert.equal(xl('create', '-q', cfg('dc-crash', 'crash', 'on_crash = "coredump-destroy"\n')).status, 0);
    const file = path.join(daemon.stateDir, 'dump', 'dc-crash');
    await until('the crash dump and the destroy', () => fs.existsSync(file) && xl('list', 'dc-crash').status === 1);
    const elf = fs.readFileSync(file);
    assert.equal(elf.readUInt16LE(16), 4, 'ET_CORE');
    assert.match(fs.readFileSync(path.join(daemon.stateDir, 'xenode.log'), 'latin1'), /dc-crash: dumping core to .*\/dump\/dc-crash/);
  });

  test('dump-core of a domain that is not there fails as xl\'s does', () => {
    const r = xl('dump-core', '4242', path.join(daemon.stateDir, 'none.core'));
    assert.deepEqual([r.status, r.stderr], [1, 'xl: no domain with id 4242\ncore dump failed (rc=-21)\n']);
  });
});
