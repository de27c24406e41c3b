// xen_version (public/version.h). Which sub-ops a domU may use follows the
// dummy XSM policy: version, platform_parameters and get_features always;
// the informational strings always; commandline reads "<denied>" and
// build_id fails with -EPERM unless privileged. Unknown sub-ops: -ENOSYS.

import { registerHypercall, Hcall } from './hypercall.js';
import { HYPERCALL, XEN_MAJOR, XEN_MINOR, PAGE_SIZE } from './abi/xen.js';
import { EINVAL, ENOSYS, EPERM, XenError } from './errno.js';
import { struct } from './abi/layout.js';
import { statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const XENVER = {
  version: 0, extraversion: 1, compile_info: 2, capabilities: 3, changeset: 4, platform_parameters: 5,
  get_features: 6, pagesize: 7, guest_handle: 8, commandline: 9, build_id: 10,
} as const;

/** public/features.h bits we really provide to a PVH guest. */
export const XENFEAT = {
  writable_page_tables: 0, auto_translated_physmap: 2, hvm_callback_vector: 8, hvm_safe_pvclock: 9, dom0: 11,
  not_direct_mapped: 16,
} as const;

export function featureBitmap(privileged: boolean): number {
  let f = (1 << XENFEAT.writable_page_tables) | (1 << XENFEAT.auto_translated_physmap) | (1 << XENFEAT.hvm_callback_vector)
    | (1 << XENFEAT.hvm_safe_pvclock) | (1 << XENFEAT.not_direct_mapped);
  if (privileged) f |= 1 << XENFEAT.dom0;
  return f >>> 0;
}

export const EXTRAVERSION = '.0-xenode';
export const CAPABILITIES = 'hvm-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p';
export const CHANGESET = 'xenode';
const DENIED = '<denied>';

/**
 * XENVER_compile_info's strings (xl info's cc_* lines): the runtime that
 * runs the hypervisor, and when this module was compiled (its file's
 * modification time, in the `LC_ALL=C date -u` form Xen's build records).
 */
export const COMPILE_INFO = {
  compiler: `node ${process.version}`,
  by: 'xenode',
  domain: 'xenode',
  date: compileDate(),
};

function compileDate(): string {
  let t: Date;
  try {
    t = statSync(fileURLToPath(import.meta.url)).mtime;
  } catch {
    return 'unknown';
  }
  const day = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'][t.getUTCDay()];
  const mon = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'][t.getUTCMonth()];
  const p = (n: number) => String(n).padStart(2, '0');
  return `${day} ${mon} ${String(t.getUTCDate()).padStart(2)} ${p(t.getUTCHours())}:${p(t.getUTCMinutes())}:${p(t.getUTCSeconds())} UTC ${t.getUTCFullYear()}`;
}

/** xen_feature_info {u32 submap_idx; u32 submap} (public/version.h). */
export const FeatureInfo = struct('xen_feature_info', 8, { submap_idx: [0, 'u32'], submap: [4, 'u32'] });

function cstr(s: string, size: number): Uint8Array {
  const b = new Uint8Array(size);
  b.set(Buffer.from(s.slice(0, size - 1), 'latin1'));
  return b;
}

function xenVersion(h: Hcall): number {
  const cmd = h.int(0);
  const arg = h.ptr(1);
  const g = h.g;
  switch (cmd) {
    case XENVER.version:
      return (XEN_MAJOR << 16) | XEN_MINOR;
    case XENVER.extraversion:
      g.write(arg, cstr(EXTRAVERSION, 16));
      return 0;
    case XENVER.compile_info: {
      // xen_compile_info: compiler[64], compile_by[16], compile_domain[32], compile_date[32]
      const b = new Uint8Array(144);
      b.set(cstr(COMPILE_INFO.compiler, 64), 0);
      b.set(cstr(COMPILE_INFO.by, 16), 64);
      b.set(cstr(COMPILE_INFO.domain, 32), 80);
      b.set(cstr(COMPILE_INFO.date, 32), 112);
      g.write(arg, b);
      return 0;
    }
    case XENVER.capabilities:
      g.write(arg, cstr(CAPABILITIES, 1024));
      return 0;
    case XENVER.changeset:
      g.write(arg, cstr(CHANGESET, 64));
      return 0;
    case XENVER.platform_parameters:
      // xen_platform_parameters {unsigned long virt_start}: 0 for HVM guests.
      g.write(arg, new Uint8Array(h.x32 ? 4 : 8));
      return 0;
    case XENVER.get_features: {
      const fi = g.readStruct(FeatureInfo, arg);
      if (fi.submap_idx !== 0) throw new XenError(EINVAL, `feature submap ${fi.submap_idx}`);
      g.writeFields(FeatureInfo, arg, { submap: featureBitmap(h.dom.privileged) });
      return 0;
    }
    case XENVER.pagesize:
      return arg === 0n ? PAGE_SIZE : -EINVAL;
    case XENVER.guest_handle:
      g.write(arg, h.dom.handle);
      return 0;
    case XENVER.commandline:
      g.write(arg, h.dom.privileged ? cstr('', 1024) : cstr(DENIED, DENIED.length + 1));
      return 0;
    case XENVER.build_id:
      if (!h.dom.privileged) throw new XenError(EPERM);
      throw new XenError(ENOSYS, 'no build id');
    default:
      throw new XenError(ENOSYS);
  }
}

registerHypercall(HYPERCALL.xen_version, xenVersion);
