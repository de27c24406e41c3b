// The domain builder (libxl + libxenguest's job for a PVH guest): create the
// domain, load the kernel with its start_info, set up the console and
// xenstore rings with their event channels toward the control domain, seed
// the reserved grant entries, write the HVM params, set vCPU 0's entry state
// and hand the domain to the hypervisor.

import { readFileSync } from 'node:fs';
import type { Hypervisor, DomainBuild } from '../hv/hypervisor.js';
import type { DomainConfig } from './xl/config.js';
import { loadPvh, pvhEntryState, PvhLoadResult } from '../hv/x86/pvh.js';
import { parsePvhKernel } from '../hv/x86/bzimage.js';
import {
  ACPI_TABLES_START, LAPIC_BASE, buildPvhE820, encodeE820Xenmem, CONSOLE_RING_PFN as CONSOLE_GFN, XENSTORE_RING_PFN as STORE_GFN,
} from '../hv/x86/e820.js';
import { apicIdOfVcpu } from '../hv/x86/vlapic.js';
import { buildAcpiTables, type AcpiTables } from './libacpi/build.js';
import { HVM_PARAM } from '../hv/hvm.js';
import { GrantEntryV1, GTF_permit_access, GNTTAB_RESERVED_CONSOLE, GNTTAB_RESERVED_XENSTORE } from '../hv/grant_table.js';
import { PAGE_SIZE } from '../hv/abi/xen.js';

export interface BuildConfig {
  name: string;
  kernel: Uint8Array;
  memoryMiB: number;
  maxMemMiB?: number;
  /** vCPUs online at start (xl.cfg vcpus) */
  vcpus: number;
  /** vCPUs the domain has (xl.cfg maxvcpus, default vcpus); those past `vcpus` start offline */
  maxVcpus?: number;
  cmdline?: string;
  ramdisk?: Uint8Array;
  /** ACPI tables for the guest (xl.cfg acpi; libxl's default for PVH is on) */
  acpi?: boolean;
  maxGrantFrames?: number;
  maxEvtchnPort?: number;
  isConsole?: boolean;
  uuid?: Uint8Array;
  /** cpupool id, and per-vCPU hard/soft affinity (see DomainCreateOptions) */
  pool?: number;
  hard?: (number[] | null)[];
  soft?: (number[] | null)[];
  /** the right to the machine to itself for up to this many ms (see DomainCreateOptions) */
  exclusiveMs?: number;
}

export interface BuiltDomain {
  domid: number;
  build: DomainBuild;
  load: PvhLoadResult;
  consolePort: number; // the guest's port
  storePort: number; // the guest's port
  consoleGfn: number;
  storeGfn: number;
  /** the memory map as XENMEM_memory_map returns it (20-byte entries) */
  e820: Uint8Array;
  /** where the ACPI tables went (absent with acpi off) */
  acpi?: AcpiTables;
}


/** A kernel or ramdisk that cannot be read (the message names the file and why). */
export class ImageError extends Error {
  constructor(readonly path: string, what: string, cause: NodeJS.ErrnoException) {
    const why = cause.code === 'ENOENT' ? 'no such file' : cause.code === 'EACCES' ? 'permission denied' : cause.code === 'EISDIR' ? 'is a directory' : cause.message;
    super(`cannot read ${what} '${path}': ${why}`);
    this.name = 'ImageError';
  }
}

function readImage(path: string, what: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new ImageError(path, what, e as NodeJS.ErrnoException);
  }
}

/** What the builder needs from an xl.cfg: the config's numbers plus the kernel and ramdisk read from disk. */
export function buildConfigFor(cfg: DomainConfig): BuildConfig {
  return {
    name: cfg.name,
    kernel: readImage(cfg.kernel, 'kernel'),
    ramdisk: cfg.ramdisk ? readImage(cfg.ramdisk, 'ramdisk') : undefined,
    acpi: cfg.acpi,
    cmdline: cfg.cmdline,
    memoryMiB: cfg.memory,
    maxMemMiB: cfg.maxmem,
    vcpus: cfg.vcpus,
    maxVcpus: cfg.maxvcpus,
    maxGrantFrames: cfg.maxGrantFrames,
    // libxl__domain_make: .max_evtchn_port = b_info->event_channels (port 0 is
    // reserved, so N usable channels)
    maxEvtchnPort: cfg.maxEventChannels,
    exclusiveMs: cfg.exclusiveMs,
  };
}

/** Builds a paused PVH domain; the caller connects backends, then calls hv.startDomain. */
export function buildPvhDomain(hv: Hypervisor, cfg: BuildConfig): BuiltDomain {
  const image = parsePvhKernel(cfg.kernel); // an ELF or a bzImage; PvhLoadError with a clear message
  const acpi = cfg.acpi ?? true ? acpiTables(cfg) : undefined;
  const b = hv.createDomain({
    acpiPages: (acpi?.bytes.length ?? 0) / PAGE_SIZE,
    name: cfg.name, memoryMiB: cfg.memoryMiB, maxMemMiB: cfg.maxMemMiB, vcpus: Math.max(cfg.vcpus, cfg.maxVcpus ?? 0),
    maxGrantFrames: cfg.maxGrantFrames, maxEvtchnPort: cfg.maxEvtchnPort, isConsole: cfg.isConsole ?? true, uuid: cfg.uuid,
    pool: cfg.pool, hard: cfg.hard, soft: cfg.soft, exclusiveMs: cfg.exclusiveMs,
  });
  try {
    const pm = b.physmap;
    if (acpi) b.mem.bytes.set(acpi.bytes, pm.acpiBase * PAGE_SIZE);
    const e820 = buildPvhE820(pm.layout.ramPages * PAGE_SIZE, { acpiBytes: acpi?.bytes.length ?? 0 });
    const ram = b.mem.bytes.subarray(0, pm.lowRamPages * PAGE_SIZE);
    const load = loadPvh(ram, image, {
      cmdline: cfg.cmdline ?? '',
      memmap: e820,
      rsdpPaddr: acpi?.rsdpPaddr ?? 0,
      // The ramdisk is module 0, without a command line (libxl__build_dom's xc_dom_module_file(dom, path, NULL)).
      modules: cfg.ramdisk ? [{ data: cfg.ramdisk }] : [],
    });
    hv.setVcpuContext(b.domid, 0, pvhEntryState(load.entry, load.startInfoGpa));
    // Rings toward the control domain: fresh pages, unbound ports it will bind.
    const consolePort = hv.allocUnbound(b.domid, 0);
    const storePort = hv.allocUnbound(b.domid, 0);
    b.params[HVM_PARAM.CONSOLE_PFN] = BigInt(CONSOLE_GFN);
    b.params[HVM_PARAM.CONSOLE_EVTCHN] = BigInt(consolePort);
    b.params[HVM_PARAM.STORE_PFN] = BigInt(STORE_GFN);
    b.params[HVM_PARAM.STORE_EVTCHN] = BigInt(storePort);
    // Grant refs 0 and 1 let the console and xenstore backends map those pages (xc_dom_gnttab_seed).
    const g0 = pm.grantBase * PAGE_SIZE;
    const dv = b.mem.dataView();
    GrantEntryV1.write(dv, g0 + GNTTAB_RESERVED_CONSOLE * GrantEntryV1.size, { domid: 0, frame: CONSOLE_GFN, flags: GTF_permit_access });
    GrantEntryV1.write(dv, g0 + GNTTAB_RESERVED_XENSTORE * GrantEntryV1.size, { domid: 0, frame: STORE_GFN, flags: GTF_permit_access });
    return { domid: b.domid, build: b, load, consolePort, storePort, consoleGfn: CONSOLE_GFN, storeGfn: STORE_GFN, e820: encodeE820Xenmem(e820), acpi };
  } catch (e) {
    void hv.destroy(b.domid);
    throw e;
  }
}

/** The domain's ACPI tables (libxl__dom_load_acpi): for its pages at ACPI_TABLES_START. */
function acpiTables(cfg: BuildConfig): AcpiTables {
  const nrVcpus = Math.max(cfg.vcpus, cfg.maxVcpus ?? 0);
  return buildAcpiTables({ nrVcpus, onlineVcpus: cfg.vcpus, lapicId: apicIdOfVcpu, lapicBase: LAPIC_BASE, base: ACPI_TABLES_START });
}

/** Lets a built domain run (or hands it over paused). */
export function startBuiltDomain(hv: Hypervisor, d: BuiltDomain, o: { paused?: boolean } = {}): void {
  hv.startDomain(d.build, d.e820, o);
}

/** Host byte offset of a special page (console/xenstore ring) in the domain memory. */
export function specialPageOffset(b: DomainBuild, gfn: number): number {
  return b.physmap.hostPageOf(gfn) * PAGE_SIZE;
}
