// Checking what arrives over the API. A DomainConfig normally comes from the
// xl.cfg parser, but the socket accepts anything, so the daemon checks every
// field it relies on, fills xl's defaults for omitted ones, and names the
// first bad field in an EINVAL error.

import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { EVTCHN_FIFO_NR_CHANNELS } from '../../hv/abi/event_channel.js';
import { EXCLUSIVE_MAX_MS } from '../../hv/abi/xenode_sched.js';
import type { DomainConfig, ShutdownAction } from '../xl/config.js';

export class ApiFailure extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = 'ApiFailure';
  }
}

export const einval = (m: string): ApiFailure => new ApiFailure('EINVAL', m);

export const ACTIONS: readonly ShutdownAction[] = ['destroy', 'restart', 'rename-restart', 'preserve', 'coredump-destroy', 'coredump-restart', 'soft-reset'];
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** libxl's domain name rule plus ours: not all digits (the API takes ids and names in one field). */
export function checkName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) throw einval('name must be a non-empty string');
  if (name.length > 64) throw einval(`name '${name.slice(0, 16)}...' is longer than 64 characters`);
  if (/^\d+$/.test(name)) throw einval(`name '${name}' is all digits (it would read as a domain id)`);
  if (!/^[A-Za-z0-9_.:+@-][A-Za-z0-9_.:+@ -]*$/.test(name)) throw einval(`name '${name}' may only use letters, digits, space and _ . : + @ -`);
  return name;
}

function int(v: unknown, field: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw einval(`${field} must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
  return v;
}

function cpuList(v: unknown, field: string): number[] | null {
  if (v === null || v === undefined) return null;
  if (!Array.isArray(v)) throw einval(`${field} must be a list of CPU numbers or null`);
  return v.map((c, i) => int(c, `${field}[${i}]`, 0, 4095));
}

function action(v: unknown, field: string, dflt: ShutdownAction): ShutdownAction {
  if (v === undefined) return dflt;
  if (typeof v !== 'string' || !(ACTIONS as readonly string[]).includes(v)) throw einval(`${field} must be one of ${ACTIONS.join(', ')}, got ${JSON.stringify(v)}`);
  return v as ShutdownAction;
}

function optString(v: unknown, field: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw einval(`${field} must be a string`);
  return v;
}

/** A complete, checked DomainConfig from whatever the client sent. */
export function checkConfig(input: unknown): DomainConfig {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw einval('config must be an object');
  const c = input as Record<string, unknown>;
  const name = checkName(c.name);
  if (c.type !== undefined && c.type !== 'pvh') throw einval(`type '${String(c.type)}' is not supported (only pvh)`);
  const uuid = c.uuid === undefined ? randomUUID() : String(c.uuid).toLowerCase();
  if (!UUID_RE.test(uuid)) throw einval(`uuid '${String(c.uuid)}' is not of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`);
  const memory = int(c.memory ?? 128, 'memory', 1, 1 << 20);
  const maxmem = int(c.maxmem ?? memory, 'maxmem', 1, 1 << 20);
  if (maxmem < memory) throw einval(`maxmem (${maxmem}) is below memory (${memory})`);
  const vcpus = int(c.vcpus ?? 1, 'vcpus', 1, 128);
  const maxvcpus = int(c.maxvcpus ?? vcpus, 'maxvcpus', 1, 128);
  if (maxvcpus < vcpus) throw einval(`maxvcpus (${maxvcpus}) is below vcpus (${vcpus})`);
  if (typeof c.kernel !== 'string' || c.kernel === '') throw einval('kernel must be the path of the kernel image');
  if (!path.isAbsolute(c.kernel)) throw einval(`kernel '${c.kernel}' must be an absolute path (the daemon does not share your working directory)`);
  const ramdisk = optString(c.ramdisk, 'ramdisk');
  if (ramdisk !== undefined && !path.isAbsolute(ramdisk)) throw einval(`ramdisk '${ramdisk}' must be an absolute path`);
  const sched = c.sched ?? {};
  if (typeof sched !== 'object' || sched === null || Array.isArray(sched)) throw einval('sched must be an object');
  for (const [k, v] of Object.entries(sched)) if (typeof v !== 'number') throw einval(`sched.${k} must be a number`);
  for (const k of ['disks', 'vifs'] as const) if (c[k] !== undefined && !Array.isArray(c[k])) throw einval(`${k} must be a list`);
  if (c.autostart !== undefined && typeof c.autostart !== 'boolean') throw einval('autostart must be true or false');
  if (c.acpi !== undefined && typeof c.acpi !== 'boolean') throw einval('acpi must be true or false');
  const exclusiveMs = c.exclusiveMs === undefined ? 0 : int(c.exclusiveMs, 'exclusiveMs', 0, EXCLUSIVE_MAX_MS);
  return {
    name, type: 'pvh', uuid, memory, maxmem, vcpus, maxvcpus,
    cpus: cpuList(c.cpus, 'cpus'), cpusSoft: cpuList(c.cpusSoft, 'cpusSoft'),
    kernel: c.kernel, ramdisk, cmdline: optString(c.cmdline, 'cmdline') ?? '',
    ...(c.acpi === undefined ? {} : { acpi: c.acpi as boolean }),
    // xl.cfg(5) defaults
    onPoweroff: action(c.onPoweroff, 'onPoweroff', 'destroy'),
    onReboot: action(c.onReboot, 'onReboot', 'restart'),
    onCrash: action(c.onCrash, 'onCrash', 'destroy'),
    onWatchdog: action(c.onWatchdog, 'onWatchdog', 'destroy'),
    onSoftReset: action(c.onSoftReset, 'onSoftReset', 'soft-reset'),
    pool: optString(c.pool, 'pool'),
    sched: sched as DomainConfig['sched'],
    maxGrantFrames: int(c.maxGrantFrames ?? 32, 'maxGrantFrames', 1, 4096),
    maxEventChannels: int(c.maxEventChannels ?? 1023, 'maxEventChannels', 1, EVTCHN_FIFO_NR_CHANNELS - 1),
    seclabel: optString(c.seclabel, 'seclabel'),
    initSeclabel: optString(c.initSeclabel, 'initSeclabel'),
    disks: (c.disks ?? []) as DomainConfig['disks'],
    vifs: (c.vifs ?? []) as DomainConfig['vifs'],
    autostart: (c.autostart as boolean | undefined) ?? false,
    ...(exclusiveMs ? { exclusiveMs } : {}),
  };
}

export function checkObject(v: unknown, what: string): Record<string, unknown> {
  if (v === undefined) return {};
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw einval(`${what} must be an object`);
  return v as Record<string, unknown>;
}
