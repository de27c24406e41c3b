// Our structure layouts against Xen's real public headers: a C file is
// generated from the Struct objects themselves (every exported struct of
// src/hv/abi/*.ts and the hypercall modules) with _Static_assert on
// offsetof, member width and sizeof, and compiled with gcc: 64-bit for the
// native layouts, -m32 -fsyntax-only for the compat (32-bit guest) layouts.
// A wrong offset in our code fails the compile, and the test.

import { strict as assert } from 'node:assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { inCi } from '../../testing/peers.js';

import { Struct, type Fields } from './layout.js';
import * as xen from './xen.js';
import * as startInfo from './start_info.js';
import * as version from '../version.js';
import * as hvm from '../hvm.js';
import * as memory from '../memory.js';
import * as grant from '../grant_table.js';
import * as evtchn from './event_channel.js';
import * as sched from '../sched_op.js';
import * as vcpu from '../vcpu_op.js';
import * as hvmVcpu from '../x86/hvm_vcpu.js';
import * as exclusive from './xenode_sched.js';
import { root } from '../../testing/xenode.js';

type Abi = 'x64' | 'x32';
const WIDTH: Record<string, number> = { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, u64: 8, i64: 8 };

/**
 * How each of our structures is named in C. `members` maps a field to its C
 * member designator when the names differ; null means "the start of an
 * aggregate": offset checked, width not.
 */
interface CSpec {
  c: string;
  members?: Record<string, string | null>;
}

const C: Record<string, CSpec> = {
  vcpu_time_info: { c: 'struct vcpu_time_info' },
  vcpu_info: { c: 'struct vcpu_info', members: { cr2: 'arch.cr2', time: null } },
  shared_info: {
    c: 'struct shared_info',
    members: { vcpu_info: null, evtchn_pending: 'evtchn_pending[0]', evtchn_mask: 'evtchn_mask[0]', wc_sec_hi: 'xen_wc_sec_hi' },
  },
  hvm_start_info: { c: 'struct hvm_start_info' },
  hvm_modlist_entry: { c: 'struct hvm_modlist_entry' },
  hvm_memmap_table_entry: { c: 'struct hvm_memmap_table_entry' },
  xen_feature_info: { c: 'struct xen_feature_info' },
  xen_hvm_param: { c: 'struct xen_hvm_param' },
  xen_hvm_evtchn_upcall_vector: { c: 'struct xen_hvm_evtchn_upcall_vector' },
  xen_hvm_get_time: { c: 'struct xen_hvm_get_time' },
  xen_memory_reservation: { c: 'struct xen_memory_reservation' },
  xen_add_to_physmap: { c: 'struct xen_add_to_physmap' },
  xen_remove_from_physmap: { c: 'struct xen_remove_from_physmap' },
  xen_memory_map: { c: 'struct xen_memory_map' },
  xen_foreign_memory_map: { c: 'struct xen_foreign_memory_map', members: { nr_entries: 'map.nr_entries', buffer: 'map.buffer' } },
  grant_entry_v1: { c: 'struct grant_entry_v1' },
  grant_entry_v2: {
    c: 'union grant_entry_v2',
    members: {
      flags: 'hdr.flags', domid: 'hdr.domid', frame: 'full_page.frame', page_off: 'sub_page.page_off', length: 'sub_page.length',
      trans_domid: 'transitive.trans_domid', trans_gref: 'transitive.gref',
    },
  },
  gnttab_map_grant_ref: { c: 'struct gnttab_map_grant_ref' },
  gnttab_unmap_grant_ref: { c: 'struct gnttab_unmap_grant_ref' },
  gnttab_unmap_and_replace: { c: 'struct gnttab_unmap_and_replace' },
  gnttab_dump_table: { c: 'struct gnttab_dump_table' },
  gnttab_transfer: { c: 'struct gnttab_transfer' },
  gnttab_copy: {
    c: 'struct gnttab_copy',
    members: {
      source_gmfn: 'source.u.gmfn', source_ref: 'source.u.ref', source_domid: 'source.domid', source_offset: 'source.offset',
      dest_gmfn: 'dest.u.gmfn', dest_ref: 'dest.u.ref', dest_domid: 'dest.domid', dest_offset: 'dest.offset',
    },
  },
  gnttab_get_status_frames: { c: 'struct gnttab_get_status_frames' },
  gnttab_swap_grant_ref: { c: 'struct gnttab_swap_grant_ref' },
  gnttab_setup_table: { c: 'struct gnttab_setup_table' },
  gnttab_query_size: { c: 'struct gnttab_query_size' },
  gnttab_set_version: { c: 'struct gnttab_set_version' },
  gnttab_get_version: { c: 'struct gnttab_get_version' },
  evtchn_alloc_unbound: { c: 'struct evtchn_alloc_unbound' },
  evtchn_bind_interdomain: { c: 'struct evtchn_bind_interdomain' },
  evtchn_bind_virq: { c: 'struct evtchn_bind_virq' },
  evtchn_bind_ipi: { c: 'struct evtchn_bind_ipi' },
  evtchn_port: { c: 'struct evtchn_send' }, // close, send and unmask share the {port} layout
  evtchn_status: { c: 'struct evtchn_status', members: { u_dom: 'u.unbound.dom', u_port: 'u.interdomain.port', u_virq: 'u.virq' } },
  evtchn_bind_vcpu: { c: 'struct evtchn_bind_vcpu' },
  evtchn_reset: { c: 'struct evtchn_reset' },
  evtchn_init_control: { c: 'struct evtchn_init_control' },
  evtchn_expand_array: { c: 'struct evtchn_expand_array' },
  evtchn_set_priority: { c: 'struct evtchn_set_priority' },
  evtchn_fifo_control_block: {
    c: 'struct evtchn_fifo_control_block',
    members: Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`head${i}`, `head[${i}]`])),
  },
  sched_shutdown: { c: 'struct sched_shutdown' },
  sched_poll: { c: 'struct sched_poll' },
  sched_remote_shutdown: { c: 'struct sched_remote_shutdown' },
  sched_watchdog: { c: 'struct sched_watchdog' },
  // xenode's own sched_op extension: its header is guests/lib/xenode_sched.h
  sched_xenode_exclusive: { c: 'struct sched_xenode_exclusive' },
  vcpu_register_vcpu_info: { c: 'struct vcpu_register_vcpu_info' },
  vcpu_set_periodic_timer: { c: 'struct vcpu_set_periodic_timer' },
  vcpu_set_singleshot_timer: { c: 'struct vcpu_set_singleshot_timer' },
  vcpu_hvm_context: { c: 'struct vcpu_hvm_context' },
  vcpu_hvm_x86: { c: 'struct vcpu_hvm_x86_32' }, // our name minus _32 (the compat suffix)
  vcpu_hvm_x86_64: { c: 'struct vcpu_hvm_x86_64' },
  vcpu_runstate_info: { c: 'struct vcpu_runstate_info', members: { time0: 'time[0]', time1: 'time[1]', time2: 'time[2]', time3: 'time[3]' } },
};

/** Structures that are not in Xen's public headers (checked elsewhere or by definition). */
const NOT_XEN: Record<string, string> = {
  e820entry: 'the BIOS INT 15h/E820 entry (20 bytes packed); no Xen header declares it',
};

const HEADERS = [
  'xen/xen.h', 'xen/version.h', 'xen/memory.h', 'xen/event_channel.h', 'xen/grant_table.h', 'xen/sched.h', 'xen/vcpu.h',
  'xen/hvm/hvm_op.h', 'xen/hvm/params.h', 'xen/hvm/hvm_vcpu.h', 'xen/arch-x86/hvm/start_info.h',
  'xenode_sched.h',
];

interface Entry {
  struct: Struct<Fields>;
  abi: Abi | 'both';
  from: string;
}

/** Every Struct and ABI pair the modules export. */
function collect(): Entry[] {
  const mods: Record<string, Record<string, unknown>> = { xen, startInfo, version, hvm, memory, grant, evtchn, sched, vcpu, hvmVcpu, exclusive };
  const out: Entry[] = [];
  for (const [m, mod] of Object.entries(mods)) {
    for (const [k, v] of Object.entries(mod)) {
      if (v instanceof Struct) out.push({ struct: v as Struct<Fields>, abi: 'both', from: `${m}.${k}` });
      else if (v && typeof v === 'object' && 'x64' in v && 'x32' in v && v.x64 instanceof Struct && v.x32 instanceof Struct) {
        out.push({ struct: v.x64 as Struct<Fields>, abi: 'x64', from: `${m}.${k}.x64` });
        out.push({ struct: v.x32 as Struct<Fields>, abi: 'x32', from: `${m}.${k}.x32` });
      }
    }
  }
  return out;
}

function cName(s: Struct<Fields>): string {
  return s.name.replace(/_32$/, '');
}

function assertionsFor(entries: Entry[], abi: Abi): string[] {
  const lines: string[] = [];
  for (const e of entries) {
    if (e.abi !== 'both' && e.abi !== abi) continue;
    const name = cName(e.struct);
    if (NOT_XEN[name]) continue;
    const spec = C[name];
    if (!spec) throw new Error(`${e.from}: no C mapping for structure ${name}; add it to layout.test.ts`);
    const tag = `${abi} ${e.from}`;
    lines.push(`_Static_assert(sizeof(${spec.c}) == ${e.struct.size}, "${tag}: sizeof(${spec.c}) != ${e.struct.size}");`);
    for (const [field, [off, type]] of Object.entries(e.struct.fields)) {
      const member = spec.members && field in spec.members ? spec.members[field] : field;
      const m = member ?? field;
      lines.push(`_Static_assert(offsetof(${spec.c}, ${m}) == ${off}, "${tag}: offsetof(${spec.c}, ${m}) != ${off}");`);
      if (member !== null) {
        lines.push(`_Static_assert(sizeof(((${spec.c} *)0)->${m}) == ${WIDTH[type]}, "${tag}: sizeof(${spec.c}.${m}) != ${WIDTH[type]} (${type})");`);
      }
    }
  }
  return lines;
}

function source(body: string[]): string {
  return ['#include <stddef.h>', '#include <stdint.h>', ...HEADERS.map((h) => `#include <${h}>`), '', ...body, ''].join('\n');
}

// --- toolchain discovery ---------------------------------------------------

function findInclude(): string | null {
  for (const dir of ['/usr/include', '/tmp/xenh/usr/include']) if (existsSync(join(dir, 'xen/xen.h'))) return dir;
  return null;
}

function haveGcc(): boolean {
  try {
    execFileSync('gcc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const include = findInclude();
const gcc = haveGcc();
const skipAll = !gcc ? 'gcc not found' : !include ? 'Xen public headers not found (install libxen-dev, or extract them under /tmp/xenh)' : false;
if (skipAll) process.stderr.write(`\n*** abi/layout.test: SKIPPED: ${skipAll} ***\n\n`);

const dir = mkdtempSync(join(tmpdir(), 'xenode-layout-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

function compile(abi: Abi, src: string): { ok: boolean; errors: string[]; raw: string } {
  const file = join(dir, `layout_${abi}_${Math.random().toString(36).slice(2)}.c`);
  writeFileSync(file, src);
  const args = ['-std=c11', '-ffreestanding', '-fsyntax-only', '-fmax-errors=0', '-D__XEN_INTERFACE_VERSION__=__XEN_LATEST_INTERFACE_VERSION__', '-I', include!, '-I', join(root, 'guests/lib'), file];
  if (abi === 'x32') args.unshift('-m32');
  const r = spawnSync('gcc', args, { encoding: 'utf8' });
  const raw = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  const errors = raw.split('\n').filter((l) => /error:/.test(l)).map((l) => l.replace(/^.*error: /, ''));
  return { ok: r.status === 0, errors, raw };
}

/** -m32 needs only gcc's own freestanding headers; probe that it works here. */
function m32Works(): string | false {
  if (skipAll) return String(skipAll);
  const r = compile('x32', source(['_Static_assert(sizeof(long) == 4, "ilp32");']));
  return r.ok ? false : `gcc -m32 -fsyntax-only does not work here: ${r.raw.split('\n')[0]}`;
}
const skip32 = m32Works();
if (skip32 && !skipAll) process.stderr.write(`\n*** abi/layout.test: 32-bit layouts SKIPPED: ${skip32} ***\n\n`);

describe('ABI layouts against the Xen public headers', () => {
  const entries = collect();

  test('every exported structure is found and mapped to a C type', () => {
    assert.ok(entries.length >= 40, `found ${entries.length} structures`);
    for (const e of entries) {
      const name = cName(e.struct);
      assert.ok(C[name] || NOT_XEN[name], `${e.from}: no C mapping for ${name}`);
    }
  });

  for (const abi of ['x64', 'x32'] as const) {
    // In CI a missing compiler or header set fails these instead of skipping them.
    const missing = skipAll || (abi === 'x32' ? skip32 : false);
    const skip = inCi ? false : missing;
    test(`${abi}: offsetof, member widths and sizeof match gcc ${abi === 'x32' ? '-m32' : '(x86-64)'}`, { skip }, () => {
      assert.equal(missing, false, 'required in CI: gcc (with -m32 -fsyntax-only) and Xen\'s public headers (apt-get install gcc libxen-dev)');
      const body = assertionsFor(entries, abi);
      assert.ok(body.length > 100, `${body.length} assertions`);
      const r = compile(abi, source(body));
      assert.ok(r.ok, `layouts disagree with the Xen headers (${abi}):\n  ${r.errors.join('\n  ') || r.raw}`);
    });

    test(`${abi}: EVTCHNOP and FIFO event-word numbers match public/event_channel.h, SCHEDOP_xenode_exclusive xenode_sched.h`, { skip }, () => {
      assert.equal(missing, false, 'required in CI: gcc (with -m32 -fsyntax-only) and Xen\'s public headers (apt-get install gcc libxen-dev)');
      const body = [
        ...Object.entries(evtchn.EVTCHNOP).filter(([k]) => k !== 'reset_cont').map(([k, v]) => `_Static_assert(EVTCHNOP_${k} == ${v}, "EVTCHNOP_${k}");`),
        ...['PRIORITY_MAX', 'PRIORITY_DEFAULT', 'PRIORITY_MIN', 'MAX_QUEUES', 'PENDING', 'MASKED', 'LINKED', 'BUSY', 'LINK_BITS', 'LINK_MASK', 'NR_CHANNELS']
          .map((k) => `_Static_assert(EVTCHN_FIFO_${k} == ${(evtchn as Record<string, unknown>)[`EVTCHN_FIFO_${k}`] as number}, "EVTCHN_FIFO_${k}");`),
        `_Static_assert(EVTCHN_2L_NR_CHANNELS == ${evtchn.EVTCHN_2L_NR_CHANNELS[abi]}, "EVTCHN_2L_NR_CHANNELS");`,
        `_Static_assert(4096 / sizeof(event_word_t) == ${evtchn.EVTCHN_FIFO_EVENT_WORDS_PER_PAGE}, "event words per page");`,
        // and xenode's sched_op extension against its header
        `_Static_assert(SCHEDOP_xenode_exclusive == ${exclusive.SCHEDOP_xenode_exclusive}, "SCHEDOP_xenode_exclusive");`,
        ...Object.entries(exclusive.XENODE_EXCLUSIVE).map(([k, v]) => `_Static_assert(XENODE_EXCLUSIVE_${k} == ${v}, "XENODE_EXCLUSIVE_${k}");`),
      ];
      const r = compile(abi, source(body));
      assert.ok(r.ok, `numbers disagree with the Xen headers (${abi}):\n  ${r.errors.join('\n  ') || r.raw}`);
    });

    test(`${abi}: the check itself catches a wrong offset`, { skip }, () => {
      assert.equal(missing, false, 'required in CI: gcc (with -m32 -fsyntax-only) and Xen\'s public headers (apt-get install gcc libxen-dev)');
      const r = compile(abi, source(['_Static_assert(offsetof(struct vcpu_time_info, system_time) == 24, "planted mistake");']));
      assert.ok(!r.ok);
      assert.ok(r.errors.some((l) => l.includes('planted mistake')), r.raw);
    });
  }
});
