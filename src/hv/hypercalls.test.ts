// The hypercall families through doHypercall, without KVM: a Domain whose
// guest memory is a plain buffer (identity-mapped by a 1 GiB page in long
// mode, unpaged in 32-bit mode) and vCPUs whose `hw` is a fake exposing the
// registers and control state the dispatcher reads. Argument structures are
// written with offsets from Xen's public headers (not from our Struct
// objects). Each family: the good path and every error path, both ABIs where
// the layouts differ.

import { strict as assert } from 'node:assert';
import { before, describe, test } from 'node:test';

import { doHypercall, Hcall } from './hypercall.js';
import { Domain, VCpu } from './domain.js';
import { Physmap } from './physmap.js';
import { GuestAccess } from './guest_access.js';
import { DomainShared, HostShared, RUNSTATE } from './shared.js';
import { GrantTable, Gntdev, setGrantHost, COPY_PREEMPT_EVERY, MAPTRACK_PER_FRAME } from './grant_table.js';
import { localTimeBase, scaleDelta, tscScale } from './time.js';
import { REG } from '../kvm/abi.js';
import { DOMID_SELF, HYPERCALL as HC, VcpuInfo, VcpuTimeInfo, XEN_PVCLOCK_TSC_STABLE_BIT } from './abi/xen.js';
import { EBUSY, EEXIST, EFAULT, EINVAL, ENOENT, ENOSPC, ENOSYS, EOPNOTSUPP, EPERM, ESRCH } from './errno.js';
import { setEvtchnHost } from './event_channel.js';
import { setSchedHooks } from './sched_op.js';
import { setConsoleSink, feedConsoleInput } from './console.js';
import { ECS, portInfo, allocUnbound, type EvtchnDomain, type EvtchnHost } from './evtchn_core.js';
import './version.js';
import './hvm.js';
import './memory.js';
import './grant_table.js';
import './vcpu_op.js';
import { VcpuHvmX86_32, VcpuHvmX86_64 } from './x86/hvm_vcpu.js';
import './misc_ops.js';

const PAGE = 4096;
const RAM_PAGES = 256; // 1 MiB
const ARG = 0x10000;
const BUF = 0x11000;
const HOLE = 0x200000; // beyond RAM: a physmap hole (a fault for both ABIs)
const GARBAGE = 0xdead_beef_0000_0000n; // upper halves of 32-bit-ABI argument registers

type Abi = 'x64' | 'x32';

class FakeHw {
  readonly regs: bigint[] = new Array<bigint>(18).fill(0n);
  cpl = 0;
  longMode64 = true;
  cr0 = 0;
  cr3 = 0n;
  cr4 = 0;
  efer = 0;
  reg(i: number): bigint { return this.regs[i]!; }
  setReg(i: number, v: bigint): void { this.regs[i] = BigInt.asUintN(64, v); }
  get rip(): bigint { return this.regs[16]!; }
  set rip(v: bigint) { this.regs[16] = v; }
  /** What VCPUOP_initialise loaded (KVM's job on a real vCPU). */
  initial: { regs: Record<string, bigint>; segs: Record<string, { l: number; type: number }>; cr3?: number; efer: number } | null = null;
  msrs: { index: number; value: bigint }[] = [];
  setInitialState(st: NonNullable<FakeHw['initial']>): void { this.initial = st; }
  setMsrs(m: { index: number; value: bigint }[]): void { this.msrs.push(...m); }
  tsc = 0n;
  getMsr(i: number): bigint { return i === 0x10 ? this.tsc : 0n; }
  close(): void {}
}

// --- module-level fakes --------------------------------------------------

const shutdowns: [number, number][] = [];
const timerChanges: string[] = [];
const lines: [number, string, string][] = [];
const evDomains = new Map<number, EvtchnDomain>();
const upcalls: [number, number][] = [];
const evHost: EvtchnHost = {
  lookup: (id) => evDomains.get(id) ?? null,
  upcall: (d, v) => { upcalls.push([d.shared.domid, v]); },
  wakePollers: () => {},
};

before(() => {
  setSchedHooks({
    shutdown: (d, reason) => { shutdowns.push([d.domid, reason]); },
    timerChanged: (v) => { timerChanges.push(v.key); },
    vcpuUp: (v) => { v.online = true; v.dom.shared.setVcpu(v.id, 'state', RUNSTATE.runnable); },
    vcpuDown: (v) => { v.online = false; v.dom.shared.setVcpu(v.id, 'state', RUNSTATE.offline); },
  });
  setEvtchnHost(evHost);
  setConsoleSink({ line: (d, src, text) => { lines.push([d.domid, src, text]); } });
});

let nextDomid = 11;

interface Env {
  abi: Abi;
  d: Domain;
  v: VCpu[];
  hw: FakeHw[];
  h: Hcall;
  mem: Uint8Array;
  dv: DataView;
  discards: number[];
  desched: boolean;
}

interface EnvOpts {
  abi?: Abi;
  privileged?: boolean;
  isConsole?: boolean;
  vcpus?: number;
  maxPages?: number;
  poolPages?: number;
  memoryMap?: Uint8Array;
  /** other domains that exist (for -EPERM vs -ESRCH) */
  others?: number[];
  maxMaptrackFrames?: number;
  /** share this HostShared (domains that see each other) */
  host?: HostShared;
}

function e820(entries: [number, number, number][]): Uint8Array {
  const b = new Uint8Array(entries.length * 20);
  const dv = new DataView(b.buffer);
  entries.forEach(([addr, size, type], i) => {
    dv.setBigUint64(i * 20, BigInt(addr), true);
    dv.setBigUint64(i * 20 + 8, BigInt(size), true);
    dv.setUint32(i * 20 + 16, type, true);
  });
  return b;
}

function mkEnv(o: EnvOpts = {}): Env {
  const abi = o.abi ?? 'x64';
  const domid = nextDomid++;
  const physmap = new Physmap({ ramPages: RAM_PAGES, maxGrantFrames: 4, poolPages: o.poolPages ?? 16 });
  const bytes = new Uint8Array(physmap.bytes);
  const discards: number[] = [];
  const mem = {
    bytes,
    discard(off: number, len: number) { bytes.fill(0, off, off + len); discards.push(off / PAGE); },
    close() {},
  };
  const nv = o.vcpus ?? 2;
  const shared = DomainShared.create(domid, nv, 63);
  shared.set('sharedInfoOffset', physmap.sharedInfoPage * PAGE);
  shared.set('abi', abi === 'x32' ? 1 : 0);
  shared.set('isPrivileged', o.privileged ? 1 : 0);
  shared.set('isConsole', o.isConsole ? 1 : 0);
  shared.setVcpu(0, 'state', RUNSTATE.runnable); // vCPU 0 is up, the others down (as the builder leaves them)
  const host = o.host ?? new HostShared();
  for (const id of o.others ?? []) host.setDomainExists(id, true);
  host.setDomainExists(domid, true);
  const d = Object.create(Domain.prototype) as Domain;
  Object.assign(d, {
    domid, name: `d${domid}`, shared, physmap, mem, access: new GuestAccess(bytes, physmap), host,
    params: new Map<number, bigint>(), virqs: new Map<number, number>(), evtchn: { shared, mem: bytes },
    timeBase: localTimeBase, tscKhz: 2_000_000, scale: tscScale(2_000_000), maxPages: o.maxPages ?? RAM_PAGES + 8,
    totPages: RAM_PAGES, consoleLine: '', debugLine: '', hypercallPageGfn: -1, stopping: false, memoryMap: null,
    watchdogs: new Map<number, bigint>(), vmAssist: 0, handle: Uint8Array.from({ length: 16 }, (_, i) => 0xa0 + i),
    builderMemoryMap: o.memoryMap ?? e820([[0, RAM_PAGES * PAGE, 1], [0xfeff8000, 0x8000, 2], [0xfc000000, 0x4000000, 2]]),
  });
  GrantTable.initialise(bytes, physmap.layout);
  Object.assign(d, {
    grant: new GrantTable({
      domid, bytes, layout: physmap.layout, translate: (gfn) => physmap.hostPageOf(gfn),
      attach: () => ({ address: 0x7f00_0000_0000n + BigInt(domid) * 0x1_0000_0000n, bytes, close() {} }),
    }, o.maxMaptrackFrames),
  });
  const hws: FakeHw[] = [];
  const vcpus: VCpu[] = [];
  for (let i = 0; i < nv; i++) {
    const hw = new FakeHw();
    if (abi === 'x64') {
      // 4-level paging with VA = GPA below 1 GiB: PML4 @0x1000 -> PDPT @0x2000 -> 1 GiB page at 0.
      hw.cr0 = 0x80010001; hw.cr3 = 0x1000n; hw.cr4 = 0x20; hw.efer = 0x500;
    } else {
      hw.longMode64 = false; hw.cr0 = 0x11;
    }
    hws.push(hw);
    vcpus.push(new VCpu(d, i, hw as never));
  }
  Object.assign(d, { vcpus });
  const dv = new DataView(bytes.buffer);
  dv.setBigUint64(0x1000, 0x2003n, true);
  dv.setBigUint64(0x2000, 0x83n, true);
  evDomains.set(domid, d.evtchn);
  return { abi, d, v: vcpus, hw: hws, h: new Hcall(d, vcpus[0]!), mem: bytes, dv, discards, desched: false };
}

/** Performs hypercall `nr` on vCPU `vi` with the ABI's argument registers; returns RAX as a signed long. */
function call(e: Env, nr: number, args: (number | bigint)[], vi = 0): number {
  const hw = e.hw[vi]!;
  const regs = e.abi === 'x32' ? [REG.rbx, REG.rcx, REG.rdx, REG.rsi, REG.rdi] : [REG.rdi, REG.rsi, REG.rdx, REG.r10, REG.r8];
  args.forEach((a, i) => {
    const v = BigInt(a);
    hw.setReg(regs[i]!, e.abi === 'x32' ? GARBAGE | BigInt.asUintN(32, v) : BigInt.asUintN(64, v));
  });
  const h = vi === 0 ? e.h : new Hcall(e.d, e.v[vi]!);
  e.desched = doHypercall(h, nr);
  const rax = hw.reg(REG.rax);
  if (e.abi === 'x32') {
    assert.equal(rax >> 32n, 0n, 'a 32-bit caller gets a 32-bit result');
    return Number(BigInt.asIntN(32, rax));
  }
  return Number(BigInt.asIntN(64, rax));
}

type F = [off: number, type: 'u8' | 'u16' | 'u32' | 'u64' | 'i16', v: number | bigint];
function put(e: Env, gpa: number, fields: F[], size = 0): void {
  if (size) e.mem.fill(0, gpa, gpa + size);
  for (const [off, t, v] of fields) {
    const a = gpa + off;
    if (t === 'u8') e.dv.setUint8(a, Number(v));
    else if (t === 'u16') e.dv.setUint16(a, Number(v), true);
    else if (t === 'i16') e.dv.setInt16(a, Number(v), true);
    else if (t === 'u32') e.dv.setUint32(a, Number(v) >>> 0, true);
    else e.dv.setBigUint64(a, BigInt.asUintN(64, BigInt(v)), true);
  }
}
const u16 = (e: Env, a: number) => e.dv.getUint16(a, true);
const i16 = (e: Env, a: number) => e.dv.getInt16(a, true);
const u32 = (e: Env, a: number) => e.dv.getUint32(a, true);
const u8 = (e: Env, a: number) => e.dv.getUint8(a);
const u64 = (e: Env, a: number) => e.dv.getBigUint64(a, true);
/** A native unsigned long of the ABI. */
const ulong = (e: Env, a: number) => (e.abi === 'x32' ? BigInt(u32(e, a)) : u64(e, a));
const cstr = (e: Env, a: number, max: number) => {
  const b = e.mem.subarray(a, a + max);
  const z = b.indexOf(0);
  return Buffer.from(b.subarray(0, z < 0 ? max : z)).toString('latin1');
};

const ABIS: Abi[] = ['x64', 'x32'];

// --- dispatch ------------------------------------------------------------

describe('hypercall dispatch', () => {
  for (const abi of ABIS) {
    test(`${abi}: CPL3 callers get -EPERM and nothing runs`, () => {
      const e = mkEnv({ abi });
      e.hw[0]!.cpl = 3;
      assert.equal(call(e, HC.xen_version, [0, 0]), -EPERM);
      put(e, ARG, [[0, 'u32', 0]]);
      assert.equal(call(e, HC.sched_op, [2, ARG]), -EPERM);
      assert.deepEqual(shutdowns.filter(([id]) => id === e.d.domid), []);
      e.hw[0]!.cpl = 0;
      assert.equal(call(e, HC.xen_version, [0, 0]), 0x40011);
    });

    test(`${abi}: unknown and PV-only hypercalls are -ENOSYS`, () => {
      const e = mkEnv({ abi });
      for (const nr of [0, 1, 2, 3, 4, 5, 6, 14, 16, 19, 23, 26, 36, 41, 42, 63, 64, 1000, 0xffffffff]) {
        assert.equal(call(e, nr, [0, 0, 0]), -ENOSYS, `hypercall ${nr}`);
      }
    });
  }

  test('x32: only the low 32 bits of EBX ECX EDX ESI EDI are arguments', () => {
    const e = mkEnv({ abi: 'x32' });
    // xen_version(XENVER_pagesize, NULL): a NULL with garbage above bit 31 is still NULL.
    assert.equal(call(e, HC.xen_version, [7, 0]), 4096);
    // vm_assist(enable, 5): cmd and type through EBX, ECX
    assert.equal(call(e, HC.vm_assist, [0, 5]), 0);
    assert.equal(e.d.vmAssist, 1 << 5);
  });

  test('x64: arguments in RDI RSI RDX R10 R8, a negative result is a 64-bit -errno', () => {
    const e = mkEnv();
    e.hw[0]!.setReg(REG.rdi, 1n << 40n); // xen_version cmd is an int: 1<<40 truncates to 0
    assert.equal(call(e, HC.xen_version, []), 0x40011);
    assert.equal(e.hw[0]!.reg(REG.rax), 0x40011n);
    call(e, 999, []);
    assert.equal(e.hw[0]!.reg(REG.rax), BigInt.asUintN(64, -38n));
  });

  test('each hypercall walks the guest page tables afresh (no stale translation between calls)', () => {
    const e = mkEnv();
    // VA 0x80000000 -> PDPT[2] -> PD @0x3000 -> PT @0x4000 -> PT[0] -> 0x20000
    put(e, 0x2000, [[16, 'u64', 0x3003n]]);
    put(e, 0x3000, [[0, 'u64', 0x4003n]]);
    put(e, 0x4000, [[0, 'u64', 0x20003n]]);
    assert.equal(call(e, HC.xen_version, [1, 0x80000000]), 0);
    assert.equal(cstr(e, 0x20000, 16), '.0-xenode');
    // The guest remaps the page (and invlpg's it: invisible to the hypervisor) and calls again.
    put(e, 0x4000, [[0, 'u64', 0x21003n]]);
    assert.equal(call(e, HC.xen_version, [4, 0x80000000]), 0);
    assert.equal(cstr(e, 0x21000, 64), 'xenode', 'the second call writes through the new mapping');
    assert.equal(cstr(e, 0x20000, 16), '.0-xenode', 'the old page is untouched');
    // and a page the guest unmapped is -EFAULT, not the old frame
    put(e, 0x4000, [[0, 'u64', 0n]]);
    assert.equal(call(e, HC.xen_version, [1, 0x80000000]), -EFAULT);
  });
});

// --- xen_version ---------------------------------------------------------

describe('xen_version', () => {
  for (const abi of ABIS) {
    test(`${abi}: every sub-op`, () => {
      const e = mkEnv({ abi });
      assert.equal(call(e, HC.xen_version, [0, 0]), (4 << 16) | 17);
      e.mem.fill(0xcc, BUF, BUF + 2048);
      assert.equal(call(e, HC.xen_version, [1, BUF]), 0);
      assert.equal(cstr(e, BUF, 16), '.0-xenode');
      assert.equal(e.mem[BUF + 15], 0, 'xen_extraversion_t is 16 bytes, NUL-padded');
      assert.equal(e.mem[BUF + 16], 0xcc, 'nothing beyond it');
      e.mem.fill(0xcc, BUF, BUF + 2048);
      assert.equal(call(e, HC.xen_version, [2, BUF]), 0);
      assert.match(cstr(e, BUF, 64), /^node v/);
      assert.equal(cstr(e, BUF + 64, 16), 'xenode');
      assert.equal(e.mem[BUF + 144], 0xcc, 'xen_compile_info_t is 144 bytes');
      e.mem.fill(0xcc, BUF, BUF + 2048);
      assert.equal(call(e, HC.xen_version, [3, BUF]), 0);
      assert.match(cstr(e, BUF, 1024), /hvm-3\.0-x86_64/);
      assert.equal(e.mem[BUF + 1023], 0);
      assert.equal(e.mem[BUF + 1024], 0xcc);
      e.mem.fill(0xcc, BUF, BUF + 2048);
      assert.equal(call(e, HC.xen_version, [4, BUF]), 0);
      assert.equal(e.mem[BUF + 64], 0xcc, 'xen_changeset_info_t is 64 bytes');
      e.mem.fill(0xcc, BUF, BUF + 16);
      assert.equal(call(e, HC.xen_version, [5, BUF]), 0);
      const ul = abi === 'x32' ? 4 : 8;
      assert.deepEqual([...e.mem.subarray(BUF, BUF + ul)], new Array(ul).fill(0), 'virt_start = 0');
      assert.equal(e.mem[BUF + ul], 0xcc, 'platform_parameters is one unsigned long');
      put(e, ARG, [[0, 'u32', 0], [4, 'u32', 0xffffffff]]);
      assert.equal(call(e, HC.xen_version, [6, ARG]), 0);
      const f = u32(e, ARG + 4);
      for (const bit of [0, 2, 8, 9]) assert.ok(f & (1 << bit), `XENFEAT bit ${bit}`);
      assert.equal(f & (1 << 11), 0, 'not dom0');
      assert.equal(u32(e, ARG), 0);
      put(e, ARG, [[0, 'u32', 1]]);
      assert.equal(call(e, HC.xen_version, [6, ARG]), -EINVAL);
      assert.equal(call(e, HC.xen_version, [7, 0]), 4096);
      assert.equal(call(e, HC.xen_version, [7, BUF]), -EINVAL);
      assert.equal(call(e, HC.xen_version, [8, BUF]), 0);
      assert.deepEqual([...e.mem.subarray(BUF, BUF + 16)], [...e.d.handle]);
      assert.equal(call(e, HC.xen_version, [9, BUF]), 0);
      assert.equal(cstr(e, BUF, 1024), '<denied>');
      assert.equal(call(e, HC.xen_version, [10, BUF]), -EPERM);
      assert.equal(call(e, HC.xen_version, [11, BUF]), -ENOSYS);
      assert.equal(call(e, HC.xen_version, [-1, BUF]), -ENOSYS);
    });
  }

  test('privileged: dom0 feature, command line readable, build_id not available', () => {
    const e = mkEnv({ privileged: true });
    put(e, ARG, [[0, 'u32', 0]]);
    assert.equal(call(e, HC.xen_version, [6, ARG]), 0);
    assert.ok(u32(e, ARG + 4) & (1 << 11));
    e.mem.fill(0xcc, BUF, BUF + 1024);
    assert.equal(call(e, HC.xen_version, [9, BUF]), 0);
    assert.equal(e.mem[BUF], 0);
    assert.equal(call(e, HC.xen_version, [10, BUF]), -ENOSYS);
  });

  test('unmapped buffers are -EFAULT', () => {
    const e = mkEnv();
    for (const cmd of [1, 2, 3, 4, 5, 6, 8, 9]) assert.equal(call(e, HC.xen_version, [cmd, HOLE]), -EFAULT, `cmd ${cmd}`);
    // a buffer that runs off the end of RAM faults without writing its first part
    const end = RAM_PAGES * PAGE - 8;
    e.mem.fill(0xcc, end, end + 8);
    assert.equal(call(e, HC.xen_version, [1, end]), -EFAULT);
    assert.deepEqual([...e.mem.subarray(end, end + 8)], new Array(8).fill(0xcc));
  });
});

// --- console_io ----------------------------------------------------------

describe('console_io', () => {
  const mine = (e: Env) => lines.filter(([id]) => id === e.d.domid).map(([, src, t]) => [src, t]);

  test('write: sanitised, line-buffered output', () => {
    const e = mkEnv({ isConsole: true });
    const text = Buffer.from('hello\x07 world\nsecond\tline\r\npartial');
    e.mem.set(text, BUF);
    assert.equal(call(e, HC.console_io, [0, text.length, BUF]), 0);
    assert.deepEqual(mine(e), [['console_io', 'hello world'], ['console_io', 'second\tline']]);
    e.mem.set(Buffer.from('!\n'), BUF);
    assert.equal(call(e, HC.console_io, [0, 2, BUF]), 0);
    assert.deepEqual(mine(e).at(-1), ['console_io', 'partial!']);
    assert.equal(call(e, HC.console_io, [0, 0, HOLE]), 0, 'zero bytes touch nothing');
  });

  test('errors: not a console domain, unknown command, oversize, unmapped buffer', () => {
    const plain = mkEnv();
    assert.equal(call(plain, HC.console_io, [0, 1, BUF]), -EPERM);
    assert.equal(call(plain, HC.console_io, [1, 1, BUF]), -EPERM);
    assert.equal(call(plain, HC.console_io, [2, 1, BUF]), -ENOSYS);
    const e = mkEnv({ isConsole: true });
    assert.equal(call(e, HC.console_io, [0, (1 << 20) + 1, BUF]), -EINVAL);
    assert.equal(call(e, HC.console_io, [0, 4, HOLE]), -EFAULT);
    assert.equal(call(e, HC.console_io, [-1, 4, BUF]), -ENOSYS);
    const priv = mkEnv({ privileged: true });
    priv.mem.set(Buffer.from('x\n'), BUF);
    assert.equal(call(priv, HC.console_io, [0, 2, BUF]), 0, 'a privileged domain may write');
  });

  test('read: returns queued input up to count', () => {
    const e = mkEnv({ isConsole: true });
    assert.equal(call(e, HC.console_io, [1, 16, BUF]), 0, 'nothing queued');
    feedConsoleInput(e.d.domid, Buffer.from('abcdef'));
    assert.equal(call(e, HC.console_io, [1, 0, BUF]), 0);
    assert.equal(call(e, HC.console_io, [1, 4, BUF]), 4);
    assert.equal(cstr(e, BUF, 4), 'abcd');
    assert.equal(call(e, HC.console_io, [1, 16, BUF + 100]), 2);
    assert.equal(cstr(e, BUF + 100, 2), 'ef');
    feedConsoleInput(e.d.domid, Buffer.from('z'));
    assert.equal(call(e, HC.console_io, [1, 1, HOLE]), -EFAULT);
  });
});

// --- hvm_op --------------------------------------------------------------

describe('hvm_op', () => {
  const param = (e: Env, domid: number, index: number, value: bigint = 0n) =>
    put(e, ARG, [[0, 'u16', domid], [4, 'u32', index], [8, 'u64', value]], 16);

  for (const abi of ABIS) {
    test(`${abi}: CALLBACK_IRQ of type vector sets the callback and latches the shared-info ABI`, () => {
      const e = mkEnv({ abi });
      e.d.shared.set('abi', abi === 'x32' ? 0 : 1); // the opposite, to see the latch
      param(e, DOMID_SELF, 0, 0x02000000000000f3n);
      assert.equal(call(e, HC.hvm_op, [0, ARG]), 0);
      assert.equal(e.d.shared.get('callbackVector'), 0xf3);
      assert.equal(e.d.shared.get('abi'), abi === 'x32' ? 1 : 0);
      param(e, e.d.domid, 0);
      assert.equal(call(e, HC.hvm_op, [1, ARG]), 0);
      assert.equal(u64(e, ARG + 8), 0x02000000000000f3n);
      assert.equal(u16(e, ARG), e.d.domid, 'only value is written back');
      param(e, DOMID_SELF, 0, 0n);
      assert.equal(call(e, HC.hvm_op, [0, ARG]), 0);
      assert.equal(e.d.shared.get('callbackVector'), 0);
    });
  }

  test('CALLBACK_IRQ: GSI and PCI INTx values are stored and leave a vector callback in place', () => {
    // Xen's hvm_set_callback_via ignores them on a domain without an IOAPIC (PVH);
    // Linux sets GSI 1 after registering per-vCPU upcall vectors.
    const e = mkEnv();
    param(e, DOMID_SELF, 0, 0x02000000000000f3n);
    assert.equal(call(e, HC.hvm_op, [0, ARG]), 0);
    for (const v of [0x1n, 0x05n, 0x0100000000000a0bn | 1n, 0x0300000000000040n]) {
      param(e, DOMID_SELF, 0, v);
      assert.equal(call(e, HC.hvm_op, [0, ARG]), 0, v.toString(16));
      param(e, DOMID_SELF, 0);
      assert.equal(call(e, HC.hvm_op, [1, ARG]), 0);
      assert.equal(u64(e, ARG + 8), v, 'the value reads back as written');
      assert.equal(e.d.shared.get('callbackVector'), 0xf3, 'delivery still through the vector');
    }
  });

  test('CALLBACK_IRQ: a vector below 16 is -EINVAL and changes nothing', () => {
    const e = mkEnv();
    param(e, DOMID_SELF, 0, 0x020000000000000fn);
    assert.equal(call(e, HC.hvm_op, [0, ARG]), -EINVAL);
    assert.equal(e.d.shared.get('callbackVector'), 0);
    assert.equal(e.d.params.get(0), undefined);
  });

  test('per-index access rules for the domain itself', () => {
    const e = mkEnv();
    e.d.params.set(1, 0xfeffcn); // STORE_PFN set by the builder
    e.d.params.set(5, 0x1234n); // IOREQ_PFN
    const readable = [0, 1, 2, 15, 17, 18, 19, 34, 35, 36, 37];
    const writable = [0, 2, 15, 18, 19, 34, 36, 37];
    const deprecated = [4, 13, 20, 21, 22, 23, 24, 25, 26, 30];
    for (let i = 0; i < 39; i++) {
      param(e, DOMID_SELF, i);
      const r = call(e, HC.hvm_op, [1, ARG]);
      assert.equal(r, deprecated.includes(i) ? -EINVAL : readable.includes(i) ? 0 : -EPERM, `get ${i}`);
      param(e, DOMID_SELF, i, i === 0 ? 0x0200000000000040n : 7n);
      const w = call(e, HC.hvm_op, [0, ARG]);
      assert.equal(w, deprecated.includes(i) ? -EINVAL : writable.includes(i) ? 0 : -EPERM, `set ${i}`);
    }
    param(e, DOMID_SELF, 1);
    call(e, HC.hvm_op, [1, ARG]);
    assert.equal(u64(e, ARG + 8), 0xfeffcn);
    assert.equal(e.d.params.get(5), 0x1234n, 'refused writes change nothing');
    param(e, DOMID_SELF, 18);
    call(e, HC.hvm_op, [1, ARG]);
    assert.equal(u64(e, ARG + 8), 7n);
    for (const i of [39, 40, 0xffffffff]) {
      param(e, DOMID_SELF, i);
      assert.equal(call(e, HC.hvm_op, [1, ARG]), -EINVAL);
      assert.equal(call(e, HC.hvm_op, [0, ARG]), -EINVAL);
    }
  });

  test('another domain: -EPERM if it exists, -ESRCH if not; a bad index is -EINVAL first', () => {
    const e = mkEnv({ others: [3] });
    param(e, 3, 1);
    assert.equal(call(e, HC.hvm_op, [1, ARG]), -EPERM);
    assert.equal(call(e, HC.hvm_op, [0, ARG]), -EPERM);
    param(e, 4, 1);
    assert.equal(call(e, HC.hvm_op, [1, ARG]), -ESRCH);
    param(e, 4, 39);
    assert.equal(call(e, HC.hvm_op, [1, ARG]), -EINVAL);
  });

  test('set_evtchn_upcall_vector, flush_tlbs, pagetable_dying, get_time, unknown ops, faults', () => {
    const e = mkEnv();
    put(e, ARG, [[0, 'u32', 1], [4, 'u8', 0x40]], 8);
    assert.equal(call(e, HC.hvm_op, [23, ARG]), 0);
    assert.equal(e.d.shared.vcpu(1, 'upcallVector'), 0x40);
    put(e, ARG, [[0, 'u32', 0], [4, 'u8', 0x0f]], 8);
    assert.equal(call(e, HC.hvm_op, [23, ARG]), -EINVAL);
    put(e, ARG, [[0, 'u32', 2], [4, 'u8', 0x40]], 8);
    assert.equal(call(e, HC.hvm_op, [23, ARG]), -ENOENT);
    assert.equal(call(e, HC.hvm_op, [5, 0]), 0);
    assert.equal(call(e, HC.hvm_op, [5, ARG]), -EINVAL);
    assert.equal(call(e, HC.hvm_op, [9, ARG]), 0);
    const t0 = e.d.now();
    assert.equal(call(e, HC.hvm_op, [10, ARG]), 0);
    const t = u64(e, ARG);
    assert.ok(t >= t0 && t <= e.d.now());
    for (const op of [2, 3, 4, 15, 25, 99]) assert.equal(call(e, HC.hvm_op, [op, ARG]), -ENOSYS, `op ${op}`);
    for (const op of [0, 1, 10, 23]) assert.equal(call(e, HC.hvm_op, [op, HOLE]), -EFAULT, `op ${op}`);
  });
});

// --- memory_op -----------------------------------------------------------

/** xen_memory_reservation for the ABI. */
function reservation(e: Env, a: { list: number; nr: number; order?: number; domid?: number }): void {
  if (e.abi === 'x64') put(e, ARG, [[0, 'u64', a.list], [8, 'u64', a.nr], [16, 'u32', a.order ?? 0], [24, 'u16', a.domid ?? DOMID_SELF]], 32);
  else put(e, ARG, [[0, 'u32', a.list], [4, 'u32', a.nr], [8, 'u32', a.order ?? 0], [16, 'u16', a.domid ?? DOMID_SELF]], 20);
}
function pfnList(e: Env, at: number, pfns: number[]): void {
  pfns.forEach((p, i) => (e.abi === 'x64' ? e.dv.setBigUint64(at + i * 8, BigInt(p), true) : e.dv.setUint32(at + i * 4, p, true)));
}
function addToPhysmap(e: Env, a: { space: number; idx: number; gpfn: number | bigint; size?: number; domid?: number }): void {
  if (e.abi === 'x64') put(e, ARG, [[0, 'u16', a.domid ?? DOMID_SELF], [2, 'u16', a.size ?? 0], [4, 'u32', a.space], [8, 'u64', a.idx], [16, 'u64', a.gpfn]], 24);
  else put(e, ARG, [[0, 'u16', a.domid ?? DOMID_SELF], [2, 'u16', a.size ?? 0], [4, 'u32', a.space], [8, 'u32', a.idx], [12, 'u32', a.gpfn]], 16);
}
function removeFromPhysmap(e: Env, gpfn: number, domid = DOMID_SELF): void {
  if (e.abi === 'x64') put(e, ARG, [[0, 'u16', domid], [8, 'u64', gpfn]], 16);
  else put(e, ARG, [[0, 'u16', domid], [4, 'u32', gpfn]], 8);
}

describe('memory_op', () => {
  for (const abi of ABIS) {
    test(`${abi}: memory_map returns the builder's map, clipped to nr_entries`, () => {
      const e = mkEnv({ abi });
      const memmap = (nr: number) => (abi === 'x64' ? put(e, ARG, [[0, 'u32', nr], [8, 'u64', BUF]], 16) : put(e, ARG, [[0, 'u32', nr], [4, 'u32', BUF]], 8));
      e.mem.fill(0xcc, BUF, BUF + 100);
      memmap(2);
      assert.equal(call(e, HC.memory_op, [9, ARG]), 0);
      assert.equal(u32(e, ARG), 2);
      assert.deepEqual(e.mem.slice(BUF, BUF + 40), e.d.builderMemoryMap.slice(0, 40));
      assert.equal(e.mem[BUF + 40], 0xcc);
      memmap(100);
      assert.equal(call(e, HC.memory_op, [9, ARG]), 0);
      assert.equal(u32(e, ARG), 3);
      assert.deepEqual(e.mem.slice(BUF, BUF + 60), e.d.builderMemoryMap);
      memmap(0);
      assert.equal(call(e, HC.memory_op, [9, ARG]), 0);
      assert.equal(u32(e, ARG), 0);
      memmap(3);
      if (abi === 'x64') put(e, ARG, [[8, 'u64', HOLE]]);
      else put(e, ARG, [[4, 'u32', HOLE]]);
      assert.equal(call(e, HC.memory_op, [9, ARG]), -EFAULT);
      assert.equal(call(e, HC.memory_op, [9, HOLE]), -EFAULT);
    });

    test(`${abi}: set_memory_map replaces what memory_map returns`, () => {
      const e = mkEnv({ abi, others: [2] });
      const mine = e820([[0, 0x9f000, 1], [0x100000, 0x100000, 1]]);
      e.mem.set(mine, BUF);
      const setmap = (domid: number, nr: number) => (abi === 'x64'
        ? put(e, ARG, [[0, 'u16', domid], [8, 'u32', nr], [16, 'u64', BUF]], 24)
        : put(e, ARG, [[0, 'u16', domid], [4, 'u32', nr], [8, 'u32', BUF]], 12));
      setmap(DOMID_SELF, 1025);
      assert.equal(call(e, HC.memory_op, [13, ARG]), -EINVAL);
      setmap(2, 2);
      assert.equal(call(e, HC.memory_op, [13, ARG]), -EPERM);
      setmap(9, 2);
      assert.equal(call(e, HC.memory_op, [13, ARG]), -ESRCH);
      setmap(DOMID_SELF, 2);
      assert.equal(call(e, HC.memory_op, [13, ARG]), 0);
      const out = BUF + 0x400;
      if (abi === 'x64') put(e, ARG, [[0, 'u32', 10], [8, 'u64', out]], 16);
      else put(e, ARG, [[0, 'u32', 10], [4, 'u32', out]], 8);
      assert.equal(call(e, HC.memory_op, [9, ARG]), 0);
      assert.equal(u32(e, ARG), 2);
      assert.deepEqual(e.mem.slice(out, out + 40), mine);
    });
  }

  test('current/maximum_reservation and maximum_gpfn', () => {
    const e = mkEnv({ others: [2] });
    put(e, ARG, [[0, 'u16', DOMID_SELF]]);
    assert.equal(call(e, HC.memory_op, [3, ARG]), RAM_PAGES);
    assert.equal(call(e, HC.memory_op, [4, ARG]), RAM_PAGES + 8);
    assert.equal(call(e, HC.memory_op, [14, ARG]), 0xfefff);
    put(e, ARG, [[0, 'u16', e.d.domid]]);
    assert.equal(call(e, HC.memory_op, [3, ARG]), RAM_PAGES);
    put(e, ARG, [[0, 'u16', 2]]);
    for (const c of [3, 4, 14]) assert.equal(call(e, HC.memory_op, [c, ARG]), -EPERM);
    put(e, ARG, [[0, 'u16', 7]]);
    for (const c of [3, 4, 14]) assert.equal(call(e, HC.memory_op, [c, ARG]), -ESRCH);
    for (const c of [3, 4, 14]) assert.equal(call(e, HC.memory_op, [c, HOLE]), -EFAULT);
  });

  test('unknown commands are -ENOSYS', () => {
    const e = mkEnv();
    for (const c of [2, 5, 8, 10, 11, 12, 16, 23, 26, 28, 63]) assert.equal(call(e, HC.memory_op, [c, ARG]), -ENOSYS, `cmd ${c}`);
  });

  for (const abi of ABIS) {
    test(`${abi}: add_to_physmap shared_info: into a hole, moved, over RAM (the RAM page is freed)`, () => {
      const e = mkEnv({ abi });
      const si = e.d.physmap.sharedInfoPage;
      addToPhysmap(e, { space: 0, idx: 0, gpfn: 0x80000 });
      assert.equal(call(e, HC.memory_op, [7, ARG]), 0);
      assert.equal(e.d.physmap.hostPageOf(0x80000), si);
      assert.equal(e.d.totPages, RAM_PAGES);
      addToPhysmap(e, { space: 0, idx: 0, gpfn: 0x50 });
      assert.equal(call(e, HC.memory_op, [7, ARG]), 0);
      assert.equal(e.d.physmap.hostPageOf(0x80000), -1, 'left its old GFN');
      assert.equal(e.d.physmap.hostPageOf(0x50), si);
      assert.equal(e.d.physmap.hostPageOf(0x4f), 0x4f);
      assert.equal(e.d.physmap.hostPageOf(0x51), 0x51);
      assert.deepEqual(e.discards, [0x50], 'the displaced RAM page is given back');
      put(e, ARG, [[0, 'u16', DOMID_SELF]]);
      assert.equal(call(e, HC.memory_op, [3, ARG]), RAM_PAGES - 1, 'and no longer counted');
      addToPhysmap(e, { space: 0, idx: 1, gpfn: 0x80000 });
      assert.equal(call(e, HC.memory_op, [7, ARG]), -EINVAL);
    });

    test(`${abi}: add_to_physmap grant_table frames grow the table up to its maximum`, () => {
      const e = mkEnv({ abi });
      addToPhysmap(e, { space: 1, idx: 2, gpfn: 0x80010 });
      assert.equal(call(e, HC.memory_op, [7, ARG]), 0);
      assert.equal(e.d.physmap.hostPageOf(0x80010), e.d.physmap.grantBase + 2);
      assert.equal(e.d.grant.nrFrames, 3);
      addToPhysmap(e, { space: 1, idx: 4, gpfn: 0x80011 });
      assert.equal(call(e, HC.memory_op, [7, ARG]), -EINVAL, 'beyond max_grant_frames');
      addToPhysmap(e, { space: 1, idx: 0x80000000, gpfn: 0x80011 });
      assert.equal(call(e, HC.memory_op, [7, ARG]), -EINVAL, 'status frames need v2');
      assert.equal(e.d.physmap.hostPageOf(0x80011), -1);
      // over RAM: the RAM page is freed
      addToPhysmap(e, { space: 1, idx: 0, gpfn: 0x60 });
      assert.equal(call(e, HC.memory_op, [7, ARG]), 0);
      assert.deepEqual(e.discards, [0x60]);
      assert.equal(e.d.totPages, RAM_PAGES - 1);
      // over a special page: unhooked, not freed
      addToPhysmap(e, { space: 1, idx: 1, gpfn: 0xfeffa });
      assert.equal(call(e, HC.memory_op, [7, ARG]), 0);
      assert.deepEqual(e.discards, [0x60]);
      assert.equal(e.d.totPages, RAM_PAGES - 1);
    });

    test(`${abi}: add_to_physmap gmfn and gmfn_range move RAM frames`, () => {
      const e = mkEnv({ abi });
      addToPhysmap(e, { space: 2, idx: 5, gpfn: 0x90000 });
      assert.equal(call(e, HC.memory_op, [7, ARG]), 0);
      assert.equal(e.d.physmap.hostPageOf(0x90000), 5);
      assert.equal(e.d.physmap.hostPageOf(5), -1);
      addToPhysmap(e, { space: 2, idx: 5, gpfn: 0x90001 });
      assert.equal(call(e, HC.memory_op, [7, ARG]), -EINVAL, 'gfn 5 is no longer populated');
      // a RAM frame moved over another RAM frame frees the one displaced
      addToPhysmap(e, { space: 2, idx: 0x90000, gpfn: 7 });
      assert.equal(call(e, HC.memory_op, [7, ARG]), 0);
      assert.equal(e.d.physmap.hostPageOf(7), 5);
      assert.deepEqual(e.discards, [7]);
      addToPhysmap(e, { space: 3, idx: 0x20, gpfn: 0x91000, size: 3 });
      assert.equal(call(e, HC.memory_op, [7, ARG]), 0);
      for (let i = 0; i < 3; i++) assert.equal(e.d.physmap.hostPageOf(0x91000 + i), 0x20 + i);
      assert.equal(e.d.physmap.hostPageOf(0x20), -1);
      assert.equal(u16(e, ARG + 2), 0, 'size consumed');
      assert.equal(Number(e.abi === 'x64' ? u64(e, ARG + 8) : u32(e, ARG + 8)), 0x23);
      assert.equal(Number(e.abi === 'x64' ? u64(e, ARG + 16) : u32(e, ARG + 12)), 0x91003);
    });

    test(`${abi}: add_to_physmap errors`, () => {
      const e = mkEnv({ abi, others: [2] });
      addToPhysmap(e, { space: 4, idx: 1, gpfn: 0x90000 });
      assert.equal(call(e, HC.memory_op, [7, ARG]), -EINVAL, 'gmfn_foreign only in the batch');
      for (const space of [5, 6, 100]) {
        addToPhysmap(e, { space, idx: 0, gpfn: 0x90000 });
        assert.equal(call(e, HC.memory_op, [7, ARG]), -EINVAL, `space ${space}`);
      }
      addToPhysmap(e, { space: 0, idx: 0, gpfn: 0x90000, domid: 2 });
      assert.equal(call(e, HC.memory_op, [7, ARG]), -EPERM);
      addToPhysmap(e, { space: 0, idx: 0, gpfn: 0x90000, domid: 9 });
      assert.equal(call(e, HC.memory_op, [7, ARG]), -ESRCH);
      assert.equal(call(e, HC.memory_op, [7, HOLE]), -EFAULT);
      assert.equal(e.d.physmap.hostPageOf(0x90000), -1);
    });
  }

  test('x64: add_to_physmap refuses a GFN beyond the guest address width', () => {
    const e = mkEnv();
    addToPhysmap(e, { space: 0, idx: 0, gpfn: 1n << 40n });
    assert.equal(call(e, HC.memory_op, [7, ARG]), -EINVAL);
    addToPhysmap(e, { space: 0, idx: 0, gpfn: -1n });
    assert.equal(call(e, HC.memory_op, [7, ARG]), -EINVAL);
  });

  for (const abi of ABIS) {
    test(`${abi}: remove_from_physmap`, () => {
      const e = mkEnv({ abi, others: [2] });
      removeFromPhysmap(e, 0x30);
      assert.equal(call(e, HC.memory_op, [15, ARG]), 0);
      assert.equal(e.d.physmap.hostPageOf(0x30), -1);
      assert.deepEqual(e.discards, [0x30]);
      assert.equal(e.d.totPages, RAM_PAGES - 1);
      assert.equal(call(e, HC.memory_op, [15, ARG]), -ENOENT);
      removeFromPhysmap(e, 0x31, 2);
      assert.equal(call(e, HC.memory_op, [15, ARG]), -EPERM);
      assert.equal(call(e, HC.memory_op, [15, HOLE]), -EFAULT);
      // a Xen frame is unhooked, not freed
      addToPhysmap(e, { space: 0, idx: 0, gpfn: 0x80000 });
      call(e, HC.memory_op, [7, ARG]);
      removeFromPhysmap(e, 0x80000);
      assert.equal(call(e, HC.memory_op, [15, ARG]), 0);
      assert.equal(e.d.totPages, RAM_PAGES - 1);
      assert.deepEqual(e.discards, [0x30]);
    });

    test(`${abi}: populate_physmap and decrease_reservation (extents done, continuation start)`, () => {
      const e = mkEnv({ abi, maxPages: RAM_PAGES + 6, poolPages: 8 });
      const LIST = BUF;
      pfnList(e, LIST, [0x90000, 0x90001, 0x10]);
      reservation(e, { list: LIST, nr: 3 });
      assert.equal(call(e, HC.memory_op, [6, ARG]), 3);
      assert.ok(e.d.physmap.hostPageOf(0x90000) >= e.d.physmap.poolBase);
      assert.ok(e.d.physmap.hostPageOf(0x90001) >= e.d.physmap.poolBase);
      assert.equal(e.d.physmap.hostPageOf(0x10), 0x10, 'already populated: left alone');
      assert.equal(e.d.totPages, RAM_PAGES + 2);
      // order 1 extents, starting at extent 1 via cmd >> 6
      pfnList(e, LIST, [0x90000, 0x92000, 0x94000]);
      reservation(e, { list: LIST, nr: 3, order: 1 });
      assert.equal(call(e, HC.memory_op, [6 | (1 << 6), ARG]), 3);
      assert.equal(e.d.physmap.hostPageOf(0x92001) >= 0, true);
      assert.equal(e.d.physmap.hostPageOf(0x94001) >= 0, true);
      assert.equal(e.d.totPages, RAM_PAGES + 6);
      // the reservation is full: nothing more
      pfnList(e, LIST, [0x96000]);
      reservation(e, { list: LIST, nr: 1 });
      assert.equal(call(e, HC.memory_op, [6, ARG]), 0);
      assert.equal(e.d.physmap.hostPageOf(0x96000), -1);
      // decrease: RAM and pool pages go back; a hole stops the operation
      pfnList(e, LIST, [0x90000, 0x31, 0x12345, 0x32]);
      reservation(e, { list: LIST, nr: 4 });
      assert.equal(call(e, HC.memory_op, [1, ARG]), 2);
      assert.equal(e.d.physmap.hostPageOf(0x90000), -1);
      assert.equal(e.d.physmap.hostPageOf(0x31), -1);
      assert.equal(e.d.physmap.hostPageOf(0x32), 0x32);
      assert.equal(e.d.totPages, RAM_PAGES + 4);
      assert.ok(e.discards.includes(0x31));
      // the pool page came back: populate can use it again
      pfnList(e, LIST, [0x98000]);
      reservation(e, { list: LIST, nr: 1 });
      assert.equal(call(e, HC.memory_op, [6, ARG]), 1);
    });
  }

  test('reservation edge cases: order, start beyond nr, unreadable arguments, foreign domain, non-RAM frames', () => {
    const e = mkEnv({ others: [2], maxPages: RAM_PAGES + 1000, poolPages: 4 });
    pfnList(e, BUF, [0x90000]);
    reservation(e, { list: BUF, nr: 1, order: 10 });
    assert.equal(call(e, HC.memory_op, [6, ARG]), 0, 'order above the domU maximum: nothing done');
    reservation(e, { list: BUF, nr: 1 });
    assert.equal(call(e, HC.memory_op, [6 | (5 << 6), ARG]), 5, 'start >= nr returns start');
    assert.equal(call(e, HC.memory_op, [6 | (2 << 6), HOLE]), 2, 'unreadable reservation: the start extent, not -EFAULT');
    reservation(e, { list: HOLE, nr: 2 });
    assert.equal(call(e, HC.memory_op, [6, ARG]), 0, 'unreadable extent list: stops there');
    pfnList(e, RAM_PAGES * PAGE - 8, [0x90000]);
    reservation(e, { list: RAM_PAGES * PAGE - 8, nr: 2 });
    assert.equal(call(e, HC.memory_op, [6, ARG]), 1, 'the second extent is in the hole');
    reservation(e, { list: BUF, nr: 1, domid: 2 });
    assert.equal(call(e, HC.memory_op, [6, ARG]), -EPERM);
    reservation(e, { list: BUF, nr: 1, domid: 9 });
    assert.equal(call(e, HC.memory_op, [1, ARG]), -ESRCH);
    // pool exhaustion
    pfnList(e, BUF, [0xa0000]);
    reservation(e, { list: BUF, nr: 1, order: 3 });
    assert.equal(call(e, HC.memory_op, [6, ARG]), 0, '4 pool pages cannot back an order-3 extent');
    // decrease refuses a Xen frame
    addToPhysmap(e, { space: 0, idx: 0, gpfn: 0x80000 });
    call(e, HC.memory_op, [7, ARG]);
    pfnList(e, BUF, [0x80000]);
    reservation(e, { list: BUF, nr: 1 });
    assert.equal(call(e, HC.memory_op, [1, ARG]), 0);
    assert.equal(e.d.physmap.hostPageOf(0x80000), e.d.physmap.sharedInfoPage);
  });

  test('increase_reservation accounts pages up to the maximum', () => {
    const e = mkEnv({ maxPages: RAM_PAGES + 3 });
    reservation(e, { list: 0, nr: 5 });
    assert.equal(call(e, HC.memory_op, [0, ARG]), 3);
    assert.equal(e.d.totPages, RAM_PAGES + 3);
  });
});

// --- grant_table_op ------------------------------------------------------

describe('grant_table_op', () => {
  const GNTST_general_error = -1;
  const GNTST_bad_domain = -2;
  const GNTST_permission_denied = -8;

  test('query_size', () => {
    const e = mkEnv({ others: [2] });
    put(e, ARG, [[0, 'u16', DOMID_SELF], [12, 'i16', 99]], 16);
    assert.equal(call(e, HC.grant_table_op, [6, ARG, 1]), 0);
    assert.deepEqual([u32(e, ARG + 4), u32(e, ARG + 8), i16(e, ARG + 12)], [1, 4, 0]);
    put(e, ARG, [[0, 'u16', 2]], 16);
    assert.equal(call(e, HC.grant_table_op, [6, ARG, 1]), 0);
    assert.equal(i16(e, ARG + 12), GNTST_permission_denied);
    put(e, ARG, [[0, 'u16', 9]], 16);
    assert.equal(call(e, HC.grant_table_op, [6, ARG, 1]), 0);
    assert.equal(i16(e, ARG + 12), GNTST_bad_domain);
    assert.equal(call(e, HC.grant_table_op, [6, ARG, 2]), -EINVAL);
    assert.equal(call(e, HC.grant_table_op, [6, ARG, 0]), -EINVAL);
    assert.equal(call(e, HC.grant_table_op, [6, HOLE, 1]), -EFAULT);
  });

  for (const abi of ABIS) {
    test(`${abi}: setup_table grows the table and lists where its frames are mapped`, () => {
      const e = mkEnv({ abi, others: [2] });
      const setup = (dom: number, nr: number, list: number) => (abi === 'x64'
        ? put(e, ARG, [[0, 'u16', dom], [4, 'u32', nr], [8, 'i16', 99], [16, 'u64', list]], 24)
        : put(e, ARG, [[0, 'u16', dom], [4, 'u32', nr], [8, 'i16', 99], [12, 'u32', list]], 16));
      const ul = abi === 'x64' ? 8 : 4;
      const none = abi === 'x64' ? 0xffffffffffffffffn : 0xffffffffn;
      addToPhysmap(e, { space: 1, idx: 0, gpfn: 0x80010 });
      assert.equal(call(e, HC.memory_op, [7, ARG]), 0);
      e.mem.fill(0xcc, BUF, BUF + 64);
      setup(DOMID_SELF, 2, BUF);
      assert.equal(call(e, HC.grant_table_op, [2, ARG, 1]), 0);
      assert.equal(i16(e, ARG + 8), 0);
      assert.equal(ulong(e, BUF), 0x80010n);
      assert.equal(ulong(e, BUF + ul), none);
      assert.equal(e.mem[BUF + 2 * ul], 0xcc, 'nothing beyond nr_frames entries');
      assert.equal(e.d.grant.nrFrames, 2);
      setup(DOMID_SELF, 5, BUF);
      assert.equal(call(e, HC.grant_table_op, [2, ARG, 1]), 0);
      assert.equal(i16(e, ARG + 8), GNTST_general_error);
      assert.equal(e.d.grant.nrFrames, 2);
      setup(2, 1, BUF);
      assert.equal(call(e, HC.grant_table_op, [2, ARG, 1]), 0);
      assert.equal(i16(e, ARG + 8), GNTST_permission_denied);
      setup(9, 1, BUF);
      assert.equal(call(e, HC.grant_table_op, [2, ARG, 1]), 0);
      assert.equal(i16(e, ARG + 8), GNTST_bad_domain);
      // Xen does not check an HVM caller's handle first: each frame it cannot write is GNTST_bad_virt_addr
      setup(DOMID_SELF, 1, HOLE);
      assert.equal(call(e, HC.grant_table_op, [2, ARG, 1]), 0);
      assert.equal(i16(e, ARG + 8), -5);
      assert.equal(call(e, HC.grant_table_op, [2, HOLE, 1]), -EFAULT);
      assert.equal(call(e, HC.grant_table_op, [2, ARG, 2]), -EINVAL);
    });
  }

  test('set_version / get_version', () => {
    const e = mkEnv({ others: [2] });
    put(e, ARG, [[0, 'u32', 1]]);
    assert.equal(call(e, HC.grant_table_op, [8, ARG, 1]), 0);
    assert.equal(u32(e, ARG), 1);
    for (const v of [0, 3]) {
      put(e, ARG, [[0, 'u32', v]]);
      assert.equal(call(e, HC.grant_table_op, [8, ARG, 1]), -EINVAL);
      assert.equal(u32(e, ARG), 1, 'the current version is reported');
    }
    put(e, ARG, [[0, 'u32', 2]]);
    assert.equal(call(e, HC.grant_table_op, [8, ARG, 1]), 0);
    assert.equal(u32(e, ARG), 2);
    put(e, ARG, [[0, 'u16', DOMID_SELF], [4, 'u32', 0]], 8);
    assert.equal(call(e, HC.grant_table_op, [10, ARG, 1]), 0);
    assert.equal(u32(e, ARG + 4), 2);
    put(e, ARG, [[0, 'u32', 1]]);
    assert.equal(call(e, HC.grant_table_op, [8, ARG, 1]), 0);
    put(e, ARG, [[0, 'u16', DOMID_SELF], [4, 'u32', 0]], 8);
    assert.equal(call(e, HC.grant_table_op, [10, ARG, 1]), 0);
    assert.equal(u32(e, ARG + 4), 1);
    put(e, ARG, [[0, 'u16', 2]], 8);
    assert.equal(call(e, HC.grant_table_op, [10, ARG, 1]), -EPERM);
    put(e, ARG, [[0, 'u16', 9]], 8);
    assert.equal(call(e, HC.grant_table_op, [10, ARG, 1]), -ESRCH);
    assert.equal(call(e, HC.grant_table_op, [10, ARG, 3]), -ESRCH, 'the count is not looked at');
    assert.equal(call(e, HC.grant_table_op, [10, ARG, -1]), -EINVAL, 'a negative count is refused first');
    assert.equal(call(e, HC.grant_table_op, [10, HOLE, 1]), -EFAULT);
  });

  test('what Xen keeps from HVM/PVH callers (dump_table, transfer, unmap_and_replace, get_status_frames, cache_flush) is -ENOSYS', () => {
    const e = mkEnv();
    for (const c of [3, 4, 7, 9, 12, 13, 100]) assert.equal(call(e, HC.grant_table_op, [c, ARG, 1]), -ENOSYS, `cmd ${c}`);
  });
});

// --- event_channel_op ----------------------------------------------------

describe('event_channel_op', () => {
  test('alloc_unbound (loopback via DOMID_SELF), bind_interdomain, status, send, unmask, close', () => {
    const e = mkEnv();
    put(e, ARG, [[0, 'u16', DOMID_SELF], [2, 'u16', DOMID_SELF]], 8);
    assert.equal(call(e, HC.event_channel_op, [6, ARG]), 0);
    const p = u32(e, ARG + 4);
    assert.equal(p, 1);
    assert.deepEqual(portInfo(e.d.shared, p), { state: ECS.unbound, vcpu: 0, remoteDom: e.d.domid, remotePort: 0 });
    put(e, ARG, [[0, 'u16', DOMID_SELF], [4, 'u32', p]], 12);
    assert.equal(call(e, HC.event_channel_op, [0, ARG]), 0);
    const q = u32(e, ARG + 8);
    assert.equal(q, 2);
    // status of both ends
    const status = (port: number, dom = DOMID_SELF) => {
      put(e, ARG, [[0, 'u16', dom], [4, 'u32', port]], 24);
      return call(e, HC.event_channel_op, [5, ARG]);
    };
    assert.equal(status(p), 0);
    assert.deepEqual([u32(e, ARG + 8), u32(e, ARG + 12), u16(e, ARG + 16), u32(e, ARG + 20)], [2, 0, e.d.domid, q]);
    assert.equal(status(0), 0);
    assert.equal(u32(e, ARG + 8), 0, 'port 0 reads as closed');
    assert.equal(status(64), -EINVAL);
    // send from q lands on p
    const si = e.d.physmap.sharedInfoPage * PAGE;
    e.mem[si + 2048] = 0;
    put(e, ARG, [[0, 'u32', q]]);
    assert.equal(call(e, HC.event_channel_op, [4, ARG]), 0);
    assert.ok(e.mem[si + 2048]! & (1 << p));
    // unmask of a masked pending port raises it
    e.mem[si + 2048] = 1 << p;
    e.mem[si + 2560] = 1 << p;
    e.mem[si] = 0;
    e.mem[si + 8] = 0;
    put(e, ARG, [[0, 'u32', p]]);
    assert.equal(call(e, HC.event_channel_op, [9, ARG]), 0);
    assert.equal(e.mem[si + 2560], 0);
    assert.equal(e.mem[si], 1, 'upcall pending on vCPU 0');
    put(e, ARG, [[0, 'u32', 64]]);
    assert.equal(call(e, HC.event_channel_op, [9, ARG]), -EINVAL);
    // close q: p reverts to unbound for us
    put(e, ARG, [[0, 'u32', q]]);
    assert.equal(call(e, HC.event_channel_op, [3, ARG]), 0);
    assert.equal(call(e, HC.event_channel_op, [3, ARG]), -EINVAL);
    assert.equal(status(p), 0);
    assert.deepEqual([u32(e, ARG + 8), u16(e, ARG + 16)], [1, e.d.domid]);
    put(e, ARG, [[0, 'u32', 0]]);
    assert.equal(call(e, HC.event_channel_op, [3, ARG]), -EINVAL);
    assert.equal(call(e, HC.event_channel_op, [4, ARG]), -EINVAL);
  });

  test('toward another domain (the control domain end of a ring)', () => {
    const ctl = mkEnv();
    const e = mkEnv({ others: [ctl.d.domid] });
    put(ctl, ARG, [[0, 'u16', DOMID_SELF], [2, 'u16', e.d.domid]], 8);
    assert.equal(call(ctl, HC.event_channel_op, [6, ARG]), 0);
    const cp = u32(ctl, ARG + 4);
    put(e, ARG, [[0, 'u16', ctl.d.domid], [4, 'u32', cp]], 12);
    upcalls.length = 0;
    assert.equal(call(e, HC.event_channel_op, [0, ARG]), 0);
    const lp = u32(e, ARG + 8);
    assert.deepEqual(upcalls, [[e.d.domid, 0]], 'the new local port is pending');
    put(e, ARG, [[0, 'u32', lp]]);
    upcalls.length = 0;
    assert.equal(call(e, HC.event_channel_op, [4, ARG]), 0);
    assert.deepEqual(upcalls, [[ctl.d.domid, 0]]);
    // the caller may not look at or allocate in another domain's table
    put(e, ARG, [[0, 'u16', ctl.d.domid], [4, 'u32', cp]], 24);
    assert.equal(call(e, HC.event_channel_op, [5, ARG]), -EPERM);
    put(e, ARG, [[0, 'u16', ctl.d.domid], [2, 'u16', DOMID_SELF]], 8);
    assert.equal(call(e, HC.event_channel_op, [6, ARG]), -EPERM);
    put(e, ARG, [[0, 'u16', 0x7000]], 24);
    assert.equal(call(e, HC.event_channel_op, [5, ARG]), -ESRCH);
    put(e, ARG, [[0, 'u16', 0x7000], [4, 'u32', 1]], 12);
    assert.equal(call(e, HC.event_channel_op, [0, ARG]), -ESRCH);
    put(e, ARG, [[0, 'u16', 0x7000]], 2);
    assert.equal(call(e, HC.event_channel_op, [10, ARG]), -ESRCH);
  });

  test('bind_virq, bind_ipi, bind_vcpu, reset', () => {
    const e = mkEnv();
    const bindVirq = (virq: number, vcpu: number) => {
      put(e, ARG, [[0, 'u32', virq], [4, 'u32', vcpu]], 12);
      return call(e, HC.event_channel_op, [1, ARG]);
    };
    assert.equal(bindVirq(0, 1), 0);
    const t = u32(e, ARG + 8);
    assert.equal(bindVirq(0, 1), -EEXIST);
    assert.equal(bindVirq(0, 2), -ENOENT);
    assert.equal(bindVirq(2, 1), -EINVAL);
    assert.equal(bindVirq(24, 0), -EINVAL);
    assert.equal(bindVirq(2, 0), 0);
    const c = u32(e, ARG + 8);
    put(e, ARG, [[0, 'u16', DOMID_SELF], [4, 'u32', t]], 24);
    assert.equal(call(e, HC.event_channel_op, [5, ARG]), 0);
    assert.deepEqual([u32(e, ARG + 8), u32(e, ARG + 12), u32(e, ARG + 16)], [4, 1, 0], 'virq status: VIRQ_TIMER on vCPU 1');
    put(e, ARG, [[0, 'u32', 1]], 8);
    assert.equal(call(e, HC.event_channel_op, [7, ARG]), 0);
    const ipi = u32(e, ARG + 4);
    put(e, ARG, [[0, 'u32', 2]], 8);
    assert.equal(call(e, HC.event_channel_op, [7, ARG]), -ENOENT);
    const bindVcpu = (port: number, vcpu: number) => {
      put(e, ARG, [[0, 'u32', port], [4, 'u32', vcpu]], 8);
      return call(e, HC.event_channel_op, [8, ARG]);
    };
    assert.equal(bindVcpu(c, 1), 0);
    assert.equal(portInfo(e.d.shared, c).vcpu, 1);
    assert.equal(bindVcpu(ipi, 0), -EINVAL);
    assert.equal(bindVcpu(t, 0), -EINVAL);
    assert.equal(bindVcpu(c, 2), -ENOENT);
    assert.equal(bindVcpu(50, 0), -EINVAL);
    put(e, ARG, [[0, 'u32', t]]);
    assert.equal(call(e, HC.event_channel_op, [4, ARG]), -EINVAL, 'no send on a VIRQ');
    put(e, ARG, [[0, 'u16', DOMID_SELF]], 2);
    assert.equal(call(e, HC.event_channel_op, [10, ARG]), 0);
    for (const p of [t, c, ipi]) assert.equal(portInfo(e.d.shared, p).state, ECS.closed);
    assert.equal(bindVirq(0, 1), 0, 'VIRQ bindings were forgotten');
  });

  test('bind_pirq, unknown ops, faults', () => {
    const e = mkEnv();
    assert.equal(call(e, HC.event_channel_op, [2, ARG]), -EINVAL);
    for (const c of [15, 99]) assert.equal(call(e, HC.event_channel_op, [c, ARG]), -ENOSYS, `cmd ${c}`);
    for (const c of [0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]) assert.equal(call(e, HC.event_channel_op, [c, HOLE]), -EFAULT, `cmd ${c}`);
  });

  test('FIFO: init_control, expand_array and set_priority decode and answer as Xen', () => {
    const e = mkEnv();
    const initControl = (gfn: bigint, offset: number, vcpu: number) => {
      put(e, ARG, [[0, 'u64', gfn], [8, 'u32', offset], [12, 'u32', vcpu], [16, 'u8', 0xee]], 24);
      return call(e, HC.event_channel_op, [11, ARG]);
    };
    const expand = (gfn: bigint) => { put(e, ARG, [[0, 'u64', gfn]], 8); return call(e, HC.event_channel_op, [12, ARG]); };
    const setPrio = (port: number, prio: number) => { put(e, ARG, [[0, 'u32', port], [4, 'u32', prio]], 8); return call(e, HC.event_channel_op, [13, ARG]); };
    // Still 2-level: no array to expand, no priorities.
    assert.equal(expand(0x30n), -EOPNOTSUPP);
    assert.equal(setPrio(1, 3), -ENOSYS);
    // Bad control blocks change nothing.
    assert.equal(initControl(BigInt(HOLE / PAGE), 0, 0), -EINVAL, 'a GFN that is a hole');
    assert.equal(initControl(1n << 60n, 0, 0), -EINVAL, 'a GFN beyond any address');
    assert.equal(initControl(0x20n, 4096 - 64, 0), -EINVAL, 'crosses the page');
    assert.equal(initControl(0x20n, 4, 0), -EINVAL, 'not 8-aligned');
    assert.equal(initControl(0x20n, 0, 2), -ENOENT, 'no such vCPU');
    assert.equal(u8(e, ARG + 16), 0xee, 'link_bits is written only on success');
    assert.equal(e.d.shared.get('evtchnFifo'), 0);
    // The real one: FIFO from now on, LINK_BITS reported.
    assert.equal(initControl(0x20n, 4096 - 72, 0), 0);
    assert.equal(u8(e, ARG + 16), 17);
    assert.equal(e.d.shared.get('evtchnFifo'), 1);
    assert.equal(initControl(0x21n, 0, 0), -EINVAL, 'vCPU 0 has its control block');
    assert.equal(initControl(0x21n, 8, 1), 0, 'vCPU 1 gets its own');
    assert.equal(expand(BigInt(HOLE / PAGE)), -EINVAL);
    assert.equal(expand(0x30n), 0);
    assert.equal(setPrio(1, 16), -EINVAL, 'priorities are 0..15');
    assert.equal(setPrio(64, 3), -EINVAL, 'port out of range');
    assert.equal(setPrio(1, 3), 0);
    // reset goes back to 2-level.
    put(e, ARG, [[0, 'u16', DOMID_SELF]], 2);
    assert.equal(call(e, HC.event_channel_op, [10, ARG]), 0);
    assert.equal(e.d.shared.get('evtchnFifo'), 0);
    assert.equal(expand(0x30n), -EOPNOTSUPP);
  });
});

// --- sched_op and set_timer_op -------------------------------------------

describe('sched_op', () => {
  test('yield and block', () => {
    const e = mkEnv();
    assert.equal(call(e, HC.sched_op, [0, 0]), 0);
    assert.ok(e.desched && e.v[0]!.yielded && !e.v[0]!.blocked);
    const vi = e.d.vcpuInfoOffset(0);
    e.mem[vi + 1] = 1; // upcall mask set
    assert.equal(call(e, HC.sched_op, [1, 0]), 0);
    assert.ok(e.desched && e.v[0]!.blocked);
    assert.equal(e.mem[vi + 1], 0, 'block re-enables event delivery');
    e.v[0]!.blocked = false;
    e.mem[vi] = 1; // an event is pending, but with no callback it cannot be delivered: sleep (Xen's local_events_need_delivery)
    assert.equal(call(e, HC.sched_op, [1, 0]), 0);
    assert.ok(e.desched && e.v[0]!.blocked);
    e.v[0]!.blocked = false;
    e.d.shared.set('callbackVector', 0xf3); // deliverable: do not sleep
    assert.equal(call(e, HC.sched_op, [1, 0]), 0);
    assert.ok(e.desched && !e.v[0]!.blocked);
  });

  test('shutdown (every reason) and shutdown_code (first wins)', () => {
    const e = mkEnv();
    for (const reason of [0, 1, 2, 3, 4, 5]) {
      put(e, ARG, [[0, 'u32', reason]]);
      assert.equal(call(e, HC.sched_op, [2, ARG]), 0);
      assert.ok(e.desched);
      assert.deepEqual(shutdowns.at(-1), [e.d.domid, reason]);
    }
    assert.equal(call(e, HC.sched_op, [2, HOLE]), -EFAULT);
    put(e, ARG, [[0, 'u32', 1]]);
    assert.equal(call(e, HC.sched_op, [5, ARG]), 0);
    put(e, ARG, [[0, 'u32', 3]]);
    assert.equal(call(e, HC.sched_op, [5, ARG]), 0);
    assert.equal(e.d.shared.get('shutdownCode'), 1);
    assert.equal(call(e, HC.sched_op, [5, HOLE]), -EFAULT);
  });

  for (const abi of ABIS) {
    test(`${abi}: poll`, () => {
      const e = mkEnv({ abi });
      const poll = (ports: number, nr: number, timeout: bigint) => (abi === 'x64'
        ? put(e, ARG, [[0, 'u64', ports], [8, 'u32', nr], [16, 'u64', timeout]], 24)
        : put(e, ARG, [[0, 'u32', ports], [4, 'u32', nr], [8, 'u64', timeout]], 16));
      const si = e.d.physmap.sharedInfoPage * PAGE;
      put(e, BUF, [[0, 'u32', 3], [4, 'u32', 5]]);
      poll(BUF, 2, 0n);
      assert.equal(call(e, HC.sched_op, [3, ARG]), -EINVAL, 'ports not in use');
      for (let i = 0; i < 5; i++) allocUnbound(e.d.evtchn, 0); // ports 1..5 in use
      poll(BUF, 129, 0n);
      assert.equal(call(e, HC.sched_op, [3, ARG]), -EINVAL);
      put(e, BUF + 8, [[0, 'u32', 0]]);
      poll(BUF, 3, 0n);
      assert.equal(call(e, HC.sched_op, [3, ARG]), -EINVAL, 'port 0');
      put(e, BUF + 8, [[0, 'u32', 64]]);
      assert.equal(call(e, HC.sched_op, [3, ARG]), -EINVAL, 'port beyond the table');
      poll(HOLE, 2, 0n);
      assert.equal(call(e, HC.sched_op, [3, ARG]), -EFAULT);
      // port 5 pending: returns at once
      e.mem[si + 2048] = 1 << 5;
      poll(BUF, 2, 0n);
      assert.equal(call(e, HC.sched_op, [3, ARG]), 0);
      assert.ok(!e.v[0]!.blocked && !e.desched);
      // a timeout already past: returns at once
      e.mem[si + 2048] = 0;
      poll(BUF, 2, 1n);
      assert.equal(call(e, HC.sched_op, [3, ARG]), 0);
      assert.ok(!e.v[0]!.blocked);
      // otherwise the vCPU blocks polling those ports
      const before = timerChanges.length;
      const deadline = e.d.now() + 1_000_000_000n;
      poll(BUF, 2, deadline);
      assert.equal(call(e, HC.sched_op, [3, ARG]), 0);
      assert.ok(e.v[0]!.blocked && e.desched);
      assert.deepEqual(e.v[0]!.pollPorts, [3, 5]);
      assert.equal(e.v[0]!.pollTimeout, deadline);
      assert.equal(e.d.shared.vcpu(0, 'pollMask'), 1);
      assert.deepEqual(timerChanges.slice(before), [e.v[0]!.key]);
    });
  }

  test('remote_shutdown, watchdog, pin_override, unknown', () => {
    const e = mkEnv({ others: [2] });
    put(e, ARG, [[0, 'u16', 9], [4, 'u32', 0]], 8);
    assert.equal(call(e, HC.sched_op, [4, ARG]), -ESRCH);
    put(e, ARG, [[0, 'u16', 2], [4, 'u32', 0]], 8);
    assert.equal(call(e, HC.sched_op, [4, ARG]), -EPERM);
    put(e, ARG, [[0, 'u16', e.d.domid], [4, 'u32', 0]], 8);
    assert.equal(call(e, HC.sched_op, [4, ARG]), -EPERM, 'even on itself for a domU');
    const priv = mkEnv({ privileged: true, others: [2] });
    put(priv, ARG, [[0, 'u16', 2], [4, 'u32', 0]], 8);
    assert.equal(call(priv, HC.sched_op, [4, ARG]), -ENOSYS);
    const wd = (id: number, timeout: number) => { put(e, ARG, [[0, 'u32', id], [4, 'u32', timeout]]); return call(e, HC.sched_op, [6, ARG]); };
    const t0 = e.d.now();
    assert.equal(wd(0, 10), 1);
    assert.equal(wd(0, 10), 2);
    assert.equal(wd(0, 10), -ENOSPC);
    const exp = e.d.watchdogs.get(1)!;
    assert.ok(exp >= t0 + 10_000_000_000n && exp <= e.d.now() + 10_000_000_000n);
    assert.equal(wd(1, 0), 0);
    assert.ok(!e.d.watchdogs.has(1));
    assert.equal(wd(1, 5), -EINVAL, 'a deleted watchdog cannot be re-armed');
    assert.equal(wd(2, 30), 0);
    assert.ok(e.d.watchdogs.get(2)! >= t0 + 30_000_000_000n);
    assert.equal(wd(3, 5), -EINVAL);
    assert.equal(wd(0, 1), 1, 'a free slot is reused');
    assert.equal(call(e, HC.sched_op, [6, HOLE]), -EFAULT);
    assert.equal(call(e, HC.sched_op, [7, ARG]), -EPERM);
    for (const c of [8, 100, -1]) assert.equal(call(e, HC.sched_op, [c, ARG]), -ENOSYS, `cmd ${c}`);
  });

  for (const abi of ABIS) {
    test(`${abi}: set_timer_op takes a u64 absolute time (split over two registers on 32-bit)`, () => {
      const e = mkEnv({ abi });
      const t = 0x1_2345_6789n;
      const args = abi === 'x64' ? [t] : [t & 0xffffffffn, t >> 32n];
      const before = timerChanges.length;
      assert.equal(call(e, HC.set_timer_op, args), 0);
      assert.equal(e.v[0]!.timer.singleshot, t);
      assert.deepEqual(timerChanges.slice(before), [e.v[0]!.key]);
      assert.equal(call(e, HC.set_timer_op, abi === 'x64' ? [0] : [0, 0]), 0);
      assert.equal(e.v[0]!.timer.singleshot, 0n, '0 cancels');
      // Xen's Linux workaround: wrapped negative, or more than 2^50 ns ahead, fires in 100 ms.
      for (const far of [e.d.now() + (1n << 50n) + 1_000_000_000n, 1n << 63n]) {
        const now = e.d.now();
        assert.equal(call(e, HC.set_timer_op, abi === 'x64' ? [far] : [far & 0xffffffffn, far >> 32n]), 0);
        const s = e.v[0]!.timer.singleshot;
        assert.ok(s >= now + 100_000_000n && s < now + 200_000_000n, `deadline ${far} -> ${s - now} ns from now`);
      }
    });
  }
});

// --- vcpu_op -------------------------------------------------------------

describe('vcpu_op', () => {
  test('is_up, unknown vCPUs, not-offered ops', () => {
    const e = mkEnv();
    assert.equal(call(e, HC.vcpu_op, [3, 0, 0]), 1);
    assert.equal(call(e, HC.vcpu_op, [3, 1, 0]), 0);
    assert.equal(call(e, HC.vcpu_op, [3, 2, 0]), -ENOENT);
    assert.equal(call(e, HC.vcpu_op, [3, -1, 0]), -ENOENT);
    assert.equal(call(e, HC.vcpu_op, [12, 0, ARG]), -EINVAL);
    for (const c of [11, 14, 15, 99]) assert.equal(call(e, HC.vcpu_op, [c, 0, ARG]), -ENOSYS, `cmd ${c}`);
  });

  /** Writes a vcpu_hvm_context at ARG: mode, then the 64-bit or 32-bit register block at +8. */
  function hvmContext(e: Env, mode: number, regs: Record<string, number | bigint>): void {
    e.mem.fill(0, ARG, ARG + 128);
    e.dv.setUint32(ARG, mode, true);
    const S = mode === 1 ? VcpuHvmX86_64 : VcpuHvmX86_32;
    e.mem.set(S.encode(regs as never), ARG + 8);
  }
  const LONG = { rip: 0x101000n, rsp: 0x8000n, rdi: 7n, cr0: 0x80000011n, cr3: 0x1000n, cr4: 0x20n, efer: 0x100n };

  test('initialise (64-bit mode) loads the state once; up makes the vCPU run; down takes it off', () => {
    const e = mkEnv({ vcpus: 3 });
    assert.equal(call(e, HC.vcpu_op, [1, 1, 0]), -EINVAL, 'up before initialise');
    hvmContext(e, 1, LONG);
    assert.equal(call(e, HC.vcpu_op, [0, 1, ARG]), 0);
    const st = e.hw[1]!.initial!;
    assert.equal(st.regs.rip, 0x101000n);
    assert.equal(st.regs.rsp, 0x8000n);
    assert.equal(st.regs.rdi, 7n);
    assert.equal(st.regs.rflags, 2n, 'reserved EFLAGS bit set');
    assert.equal(st.cr3, 0x1000);
    assert.equal(st.efer, 0x500, 'LMA follows LME with paging on');
    assert.equal(st.segs.cs!.l, 1, '64-bit code segment');
    assert.equal(st.segs.tr!.type, 0xb, 'busy TSS');
    assert.equal(call(e, HC.vcpu_op, [0, 1, ARG]), -EEXIST, 'initialised once');
    assert.equal(call(e, HC.vcpu_op, [3, 1, 0]), 0, 'still down');
    assert.equal(call(e, HC.vcpu_op, [1, 1, 0]), 0);
    assert.equal(call(e, HC.vcpu_op, [3, 1, 0]), 1);
    assert.equal(call(e, HC.vcpu_op, [1, 1, 0]), 0, 'up again is a no-op');
    assert.equal(call(e, HC.vcpu_op, [2, 1, 0]), 0);
    assert.equal(call(e, HC.vcpu_op, [3, 1, 0]), 0);
    assert.equal(call(e, HC.vcpu_op, [0, 5, ARG]), -ENOENT);
  });

  test('down of the last vCPU that is up powers the domain off', () => {
    const e = mkEnv({ vcpus: 2 });
    const before = shutdowns.length;
    assert.equal(call(e, HC.vcpu_op, [2, 0, 0]), 0);
    assert.deepEqual(shutdowns.slice(before), [[e.d.domid, 0]]);
  });

  test('initialise refuses impossible states with -EINVAL and changes nothing', () => {
    const e = mkEnv({ vcpus: 2 });
    hvmContext(e, 7, {});
    assert.equal(call(e, HC.vcpu_op, [0, 1, ARG]), -EINVAL, 'unknown mode');
    hvmContext(e, 1, { ...LONG, cr0: 0x11n });
    assert.equal(call(e, HC.vcpu_op, [0, 1, ARG]), -EINVAL, '64-bit mode without paging');
    hvmContext(e, 1, { ...LONG, cr4: 0 });
    assert.equal(call(e, HC.vcpu_op, [0, 1, ARG]), -EINVAL, 'long mode without PAE');
    hvmContext(e, 1, { ...LONG, rip: 0x0000_8000_0000_0000n });
    assert.equal(call(e, HC.vcpu_op, [0, 1, ARG]), -EINVAL, 'non-canonical RIP');
    hvmContext(e, 1, { ...LONG, cr4: 0x20n | (1n << 40n) });
    assert.equal(call(e, HC.vcpu_op, [0, 1, ARG]), -EINVAL, 'reserved CR4 bits');
    const flat32 = { eip: 0x2000, cr0: 0x11, cs_limit: 0xfffff, cs_ar: 0xc9b, ds_limit: 0xfffff, ds_ar: 0xc93, ss_limit: 0xfffff, ss_ar: 0xc93, es_limit: 0xfffff, es_ar: 0xc93, tr_limit: 0x67, tr_ar: 0x8b };
    hvmContext(e, 0, { ...flat32, cs_ar: 0xc93 });
    assert.equal(call(e, HC.vcpu_op, [0, 1, ARG]), -EINVAL, 'CS must be code');
    hvmContext(e, 0, { ...flat32, cs_limit: 0x1, cs_ar: 0x49b });
    assert.equal(call(e, HC.vcpu_op, [0, 1, ARG]), -EINVAL, 'EIP beyond the CS limit');
    hvmContext(e, 0, { ...flat32, tr_ar: 0 });
    assert.equal(call(e, HC.vcpu_op, [0, 1, ARG]), -EINVAL, 'no TSS');
    assert.equal(e.hw[1]!.initial, null, 'nothing loaded');
    assert.equal(call(e, HC.vcpu_op, [0, 1, HOLE]), -EFAULT);
    hvmContext(e, 0, flat32);
    assert.equal(call(e, HC.vcpu_op, [0, 1, ARG]), 0, 'flat 32-bit protected mode');
    const st = e.hw[1]!.initial!;
    assert.equal(st.regs.rip, 0x2000n);
    assert.equal(st.segs.cs!.l, 0);
    assert.equal(st.efer, 0);
  });

  for (const abi of ABIS) {
    test(`${abi}: runstate info (48 bytes, 44 packed on 32-bit)`, () => {
      const e = mkEnv({ abi });
      const v = e.v[1]!;
      v.runstateState = 2;
      v.runstateEntry = 1000n;
      v.runstateTime = [10n, 20n, 30n, 40n];
      e.mem.fill(0xcc, BUF, BUF + 64);
      assert.equal(call(e, HC.vcpu_op, [4, 1, BUF]), 0);
      const size = abi === 'x64' ? 48 : 44;
      const o = abi === 'x64' ? 8 : 4;
      assert.equal(u32(e, BUF), 2);
      assert.equal(u64(e, BUF + o), 1000n);
      assert.deepEqual([u64(e, BUF + o + 8), u64(e, BUF + o + 16)], [10n, 20n]);
      assert.ok(u64(e, BUF + o + 24) > 30n, 'time in the current state accrues');
      assert.equal(u64(e, BUF + o + 32), 40n);
      assert.equal(e.mem[BUF + size], 0xcc);
      assert.equal(call(e, HC.vcpu_op, [4, 1, HOLE]), -EFAULT);
      // register_runstate_memory_area: the area is written at once for the calling vCPU
      if (abi === 'x64') put(e, ARG, [[0, 'u64', BUF + 0x100]]);
      else put(e, ARG, [[0, 'u32', BUF + 0x100]]);
      assert.equal(call(e, HC.vcpu_op, [5, 0, ARG]), 0);
      assert.equal(e.v[0]!.runstateArea, BigInt(BUF + 0x100));
      assert.equal(u32(e, BUF + 0x100), e.v[0]!.runstateState);
      assert.equal(call(e, HC.vcpu_op, [5, 0, HOLE]), -EFAULT);
      // vCPU 0 registers vCPU 1's area: kept in the shared record, for the worker that runs vCPU 1
      if (abi === 'x64') put(e, ARG, [[0, 'u64', 0xffff_8880_0000_1000n]]);
      else put(e, ARG, [[0, 'u32', 0xc000_1000]]);
      assert.equal(call(e, HC.vcpu_op, [5, 1, ARG]), 0);
      assert.equal(e.d.shared.runstateArea(1), abi === 'x64' ? 0xffff_8880_0000_1000n : 0xc000_1000n);
      assert.equal(e.d.shared.runstateArea(0), BigInt(BUF + 0x100));
    });

    test(`${abi}: register_vcpu_info moves vcpu_info and marks everything pending`, () => {
      const e = mkEnv({ abi });
      const legacy = e.d.vcpuInfoOffset(0);
      e.mem[legacy + 1] = 1; // upcall mask travels with the structure
      e.mem[legacy + 40] = 0x5a; // part of vcpu_time_info
      const reg = (mfn: number | bigint, offset: number, vcpu = 0) => {
        put(e, ARG, [[0, 'u64', mfn], [8, 'u32', offset], [12, 'u32', 0]], 16);
        return call(e, HC.vcpu_op, [10, vcpu, ARG]);
      };
      assert.equal(reg(0x40, 4096 - 63), -EINVAL, 'must not cross the page');
      assert.equal(reg(0x123456, 0), -EINVAL, 'a hole');
      assert.equal(reg(0xfeff8, 0), -EINVAL, 'a special page is not guest RAM');
      assert.equal(reg(0x40, 4096 - 64), 0);
      const off = 0x40 * PAGE + 4096 - 64;
      assert.equal(e.d.shared.vcpu(0, 'vcpuInfoOffset'), off);
      assert.equal(e.d.vcpuInfoOffset(0), off);
      assert.equal(e.mem[off], 1, 'evtchn_upcall_pending');
      assert.equal(e.mem[off + 1], 1);
      assert.equal(e.mem[off + 40], 0x5a);
      const sel = abi === 'x64' ? [8, 8] : [4, 4];
      assert.deepEqual([...e.mem.subarray(off + sel[0]!, off + sel[0]! + sel[1]!)], new Array(sel[1]).fill(0xff), 'all selector bits');
      assert.equal(reg(0x41, 0), -EBUSY, 'once only');
      assert.equal(reg(0x41, 0, 2), -ENOENT);
      // up as the scheduler hook brings it up (the shared state is what every worker sees)
      e.v[1]!.online = true;
      e.d.shared.setVcpu(1, 'state', RUNSTATE.runnable);
      assert.equal(reg(0x41, 0, 1), -EINVAL, 'another online vCPU');
      e.v[1]!.online = false;
      e.d.shared.setVcpu(1, 'state', RUNSTATE.offline);
      assert.equal(reg(0x41, 64, 1), 0, 'an offline one is fine');
      assert.equal(e.d.vcpuInfoOffset(1), 0x41 * PAGE + 64);
      assert.equal(call(e, HC.vcpu_op, [10, 0, HOLE]), -EFAULT);
    });

    test(`${abi}: periodic and single-shot timers`, () => {
      const e = mkEnv({ abi });
      put(e, ARG, [[0, 'u64', 999_999n]]);
      assert.equal(call(e, HC.vcpu_op, [6, 0, ARG]), -EINVAL, 'under 1 ms');
      put(e, ARG, [[0, 'u64', 1n << 62n]]);
      assert.equal(call(e, HC.vcpu_op, [6, 0, ARG]), -EINVAL, 'beyond STIME_DELTA_MAX');
      put(e, ARG, [[0, 'u64', (1n << 62n) - 1n]]);
      assert.equal(call(e, HC.vcpu_op, [6, 0, ARG]), 0);
      put(e, ARG, [[0, 'u64', 10_000_000n]]);
      assert.equal(call(e, HC.vcpu_op, [6, 1, ARG]), 0);
      assert.equal(e.v[1]!.timer.period, 10_000_000n);
      assert.ok(e.v[1]!.timer.periodicNext <= e.d.now(), 'the first tick is due at once');
      assert.equal(call(e, HC.vcpu_op, [7, 1, 0]), 0);
      assert.equal(e.v[1]!.timer.period, 0n);
      // single-shot: 16 bytes [12 on 32-bit]; place it so the 32-bit form ends at the end of RAM
      const at = RAM_PAGES * PAGE - (abi === 'x64' ? 16 : 12);
      put(e, at, [[0, 'u64', 0x5555_0000n], [8, 'u32', 1]]);
      const changes = timerChanges.length;
      assert.equal(call(e, HC.vcpu_op, [8, 0, at]), 0);
      assert.equal(e.v[0]!.timer.singleshot, 0x5555_0000n);
      assert.deepEqual(timerChanges.slice(changes), [e.v[0]!.key], 'the pCPU is told to re-arm its timer');
      assert.equal(call(e, HC.vcpu_op, [8, 1, at]), -EINVAL, 'only the calling vCPU');
      assert.equal(call(e, HC.vcpu_op, [9, 1, 0]), -EINVAL);
      assert.equal(call(e, HC.vcpu_op, [9, 0, 0]), 0);
      assert.equal(e.v[0]!.timer.singleshot, 0n);
      assert.equal(call(e, HC.vcpu_op, [8, 0, HOLE]), -EFAULT);
      assert.equal(call(e, HC.vcpu_op, [6, 0, HOLE]), -EFAULT);
    });
  }
});

// --- vm_assist -----------------------------------------------------------

describe('vm_assist', () => {
  test('only runstate_update_flag, enable and disable', () => {
    const e = mkEnv();
    assert.equal(call(e, HC.vm_assist, [0, 5]), 0);
    assert.equal(e.d.vmAssist, 1 << 5);
    assert.equal(call(e, HC.vm_assist, [1, 5]), 0);
    assert.equal(e.d.vmAssist, 0);
    for (const type of [0, 1, 2, 3, 4, 6, 31, 32, 64]) assert.equal(call(e, HC.vm_assist, [0, type]), -EINVAL, `type ${type}`);
    assert.equal(call(e, HC.vm_assist, [2, 5]), -EINVAL);
    assert.equal(e.d.vmAssist, 0);
  });
});

for (const abi of ['x64', 'x32'] as const) {
  test(`${abi}: a long memory_op continues itself (RIP back to the stub, EAX = nr, start extent in cmd)`, () => {
    const e = mkEnv({ abi });
    const n = 1200;
    pfnList(e, BUF, new Array<number>(n).fill(0x10)); // already populated: each extent is done at once
    reservation(e, { list: BUF, nr: n });
    const STUB = 0x100000n + 32n * BigInt(HC.memory_op);
    const RIP = STUB + 7n; // after `mov $nr,%eax; out %eax,$0x88`
    let calls = 0;
    let cmd = 6;
    for (;;) {
      e.hw[0]!.rip = RIP;
      const r = call(e, HC.memory_op, [cmd, ARG]);
      calls++;
      if (e.hw[0]!.rip === RIP) { assert.equal(r, n, 'the last round returns every extent done'); break; }
      assert.equal(e.hw[0]!.rip, STUB, 'restarts the stub');
      assert.equal(r, HC.memory_op, 'EAX holds the hypercall number again');
      const argReg = abi === 'x64' ? 5 /* rdi */ : 1 /* rbx */;
      cmd = Number(e.hw[0]!.regs[argReg]! & 0xffffffffn);
      assert.equal(cmd & 0x3f, 6);
      assert.equal(cmd >>> 6, calls * 512, 'the start extent advanced by one batch');
    }
    assert.equal(calls, 3);
  });
}

// --- pvclock --------------------------------------------------------------

describe('pvclock (vcpu_time_info)', () => {
  /** The guest's view: system_time + scale(tsc - tsc_timestamp), as Linux's pvclock_clocksource_read does. */
  function guestTime(e: Env, vcpu: number, tsc: bigint): bigint {
    const t = e.d.vcpuInfoOffset(vcpu) + VcpuInfo.x64.offsetOf('time');
    const f = (k: string) => BigInt(VcpuTimeInfo.get(e.dv, t, k as never) as number | bigint);
    assert.equal(Number(f('version')) & 1, 0, 'the record is not left mid-update');
    assert.ok(tsc >= f('tsc_timestamp'), `the record (vCPU ${vcpu}) is stamped at or before the TSC it is read at: ${f('tsc_timestamp')} > ${tsc}`);
    return f('system_time') + scaleDelta(tsc - f('tsc_timestamp'), e.d.scale);
  }

  for (const khz of [2_000_000, 2_899_998]) {
    test(`every record continues the line of the last, on every vCPU, at ${khz} kHz (time does not step back)`, () => {
      const e = mkEnv({ vcpus: 2 });
      const scale = tscScale(khz);
      Object.assign(e.d, { tscKhz: khz, scale });
      // a TSC that follows the host clock, as the software CPU's does; the host clock is read a little after
      // the TSC, by a gap that varies from call to call
      const tscNow = () => (e.d.now() * BigInt(khz)) / 1_000_000n + 12_345n;
      e.d.updatePvclock(e.v[0]!, tscNow);
      for (let i = 0; i < 50; i++) {
        // the guest reads at a TSC a little after the records are made, through the old records and the new
        const at = tscNow() + BigInt(khz) * 1000n; // 1 s on: later than any record made below
        const before = [guestTime(e, 0, at), guestTime(e, 1, at)];
        e.d.updatePvclock(e.v[0]!, tscNow);
        e.d.updatePvclock(e.v[1]!, () => tscNow() - BigInt(i)); // vCPU 1's TSC a little behind
        const after = [guestTime(e, 0, at), guestTime(e, 1, at)];
        // what the guest reads moves by its own rounding at most (2 ns), as on one line
        if (i > 0) for (const v of [0, 1]) assert.ok(after[v]! - before[v]! <= 2n && before[v]! - after[v]! <= 2n, `vCPU ${v}: ${before[v]} -> ${after[v]}`);
        const skew = after[1]! - after[0]!;
        assert.ok(skew <= 2n && skew >= -2n, 'both vCPUs read one clock');
        // the anchor was read within a bracket of the host clock: guest time is the host's, give or take that
        const g = guestTime(e, 0, tscNow());
        const behind = e.d.now() - g;
        assert.ok(behind > -5_000_000n && behind < 5_000_000n, `guest time follows the host's (behind by ${behind} ns)`);
      }
    });
  }

  test('a TSC that lags the host clock (as KVM\'s can): records step forward only, never behind the hypervisor\'s time', () => {
    const e = mkEnv();
    const start = e.d.now();
    const slowTsc = () => ((e.d.now() - start) * 9n) / 5n + 1000n; // 1.8 GHz of ticks on a 2 GHz scale
    let last = 0n;
    for (let i = 0; i < 50; i++) {
      const before = e.d.now();
      e.d.updatePvclock(e.v[0]!, slowTsc);
      const t = e.d.vcpuInfoOffset(0) + VcpuInfo.x64.offsetOf('time');
      const g = guestTime(e, 0, BigInt(VcpuTimeInfo.get(e.dv, t, 'tsc_timestamp') as bigint));
      assert.ok(g >= before, `guest time ${g} at the record is not behind the hypervisor's ${before} (a timer is never early)`);
      assert.ok(g >= last, 'never back');
      last = g;
    }
    assert.equal(VcpuTimeInfo.get(e.dv, e.d.vcpuInfoOffset(0) + VcpuInfo.x64.offsetOf('time'), 'flags'), 0, 'not one clock across vCPUs: no TSC_STABLE');
  });

  test('the software CPU\'s TSC (a function of the host clock) gets XEN_PVCLOCK_TSC_STABLE_BIT', () => {
    const e = mkEnv();
    Object.assign(e.d, { tscExact: true });
    e.d.updatePvclock(e.v[0]!, () => 2n * e.d.now());
    assert.equal(VcpuTimeInfo.get(e.dv, e.d.vcpuInfoOffset(0) + VcpuInfo.x64.offsetOf('time'), 'flags'), XEN_PVCLOCK_TSC_STABLE_BIT);
  });

  test('register_vcpu_time_memory_area: a second copy, written at once for the caller and at every update; 0 stops it', () => {
    const e = mkEnv({ vcpus: 2 });
    const primary = (v: number) => e.d.vcpuInfoOffset(v) + VcpuInfo.x64.offsetOf('time');
    const same = (area: number, v: number) => Buffer.from(e.mem.subarray(area, area + 32)).equals(Buffer.from(e.mem.subarray(primary(v), primary(v) + 32)));
    const A0 = BUF + 0x200;
    const A1 = BUF + 0x300;
    e.mem.fill(0xcc, A0, A0 + 0x200);
    e.hw[0]!.tsc = 1_000_000n;
    put(e, ARG, [[0, 'u64', A0]]);
    assert.equal(call(e, HC.vcpu_op, [13, 0, ARG]), 0);
    assert.ok(same(A0, 0), 'written at registration');
    assert.equal(e.dv.getUint32(A0, true) & 1, 0, 'left at an even version');
    assert.ok(e.dv.getBigUint64(A0 + 8, true) >= 1_000_000n, 'tsc_timestamp of the update');
    assert.equal(e.mem[A0 + 32], 0xcc, 'exactly one vcpu_time_info');
    e.d.updatePvclock(e.v[0]!, () => 3_000_000n);
    assert.ok(same(A0, 0), 'follows every update');
    assert.equal(e.dv.getBigUint64(A0 + 8, true), 3_000_000n);
    // vCPU 0 registers vCPU 1's: kept for when vCPU 1's record is next updated
    put(e, ARG, [[0, 'u64', A1]]);
    assert.equal(call(e, HC.vcpu_op, [13, 1, ARG]), 0);
    assert.equal(e.mem[A1], 0xcc);
    e.d.updatePvclock(e.v[1]!, () => 4_000_000n);
    assert.ok(same(A1, 1));
    // 0 unregisters; an unmapped area is skipped, as Xen does
    put(e, ARG, [[0, 'u64', 0]]);
    assert.equal(call(e, HC.vcpu_op, [13, 0, ARG]), 0);
    e.d.updatePvclock(e.v[0]!, () => 5_000_000n);
    assert.equal(e.dv.getBigUint64(A0 + 8, true), 3_000_000n);
    put(e, ARG, [[0, 'u64', 0x7fff_0000_0000n]]);
    assert.equal(call(e, HC.vcpu_op, [13, 0, ARG]), 0);
    e.d.updatePvclock(e.v[0]!, () => 6_000_000n);
    assert.equal(call(e, HC.vcpu_op, [13, 0, HOLE]), -EFAULT);
  });

  test('a TSC that jumps (the guest wrote it) re-anchors guest time to the host clock', () => {
    const e = mkEnv();
    e.d.updatePvclock(e.v[0]!, () => 10n ** 15n);
    e.d.updatePvclock(e.v[0]!, () => 5n); // ~6 days back
    const now = e.d.now();
    const g = guestTime(e, 0, 5n);
    assert.ok(g <= now && now - g < 1_000_000_000n, `guest time ${g} follows the host's ${now}`);
  });
});

// --- grant tables between domains ------------------------------------------

describe('grant tables between domains (copy, map, unmap)', () => {
  const ST = { okay: 0, general_error: -1, bad_domain: -2, bad_gntref: -3, bad_handle: -4, no_device_space: -7, permission_denied: -8, bad_page: -9, bad_copy_arg: -10, eagain: -12 };
  const GTF_permit_access = 1;
  const GTF_readonly = 4;
  const GTF_reading = 8;
  const GTF_writing = 16;
  const GTF_sub_page = 1 << 8;
  const GNTMAP_host_map = 2;
  const GNTMAP_readonly = 4;
  const GNTCOPY_source_gref = 1;
  const GNTCOPY_dest_gref = 2;
  const tables = new Map<number, GrantTable>();
  before(() => setGrantHost({ lookup: (id) => tables.get(id) ?? null }));

  /** A granter and a backend that see each other (same HostShared), each with its table reachable by domid. */
  function pair(o: EnvOpts = {}): { a: Env; b: Env } {
    const host = new HostShared();
    const a = mkEnv({ ...o, host });
    const b = mkEnv({ ...o, host });
    tables.set(a.d.domid, a.d.grant);
    tables.set(b.d.domid, b.d.grant);
    return { a, b };
  }
  /** The granter writes a v1 entry as a guest does: domid and frame, then flags. */
  function grantV1(e: Env, ref: number, domid: number, frame: number, flags = GTF_permit_access): void {
    const o = e.d.physmap.grantBase * PAGE + ref * 8;
    e.dv.setUint16(o + 2, domid, true);
    e.dv.setUint32(o + 4, frame, true);
    e.dv.setUint16(o, flags, true);
  }
  const flagsV1 = (e: Env, ref: number) => e.dv.getUint16(e.d.physmap.grantBase * PAGE + ref * 8, true);
  /** Linux's gnttab_end_foreign_access_ref (v1): flags -> 0 only if the hypervisor has no access in progress. */
  function revoke(e: Env, ref: number): boolean {
    const f = flagsV1(e, ref);
    if (f & (GTF_reading | GTF_writing)) return false;
    e.dv.setUint16(e.d.physmap.grantBase * PAGE + ref * 8, 0, true);
    return true;
  }
  interface Copy { src: number | bigint; srcDom: number; srcOff?: number; dst: number | bigint; dstDom: number; dstOff?: number; len: number; flags: number }
  const copySize = (e: Env) => (e.abi === 'x64' ? 40 : 24);
  function putCopies(e: Env, at: number, ops: Copy[]): void {
    ops.forEach((c, i) => {
      const o = at + i * copySize(e);
      if (e.abi === 'x64') put(e, o, [[0, 'u64', c.src], [8, 'u16', c.srcDom], [10, 'u16', c.srcOff ?? 0], [16, 'u64', c.dst], [24, 'u16', c.dstDom], [26, 'u16', c.dstOff ?? 0], [32, 'u16', c.len], [34, 'u16', c.flags], [36, 'i16', 99]], 40);
      else put(e, o, [[0, 'u32', c.src], [4, 'u16', c.srcDom], [6, 'u16', c.srcOff ?? 0], [8, 'u32', c.dst], [12, 'u16', c.dstDom], [14, 'u16', c.dstOff ?? 0], [16, 'u16', c.len], [18, 'u16', c.flags], [20, 'i16', 99]], 24);
    });
  }
  const copyStatus = (e: Env, at: number, i: number) => i16(e, at + i * copySize(e) + (e.abi === 'x64' ? 36 : 20));
  function copy(e: Env, ops: Copy[]): number[] {
    putCopies(e, ARG, ops);
    assert.equal(call(e, HC.grant_table_op, [5, ARG, ops.length]), 0);
    return ops.map((_, i) => copyStatus(e, ARG, i));
  }
  function map(e: Env, ops: { gfn: number; flags?: number; ref: number; dom: number }[]): { status: number; handle: number }[] {
    ops.forEach((m, i) => put(e, ARG + i * 32, [[0, 'u64', m.gfn * PAGE], [8, 'u32', m.flags ?? GNTMAP_host_map], [12, 'u32', m.ref], [16, 'u16', m.dom], [18, 'i16', 99], [20, 'u32', 0xffffffff]], 32));
    assert.equal(call(e, HC.grant_table_op, [0, ARG, ops.length]), 0);
    return ops.map((_, i) => ({ status: i16(e, ARG + i * 32 + 18), handle: u32(e, ARG + i * 32 + 20) }));
  }
  function unmap(e: Env, ops: { gfn: number; handle: number; bus?: number }[]): number[] {
    ops.forEach((m, i) => put(e, ARG + i * 24, [[0, 'u64', m.gfn * PAGE], [8, 'u64', m.bus ?? 0], [16, 'u32', m.handle], [20, 'i16', 99]], 24));
    assert.equal(call(e, HC.grant_table_op, [1, ARG, ops.length]), 0);
    return ops.map((_, i) => i16(e, ARG + i * 24 + 20));
  }

  for (const abi of ABIS) {
    test(`${abi}: copy from and to a grant; the backend reaches only the granted page`, () => {
      const { a, b } = pair({ abi });
      a.mem.fill(0x5a, 0x40 * PAGE, 0x41 * PAGE);
      grantV1(a, 10, b.d.domid, 0x40);
      grantV1(a, 11, b.d.domid, 0x41, GTF_permit_access | GTF_readonly);
      // source gref -> the backend's own frame
      assert.deepEqual(copy(b, [{ src: 10, srcDom: a.d.domid, srcOff: 100, dst: 0x50, dstDom: DOMID_SELF, dstOff: 8, len: 300, flags: GNTCOPY_source_gref }]), [ST.okay]);
      assert.equal(b.mem[0x50 * PAGE + 8], 0x5a);
      assert.equal(b.mem[0x50 * PAGE + 307], 0x5a);
      assert.equal(b.mem[0x50 * PAGE + 308], 0);
      assert.equal(flagsV1(a, 10), GTF_permit_access, 'GTF_reading is only held while copying');
      // the backend's frame -> dest gref, and gref to gref
      b.mem.fill(0x77, 0x51 * PAGE, 0x51 * PAGE + 16);
      assert.deepEqual(copy(b, [
        { src: 0x51, srcDom: DOMID_SELF, dst: 10, dstDom: a.d.domid, dstOff: 4080, len: 16, flags: GNTCOPY_dest_gref },
        { src: 10, srcDom: a.d.domid, dst: 11, dstDom: a.d.domid, len: 16, flags: GNTCOPY_source_gref | GNTCOPY_dest_gref },
        { src: 11, srcDom: a.d.domid, dst: 10, dstDom: a.d.domid, len: 16, flags: GNTCOPY_source_gref | GNTCOPY_dest_gref },
      ]), [ST.okay, ST.general_error, ST.okay], 'a read-only grant cannot be written; the batch goes on');
      assert.equal(a.mem[0x40 * PAGE + 4095], 0x77);
      assert.equal(a.mem[0x41 * PAGE], 0, 'nothing written through the read-only grant');
      assert.deepEqual([flagsV1(a, 10), flagsV1(a, 11)], [GTF_permit_access, GTF_permit_access | GTF_readonly]);
    });

    test(`${abi}: copy errors are Xen's GNTST_ codes, one per operation`, () => {
      const { a, b } = pair({ abi });
      grantV1(a, 10, b.d.domid, 0x40);
      grantV1(a, 12, b.d.domid + 100, 0x40);
      grantV1(a, 13, b.d.domid, 0x2000); // a frame the granter does not have
      grantV1(a, 14, b.d.domid, 0x40, 2); // accept_transfer, not permit_access
      const A = a.d.domid;
      const own = { dst: 0x50, dstDom: DOMID_SELF };
      assert.deepEqual(copy(b, [
        { src: 10, srcDom: 999, ...own, len: 8, flags: GNTCOPY_source_gref },
        { src: 0x40, srcDom: A, ...own, len: 8, flags: 0 },
        { src: 4096, srcDom: A, ...own, len: 8, flags: GNTCOPY_source_gref },
        { src: 12, srcDom: A, ...own, len: 8, flags: GNTCOPY_source_gref },
        { src: 13, srcDom: A, ...own, len: 8, flags: GNTCOPY_source_gref },
        { src: 14, srcDom: A, ...own, len: 8, flags: GNTCOPY_source_gref },
        { src: 10, srcDom: A, srcOff: 4090, ...own, len: 8, flags: GNTCOPY_source_gref },
        { src: 10, srcDom: A, ...own, dstOff: 4095, len: 2, flags: GNTCOPY_source_gref },
        { src: 0x2000, srcDom: DOMID_SELF, ...own, len: 8, flags: 0 },
        { src: 10, srcDom: A, ...own, len: 4096, flags: GNTCOPY_source_gref },
      ]), [ST.bad_domain, ST.permission_denied, ST.bad_gntref, ST.general_error, ST.bad_page, ST.general_error, ST.bad_copy_arg, ST.bad_copy_arg, ST.bad_page, ST.okay]);
      assert.equal(flagsV1(a, 10), GTF_permit_access);
      assert.equal(flagsV1(a, 13), GTF_permit_access, 'a pin that failed leaves no flag behind');
      assert.equal(call(b, HC.grant_table_op, [5, HOLE, 1]), -EFAULT);
      assert.equal(call(b, HC.grant_table_op, [5, ARG, -1]), -EINVAL);
      assert.equal(call(b, HC.grant_table_op, [5 | (1 << 12), ARG, 1]), -EINVAL, 'continuation bits on copy');
    });

    test(`${abi}: a big copy batch continues itself every ${COPY_PREEMPT_EVERY} operations`, () => {
      const { a, b } = pair({ abi });
      grantV1(a, 10, b.d.domid, 0x40);
      a.mem[0x40 * PAGE] = 0x11;
      const n = COPY_PREEMPT_EVERY + 5;
      const ops: Copy[] = Array.from({ length: n }, (_, i) => ({ src: 10, srcDom: a.d.domid, dst: 0x50 + (i % 16), dstDom: DOMID_SELF, dstOff: i, len: 1, flags: GNTCOPY_source_gref }));
      const at = 0x20000;
      putCopies(b, at, ops);
      const hw = b.hw[0]!;
      hw.rip = 0x5000n + 5n;
      assert.equal(call(b, HC.grant_table_op, [5, at, n]), HC.grant_table_op, 'RAX is the hypercall number again');
      const regs = abi === 'x64' ? [REG.rdi, REG.rsi, REG.rdx] : [REG.rbx, REG.rcx, REG.rdx];
      const size = copySize(b);
      assert.deepEqual(regs.map((r) => hw.reg(r) & 0xffffffffn), [5n, BigInt(at + COPY_PREEMPT_EVERY * size), 5n]);
      assert.equal(hw.rip, 0x5000n, 'the stub runs again');
      // the same call made by VMMCALL (Linux's inline hypercalls) goes back over that instruction, not to a stub
      putCopies(b, at, ops);
      hw.rip = 0x5133n; // a stub restart would go to 0x5120, the 32-byte boundary below
      for (const [i, r] of regs.entries()) hw.setReg(r, [5n, BigInt(at), BigInt(n)][i]!);
      b.desched = doHypercall(b.h, HC.grant_table_op, true);
      assert.equal(hw.rip, 0x5130n, 'the VMMCALL runs again');
      assert.equal(hw.reg(REG.rax) & 0xffffffffn, BigInt(HC.grant_table_op));
      assert.equal(copyStatus(b, at, COPY_PREEMPT_EVERY - 1), 0);
      assert.equal(copyStatus(b, at, COPY_PREEMPT_EVERY), 99, 'not yet done');
      b.desched = doHypercall(b.h, HC.grant_table_op);
      for (let i = 0; i < n; i++) assert.equal(copyStatus(b, at, i), 0, `op ${i}`);
    });
  }

  test('v2: sub-page grants bound the copy; the status word carries GTF_reading', () => {
    const { a, b } = pair();
    put(a, ARG, [[0, 'u32', 2]]);
    assert.equal(call(a, HC.grant_table_op, [8, ARG, 1]), 0);
    const o = a.d.physmap.grantBase * PAGE + 10 * 16;
    put(a, 0, []);
    a.dv.setUint16(o + 2, b.d.domid, true);
    a.dv.setUint16(o + 4, 100, true);
    a.dv.setUint16(o + 6, 200, true);
    a.dv.setBigUint64(o + 8, 0x40n, true);
    a.dv.setUint16(o, GTF_permit_access | GTF_sub_page, true);
    a.mem.fill(0x33, 0x40 * PAGE, 0x41 * PAGE);
    assert.deepEqual(copy(b, [
      { src: 10, srcDom: a.d.domid, srcOff: 100, dst: 0x50, dstDom: DOMID_SELF, len: 200, flags: GNTCOPY_source_gref },
      { src: 10, srcDom: a.d.domid, srcOff: 99, dst: 0x50, dstDom: DOMID_SELF, len: 10, flags: GNTCOPY_source_gref },
      { src: 10, srcDom: a.d.domid, srcOff: 250, dst: 0x50, dstDom: DOMID_SELF, len: 51, flags: GNTCOPY_source_gref },
    ]), [ST.okay, ST.general_error, ST.general_error]);
    assert.equal(map(b, [{ gfn: 0x190, ref: 10, dom: a.d.domid }])[0]!.status, ST.general_error, 'a sub-page grant cannot be mapped');
    // a full-page v2 grant mapped: the flags stay, the status word says it is in use
    a.dv.setUint16(o, GTF_permit_access, true);
    const m = map(b, [{ gfn: 0x190, ref: 10, dom: a.d.domid }])[0]!;
    assert.equal(m.status, ST.okay);
    assert.equal(a.d.grant.status(10), GTF_reading | GTF_writing);
    assert.equal(a.dv.getUint16(o, true), GTF_permit_access);
    assert.deepEqual(unmap(b, [{ gfn: 0x190, handle: m.handle }]), [ST.okay]);
    assert.equal(a.d.grant.status(10), 0);
  });

  test('map: the granted frame appears at the GFN; pins, revocation, unmap; every bad input its GNTST_ code', () => {
    const { a, b } = pair();
    const c = mkEnv({ host: undefined });
    tables.set(c.d.domid, c.d.grant);
    const A = a.d.domid;
    grantV1(a, 10, b.d.domid, 0x40);
    grantV1(a, 11, b.d.domid, 0x41, GTF_permit_access | GTF_readonly);
    const hp40 = a.d.physmap.hostPageOf(0x40);
    const [m1, m2] = map(b, [{ gfn: 0x190, ref: 10, dom: A }, { gfn: 0x191, ref: 10, dom: A }]);
    assert.deepEqual([m1!.status, m2!.status], [ST.okay, ST.okay], 'one grant may be mapped twice');
    assert.notEqual(m1!.handle, m2!.handle);
    assert.deepEqual(b.d.physmap.foreignAt(0x190), { domid: A, hostPage: hp40, address: 0x7f00_0000_0000n + BigInt(A) * 0x1_0000_0000n + BigInt(hp40 * PAGE), readonly: false });
    assert.equal(b.d.physmap.hostPageOf(0x190), -1, 'never translated as the backend\'s own memory');
    assert.equal(flagsV1(a, 10), GTF_permit_access | GTF_reading | GTF_writing);
    assert.equal(revoke(a, 10), false, 'the granter cannot take back a grant in use');
    assert.deepEqual(map(b, [
      { gfn: 0x192, ref: 11, dom: A },
      { gfn: 0x192, ref: 11, dom: A, flags: GNTMAP_host_map | GNTMAP_readonly },
      { gfn: 0x190, ref: 11, dom: A, flags: GNTMAP_host_map | GNTMAP_readonly },
      { gfn: 0x193, ref: 10, dom: A, flags: 0 },
      { gfn: 0x193, ref: 10, dom: A, flags: GNTMAP_host_map | 1 },
      { gfn: 0x193, ref: 10, dom: DOMID_SELF },
      { gfn: 0x193, ref: 10, dom: 999 },
      { gfn: 0x193, ref: 1 << 20, dom: A },
      { gfn: 0x193, ref: 12, dom: A },
    ]).map((r) => r.status), [ST.general_error, ST.okay, ST.general_error, ST.bad_gntref, ST.general_error, ST.bad_domain, ST.bad_domain, ST.bad_gntref, ST.general_error]);
    assert.equal(b.d.physmap.foreignAt(0x192)!.readonly, true);
    assert.equal(flagsV1(a, 11), GTF_permit_access | GTF_readonly | GTF_reading, 'a read-only mapping sets GTF_reading only');
    // a third domain cannot unmap with the backend's handle; bad handles and addresses
    assert.deepEqual(unmap(c, [{ gfn: 0x190, handle: m1!.handle }]), [ST.bad_handle]);
    assert.deepEqual(unmap(b, [{ gfn: 0x190, handle: 12345 }, { gfn: 0x192, handle: m1!.handle }, { gfn: 0x193, handle: m1!.handle }, { gfn: 0x190, handle: m1!.handle, bus: 0x1000 }]), [ST.bad_handle, ST.general_error, ST.general_error, ST.general_error], 'the GFN must hold that grant\'s frame');
    assert.deepEqual(unmap(b, [{ gfn: 0x190, handle: m1!.handle }, { gfn: 0x190, handle: m1!.handle }]), [ST.okay, ST.bad_handle], 'unmapped once');
    assert.equal(b.d.physmap.foreignAt(0x190), null);
    assert.equal(flagsV1(a, 10), GTF_permit_access | GTF_reading | GTF_writing, 'still mapped at 0x191');
    assert.deepEqual(unmap(b, [{ gfn: 0x191, handle: m2!.handle }]), [ST.okay]);
    assert.equal(flagsV1(a, 10), GTF_permit_access);
    assert.equal(revoke(a, 10), true, 'now the granter can revoke it');
    assert.deepEqual(map(b, [{ gfn: 0x193, ref: 10, dom: A }]).map((r) => r.status), [ST.general_error], 'a revoked grant cannot be mapped');
    // a guest RAM frame there is displaced (given back); a Xen mapping cannot go over a grant mapping
    const [m3] = map(b, [{ gfn: 0x60, ref: 11, dom: A, flags: GNTMAP_host_map | GNTMAP_readonly }]);
    assert.equal(m3!.status, ST.okay);
    assert.deepEqual(b.discards, [0x60]);
    addToPhysmap(b, { space: 0, idx: 0, gpfn: 0x60 });
    assert.equal(call(b, HC.memory_op, [7, ARG]), -EINVAL);
    reservation(b, { list: BUF, nr: 1 });
    pfnList(b, BUF, [0x60]);
    assert.equal(call(b, HC.memory_op, [1, ARG]), 0, 'decrease_reservation does not take a grant mapping');
  });

  test('a mapped page stays alive when the granter gives it back; freed on the last unmap', () => {
    const { a, b } = pair();
    grantV1(a, 10, b.d.domid, 0x40);
    const hp = a.d.physmap.hostPageOf(0x40);
    const [m] = map(b, [{ gfn: 0x190, ref: 10, dom: a.d.domid }]);
    assert.equal(m!.status, ST.okay);
    reservation(a, { list: BUF, nr: 1 });
    pfnList(a, BUF, [0x40]);
    assert.equal(call(a, HC.memory_op, [1, ARG]), 1);
    assert.equal(a.d.physmap.hostPageOf(0x40), -1, 'gone from the granter');
    assert.deepEqual(a.discards, [], 'but not freed while mapped');
    assert.deepEqual(unmap(b, [{ gfn: 0x190, handle: m!.handle }]), [ST.okay]);
    assert.deepEqual(a.discards, [], 'freed at the granter\'s next call');
    put(a, ARG, [[0, 'u16', DOMID_SELF]]);
    assert.equal(call(a, HC.memory_op, [3, ARG]), RAM_PAGES - 1);
    reservation(a, { list: BUF, nr: 1 });
    pfnList(a, BUF, [0x41]);
    assert.equal(call(a, HC.memory_op, [1, ARG]), 1);
    assert.deepEqual(a.discards.sort((x, y) => x - y), [hp, 0x41]);
  });

  test('maptrack: max_maptrack_frames bounds the handles (GNTST_no_device_space); the mapper\'s death unpins everything', () => {
    const { a, b } = pair({ maxMaptrackFrames: 1 });
    // pin counts are 8 bits (Xen's GNTPIN_*): 128 mappings of one grant, then one handle each for the rest
    grantV1(a, 10, b.d.domid, 0x40);
    for (let r = 11; r < 11 + MAPTRACK_PER_FRAME; r++) grantV1(a, r, b.d.domid, 0x41);
    const one = Array.from({ length: 129 }, (_, i) => ({ gfn: 0x1000 + i, ref: 10, dom: a.d.domid, flags: GNTMAP_host_map | GNTMAP_readonly }));
    const got = map(b, one).map((r) => r.status);
    assert.deepEqual([got.slice(0, 128).every((s) => s === ST.okay), got[128]], [true, ST.general_error], 'the 129th would overflow the pin count');
    const rest = Array.from({ length: MAPTRACK_PER_FRAME - 128 }, (_, i) => ({ gfn: 0x2000 + i, ref: 11 + i, dom: a.d.domid }));
    assert.ok(map(b, rest).every((r) => r.status === ST.okay));
    assert.equal(b.d.grant.maptrack.inUse, MAPTRACK_PER_FRAME);
    assert.deepEqual(map(b, [{ gfn: 0x3000, ref: 200, dom: a.d.domid }]).map((r) => r.status), [ST.no_device_space]);
    assert.equal(a.d.grant.active(10).pin, 128 << 8);
    b.d.grant.releaseMappings();
    assert.equal(a.d.grant.active(10).pin, 0);
    assert.equal(a.d.grant.active(11).pin, 0);
    assert.deepEqual([flagsV1(a, 10), flagsV1(a, 11)], [GTF_permit_access, GTF_permit_access]);
    assert.equal(b.d.grant.maptrack.inUse, 0);
  });

  test('set_version is refused while grants beyond the reserved eight are in use; reserved entries carry over', () => {
    const { a, b } = pair();
    grantV1(a, 1, b.d.domid, 0x41);
    grantV1(a, 10, b.d.domid, 0x40);
    const [m0, m1] = map(b, [{ gfn: 0x190, ref: 1, dom: a.d.domid }, { gfn: 0x191, ref: 10, dom: a.d.domid }]);
    put(a, ARG, [[0, 'u32', 2]]);
    assert.equal(call(a, HC.grant_table_op, [8, ARG, 1]), -EBUSY);
    assert.equal(u32(a, ARG), 1);
    assert.deepEqual(unmap(b, [{ gfn: 0x191, handle: m1!.handle }]), [ST.okay]);
    put(a, ARG, [[0, 'u32', 2]]);
    assert.equal(call(a, HC.grant_table_op, [8, ARG, 1]), 0, 'ref 1 (xenstore) may stay mapped');
    const o = a.d.physmap.grantBase * PAGE + 16;
    assert.deepEqual([a.dv.getUint16(o, true), a.dv.getUint16(o + 2, true), a.dv.getBigUint64(o + 8, true), a.d.grant.status(1)], [GTF_permit_access, b.d.domid, 0x41n, GTF_reading | GTF_writing]);
    assert.equal(a.dv.getUint16(a.d.physmap.grantBase * PAGE + 10 * 16, true), 0, 'the rest is cleared');
    // v2 status frames are mapped with XENMAPIDX_grant_table_status and leave the physmap with v1
    addToPhysmap(a, { space: 1, idx: 0x80000000, gpfn: 0x80020 });
    assert.equal(call(a, HC.memory_op, [7, ARG]), 0);
    assert.equal(a.d.physmap.hostPageOf(0x80020), a.d.physmap.statusBase);
    addToPhysmap(a, { space: 1, idx: 0x80000001, gpfn: 0x80021 });
    assert.equal(call(a, HC.memory_op, [7, ARG]), -EINVAL, '4 grant frames of v2 need only one status frame');
    assert.deepEqual(unmap(b, [{ gfn: 0x190, handle: m0!.handle }]), [ST.okay]);
    put(a, ARG, [[0, 'u32', 1]]);
    assert.equal(call(a, HC.grant_table_op, [8, ARG, 1]), 0);
    assert.equal(a.d.physmap.hostPageOf(0x80020), -1);
    assert.deepEqual([flagsV1(a, 1), a.dv.getUint16(a.d.physmap.grantBase * PAGE + 8 + 2, true)], [GTF_permit_access, b.d.domid]);
  });

  test('swap_grant_ref swaps two entries; one in use is GNTST_eagain', () => {
    const { a, b } = pair();
    grantV1(a, 10, b.d.domid, 0x40);
    grantV1(a, 11, b.d.domid, 0x41, GTF_permit_access | GTF_readonly);
    put(a, ARG, [[0, 'u32', 10], [4, 'u32', 11], [8, 'i16', 99], [12, 'u32', 10], [16, 'u32', 1 << 20], [20, 'i16', 99]], 24);
    assert.equal(call(a, HC.grant_table_op, [11, ARG, 2]), 0);
    assert.deepEqual([i16(a, ARG + 8), i16(a, ARG + 20)], [ST.okay, ST.bad_gntref]);
    assert.deepEqual([flagsV1(a, 10), flagsV1(a, 11)], [GTF_permit_access | GTF_readonly, GTF_permit_access]);
    map(b, [{ gfn: 0x190, ref: 11, dom: a.d.domid }]);
    put(a, ARG, [[0, 'u32', 10], [4, 'u32', 11], [8, 'i16', 99]], 12);
    assert.equal(call(a, HC.grant_table_op, [11, ARG, 1]), 0);
    assert.equal(i16(a, ARG + 8), ST.eagain);
  });
});

describe('the control domain\'s grant device (Gntdev)', () => {
  test('maps and copies a guest\'s grants to domain 0 with the same checks; pages outlive the granter; unmap and close release the pins', () => {
    const a = mkEnv();
    const dev = new Gntdev((id) => (id === a.d.domid ? a.d.grant : null), 0, 1);
    const base = a.d.physmap.grantBase * PAGE;
    const grant = (ref: number, domid: number, frame: number, flags: number) => {
      a.dv.setUint16(base + ref * 8 + 2, domid, true);
      a.dv.setUint32(base + ref * 8 + 4, frame, true);
      a.dv.setUint16(base + ref * 8, flags, true);
    };
    grant(0, 0, 0x40, 1);
    grant(1, 0, 0x41, 1 | 4);
    grant(2, 7, 0x42, 1);
    a.mem.fill(0x42, 0x40 * PAGE, 0x41 * PAGE);
    const m = dev.map(a.d.domid, 0);
    assert.ok(typeof m !== 'number');
    assert.equal(m.page.length, PAGE);
    assert.equal(m.page[17], 0x42);
    m.page[0] = 0x99;
    assert.equal(a.mem[0x40 * PAGE], 0x99, 'the view is the granted page');
    assert.equal(a.dv.getUint16(base, true), 1 | 8 | 16, 'GTF_reading|GTF_writing while mapped');
    assert.equal(dev.map(a.d.domid, 1), -1, 'writable map of a read-only grant: GNTST_general_error');
    assert.equal(dev.map(a.d.domid, 2), -1, 'a grant for another domain: GNTST_general_error');
    assert.equal(dev.map(a.d.domid + 1, 0), -2, 'no such domain: GNTST_bad_domain');
    assert.equal(dev.map(a.d.domid, 5000), -3);
    const buf = new Uint8Array(PAGE);
    assert.deepEqual(dev.copy([
      { source: { domid: a.d.domid, ref: 1, offset: 8 }, dest: { buf, offset: 0 }, len: 16 },
      { source: { buf, offset: 0 }, dest: { domid: a.d.domid, ref: 1, offset: 0 }, len: 16 },
      { source: { domid: a.d.domid, ref: 0, offset: 4000 }, dest: { buf, offset: 0 }, len: 200 },
    ]), [0, -1, -10]);
    assert.equal(dev.unmap(m.handle), 0);
    assert.equal(dev.unmap(m.handle), -4, 'GNTST_bad_handle');
    assert.equal(a.dv.getUint16(base, true), 1);
    const m2 = dev.map(a.d.domid, 0);
    assert.ok(typeof m2 !== 'number');
    a.d.grant.markGone(); // the granter's memory is going from this thread
    assert.equal(m2.page[1], 0x42, 'a mapped page stays readable');
    assert.equal(dev.map(a.d.domid, 0), -2, 'nothing more is pinned in a dead table');
    dev.close();
    assert.equal(dev.maptrack.inUse, 0);
  });
});
