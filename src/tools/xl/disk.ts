// One `disk = [...]` entry in xl-disk-configuration(5) syntax (libxlu's
// libxlu_disk_l.l): positional target, format, vdev, access; key=value
// parameters and flags anywhere; `target=` last, taking the rest of the
// string. Each parameter may be given once; an empty value means the default.

import type { DiskSpec } from './config.js';

export class DiskSpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DiskSpecError';
  }
}

const FORMATS = ['raw', 'qcow', 'qcow2', 'vhd', 'qed'] as const;
const BACKENDTYPES = ['phy', 'qdisk', 'standalone', 'tap'] as const;
const POSITIONAL = ['target', 'format', 'vdev', 'access'] as const;
const NAMED = ['format', 'vdev', 'access', 'backend', 'backendtype', 'devtype', 'script', 'specification'] as const;
/** Deprecated `prefix:` forms before the target, and what each one means. */
const PREFIXES: Record<string, { format?: DiskSpec['format']; script?: string }> = {
  raw: { format: 'raw' }, qcow: { format: 'qcow' }, qcow2: { format: 'qcow2' }, vhd: { format: 'vhd' },
  iscsi: { script: 'block-iscsi' }, nbd: { script: 'block-nbd' }, enbd: { script: 'block-enbd' }, drbd: { script: 'block-drbd' },
  tapdisk: {}, tap: {}, tap2: {}, aio: {}, ioemu: {}, file: {}, phy: {},
};
/** The control domain, the default backend (libxl: backend_domid 0). */
export const DEFAULT_DISK_BACKEND = '0';

/**
 * Virtual device names (xen-vbd-interface(7)): xvd<letters>[<partition>],
 * hd/sd<letter>[<partition>], d<disk>[p<partition>].
 */
export function isValidVdev(vdev: string): boolean {
  return /^xvd[a-z]{1,4}[0-9]{0,3}$/.test(vdev) || /^(hd|sd)[a-z][0-9]{0,2}$/.test(vdev) || /^d[0-9]{1,6}(p[0-9]{1,3})?$/.test(vdev);
}

/** Parses one disk spec; throws DiskSpecError naming the offending parameter. */
export function parseDiskSpec(spec: string): DiskSpec {
  const got = new Map<string, string>();
  const flags = new Set<string>();
  const set = (name: string, value: string) => {
    if (got.has(name)) throw new DiskSpecError(`parameter '${name}' given twice`);
    got.set(name, value);
  };
  let deprecatedPrefix = false;
  let rest = spec;
  while (rest.length > 0) {
    rest = rest.replace(/^[ \t\n]+/, '');
    if (rest.startsWith('target=')) {
      // The target may contain commas: it takes everything after it.
      set('target', rest.slice('target='.length).replace(/,$/, ''));
      break;
    }
    const comma = rest.indexOf(',');
    const param = (comma < 0 ? rest : rest.slice(0, comma)).trim();
    rest = comma < 0 ? '' : rest.slice(comma + 1);
    const kv = /^([a-z][-a-z0-9]*)=(.*)$/s.exec(param);
    if (kv) {
      const [, key, value] = kv;
      if (!(NAMED as readonly string[]).includes(key)) throw new DiskSpecError(unknownParameter(key));
      set(key, value.trim());
      continue;
    }
    if (['direct-io-safe', 'discard', 'no-discard', 'trusted', 'untrusted', 'cdrom'].includes(param)) {
      if (flags.has(param)) throw new DiskSpecError(`flag '${param}' given twice`);
      flags.add(param);
      continue;
    }
    if (param === 'colo') throw new DiskSpecError('COLO disk replication is not supported by xenode');
    if (param.includes('=')) throw new DiskSpecError(`malformed parameter '${param}'`);
    // A positional parameter fills the next slot not yet given (by position or by name).
    let value = param;
    if (!got.has('target')) {
      for (let m; (m = /^([a-z][a-z0-9]*):/.exec(value)); ) {
        const prefix = PREFIXES[m[1]];
        if (!prefix) {
          if (deprecatedPrefix) break; // e.g. nbd:host:port, the rest is the target
          throw new DiskSpecError(`unknown deprecated disk prefix '${m[1]}:'`);
        }
        deprecatedPrefix = true;
        if (prefix.format) set('format', prefix.format);
        if (prefix.script) set('script', prefix.script);
        value = value.slice(m[0].length);
      }
      set('target', value);
      continue;
    }
    // After a deprecated prefix the format position is skipped: 'phy:/dev/x,xvda,w'.
    const slot = POSITIONAL.find((p) => !got.has(p) && !(p === 'format' && deprecatedPrefix));
    if (!slot) throw new DiskSpecError(`too many positional parameters at '${param}'`);
    set(slot, value);
  }

  // The format first: a misplaced vdev shows up here ('/img,xvda,w').
  const format = got.get('format') || 'raw';
  if (!(FORMATS as readonly string[]).includes(format)) {
    throw new DiskSpecError(`unknown format '${format}' (${FORMATS.join(', ')})${isValidVdev(format) ? `; a vdev in second place needs an empty format first: 'target,,${format}'` : ''}`);
  }
  let vdev = got.get('vdev') ?? '';
  let cdrom = flags.has('cdrom');
  if (vdev.endsWith(':cdrom')) { cdrom = true; vdev = vdev.slice(0, -':cdrom'.length); }
  const devtype = got.get('devtype');
  if (devtype !== undefined && devtype !== '') {
    if (devtype !== 'cdrom') throw new DiskSpecError(`unknown devtype '${devtype}' (xl knows only cdrom)`);
    cdrom = true;
  }
  if (!vdev) throw new DiskSpecError('no vdev specified');
  if (!isValidVdev(vdev)) throw new DiskSpecError(`invalid vdev '${vdev}' (xvdX, hdX, sdX or dNpM, see xen-vbd-interface(7))`);

  let access: DiskSpec['access'];
  const a = got.get('access') ?? '';
  if (a === '') access = cdrom ? 'r' : 'rw';
  else if (a === 'r' || a === 'ro') access = 'r';
  else if (a === 'w' || a === 'rw') access = 'rw';
  else throw new DiskSpecError(`unknown access '${a}' (r, ro, w or rw)`);
  if (cdrom && access === 'rw') throw new DiskSpecError('a cdrom is read-only: access must be r or ro');

  const target = got.get('target') ?? '';
  if (target === '' && !cdrom) throw new DiskSpecError('no target specified (only a cdrom may be empty)');

  const disk: DiskSpec = {
    target,
    format: format as DiskSpec['format'],
    vdev,
    access,
    devtype: cdrom ? 'cdrom' : 'disk',
    backend: got.get('backend') || DEFAULT_DISK_BACKEND,
    directIoSafe: flags.has('direct-io-safe'),
    trusted: !flags.has('untrusted'),
  };
  if (flags.has('trusted') && flags.has('untrusted')) throw new DiskSpecError("both 'trusted' and 'untrusted' given");
  if (flags.has('discard') && flags.has('no-discard')) throw new DiskSpecError("both 'discard' and 'no-discard' given");
  if (flags.has('discard')) disk.discard = true;
  if (flags.has('no-discard')) disk.discard = false;
  const backendtype = got.get('backendtype');
  if (backendtype) {
    if (!(BACKENDTYPES as readonly string[]).includes(backendtype)) {
      throw new DiskSpecError(`unknown backendtype '${backendtype}' (${BACKENDTYPES.join(', ')})`);
    }
    disk.backendtype = backendtype as DiskSpec['backendtype'];
  }
  const script = got.get('script');
  if (script) disk.script = script;
  const specification = got.get('specification');
  if (specification) {
    if (specification !== 'xen' && specification !== 'virtio') throw new DiskSpecError(`unknown specification '${specification}' (xen or virtio)`);
    disk.specification = specification;
  }
  return disk;
}

function unknownParameter(key: string): string {
  if (key === 'colo-host' || key === 'colo-port' || key === 'colo-export' || key === 'active-disk' || key === 'hidden-disk') {
    return 'COLO disk replication is not supported by xenode';
  }
  return `unknown parameter '${key}'`;
}

/** The spec in key=value form, target last, so parseDiskSpec gives back the same DiskSpec. */
export function serialiseDiskSpec(d: DiskSpec): string {
  const parts = [`format=${d.format}`, `vdev=${d.vdev}`, `access=${d.access}`];
  if (d.devtype === 'cdrom') parts.push('devtype=cdrom');
  if (d.backend !== DEFAULT_DISK_BACKEND) parts.push(`backend=${d.backend}`);
  if (d.backendtype) parts.push(`backendtype=${d.backendtype}`);
  if (d.script) parts.push(`script=${d.script}`);
  if (d.specification) parts.push(`specification=${d.specification}`);
  if (d.directIoSafe) parts.push('direct-io-safe');
  if (d.discard !== undefined) parts.push(d.discard ? 'discard' : 'no-discard');
  if (!d.trusted) parts.push('untrusted');
  parts.push(`target=${d.target}`);
  return parts.join(', ');
}
