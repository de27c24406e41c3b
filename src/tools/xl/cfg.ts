// xl.cfg: the domain configuration file format of Xen's xl (libxlu's
// parser, tools/libs/util/libxlu_cfg_l.l and _y.y), read into settings, then
// validated into the typed DomainConfig (config.ts) the toolstack works from,
// and written back out. Syntax and key semantics: docs/xl-cfg.md.

import { randomUUID } from 'node:crypto';
import { statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { EVTCHN_FIFO_NR_CHANNELS } from '../../hv/abi/event_channel.js';
import { EXCLUSIVE_MAX_MS } from '../../hv/abi/xenode_sched.js';
import type { DomainConfig, ShutdownAction } from './config.js';
import { DiskSpecError, parseDiskSpec, serialiseDiskSpec } from './disk.js';
import { VifSpecError, parseVifSpec, serialiseVifSpec } from './vif.js';

/** A malformed or invalid configuration: `file:line:col: reason`. */
export class XlCfgError extends Error {
  constructor(readonly file: string, readonly line: number, readonly col: number, readonly reason: string) {
    super(`${file}:${line}:${col}: ${reason}`);
    this.name = 'XlCfgError';
  }
}

export interface XlCfgPos { file: string; line: number; col: number }

/**
 * A value as written. libxlu keeps numbers as text (xl converts them with
 * strtol when a key wants a number), so a number keeps its text too.
 */
export type XlCfgValue =
  | { kind: 'string'; value: string; pos: XlCfgPos }
  | { kind: 'number'; text: string; value: bigint; pos: XlCfgPos }
  | { kind: 'list'; items: XlCfgValue[]; pos: XlCfgPos };

export interface XlCfgSetting {
  key: string;
  value: XlCfgValue;
  /** where the key was written (its last `=`, or the `+=` that last extended it) */
  pos: XlCfgPos;
  /** file settings resolve relative paths against the file's directory, command-line ones against the cwd */
  origin: 'file' | 'command line';
}

/** Parsed settings by key; a later `key = ...` replaces an earlier one, as in xl. */
export type XlCfg = Map<string, XlCfgSetting>;

/** The name command-line overrides are reported under; override N is line N. */
export const COMMAND_LINE = '<command line>';

/**
 * Parses an xl.cfg file, then each command-line `key=value` override as if
 * appended to it (`xl create cfg memory=64 'name="x"'`).
 */
export function parseXlCfg(text: string | Uint8Array, file: string, overrides: readonly string[] = []): XlCfg {
  const cfg: XlCfg = new Map();
  new Parser(decode(text, file), file, 1, 'file', cfg).parseFile();
  overrides.forEach((o, i) => new Parser(o, COMMAND_LINE, i + 1, 'command line', cfg).parseFile());
  return cfg;
}

function decode(text: string | Uint8Array, file: string): string {
  if (typeof text === 'string') return text;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(text);
  } catch {
    // Locate the first byte that does not decode, for the message.
    let line = 1;
    let col = 1;
    for (let i = 0; i < text.length; i++) {
      const len = utf8SequenceLength(text, i);
      if (len === 0) throw new XlCfgError(file, line, col, `invalid UTF-8 byte 0x${text[i].toString(16).padStart(2, '0')}`);
      if (text[i] === 0x0a) { line++; col = 1; } else col++;
      i += len - 1;
    }
    throw new XlCfgError(file, line, col, 'invalid UTF-8');
  }
}

/** Length of the valid UTF-8 sequence at i, 0 when it is not one. */
function utf8SequenceLength(b: Uint8Array, i: number): number {
  const c = b[i];
  if (c < 0x80) return 1;
  let n: number;
  let min: number;
  if (c >= 0xc2 && c <= 0xdf) { n = 2; min = 0x80; } else if (c >= 0xe0 && c <= 0xef) { n = 3; min = 0x800; } else if (c >= 0xf0 && c <= 0xf4) { n = 4; min = 0x10000; } else return 0;
  if (i + n > b.length) return 0;
  let cp = c & (0xff >> (n + 1));
  for (let k = 1; k < n; k++) {
    if ((b[i + k] & 0xc0) !== 0x80) return 0;
    cp = (cp << 6) | (b[i + k] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

// ---- lexer --------------------------------------------------------------

type Tok =
  | { t: 'ident'; text: string; line: number; col: number }
  | { t: 'number'; text: string; value: bigint; line: number; col: number }
  | { t: 'string'; value: string; line: number; col: number }
  | { t: '=' | '+=' | '[' | ']' | ',' | ';' | 'newline' | 'eof'; line: number; col: number };

const KEY = /^[a-z][._0-9a-z]*$/;
const NUMBER = /^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/;
/** Lists nested deeper than this are refused rather than risking the stack. */
const MAX_DEPTH = 32;

const SIMPLE_ESCAPES: Record<string, string> = {
  '"': '"', "'": "'", '\\': '\\', a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v',
};

class Lexer {
  private i = 0;
  private line: number;
  private col = 1;

  constructor(private readonly src: string, private readonly file: string, firstLine: number) {
    this.line = firstLine;
  }

  fail(line: number, col: number, reason: string): never {
    throw new XlCfgError(this.file, line, col, reason);
  }

  next(): Tok {
    const s = this.src;
    for (;;) {
      const c = s[this.i];
      if (c === ' ' || c === '\t' || c === '\r') { this.i++; this.col++; continue; }
      if (c === '#') {
        while (this.i < s.length && s[this.i] !== '\n') { this.i++; this.col++; }
        continue;
      }
      break;
    }
    const line = this.line;
    const col = this.col;
    if (this.i >= s.length) return { t: 'eof', line, col };
    const c = s[this.i];
    if (c === '\n') { this.i++; this.line++; this.col = 1; return { t: 'newline', line, col }; }
    if (c === '+' && s[this.i + 1] === '=') { this.advance(2); return { t: '+=', line, col }; }
    if (c === '=' || c === '[' || c === ']' || c === ',' || c === ';') { this.advance(1); return { t: c, line, col }; }
    if (c === '"' || c === "'") return this.string(c, line, col);
    if (/[0-9]/.test(c)) {
      const text = this.word();
      if (!NUMBER.test(text)) this.fail(line, col, `invalid number '${text}' (numbers are decimal, 0-prefixed octal or 0x-prefixed hex)`);
      return { t: 'number', text, value: BigInt(/^0[0-7]+$/.test(text) ? `0o${text.slice(1)}` : text), line, col };
    }
    if (/[A-Za-z_]/.test(c)) {
      const text = this.word();
      if (!KEY.test(text)) this.fail(line, col, `invalid key '${text}' (keys are lower-case letters, digits, '_' and '.', starting with a letter)`);
      return { t: 'ident', text, line, col };
    }
    const shown = c >= ' ' && c !== '\x7f' ? `'${c}'` : `'\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}'`;
    // libxlu gives the same hint: these characters usually mean a Python-era config.
    const hint = '-.():{}'.includes(c) ? ' (xl.cfg is not Python: values are numbers, quoted strings or [lists])' : '';
    this.fail(line, col, `unexpected character ${shown}${hint}`);
  }

  private advance(n: number): void { this.i += n; this.col += n; }

  private word(): string {
    const start = this.i;
    while (this.i < this.src.length && /[A-Za-z0-9_.]/.test(this.src[this.i])) this.advance(1);
    return this.src.slice(start, this.i);
  }

  private string(quote: string, line: number, col: number): Tok {
    const s = this.src;
    this.advance(1);
    let out = '';
    for (;;) {
      if (this.i >= s.length || s[this.i] === '\n') this.fail(line, col, 'unterminated string');
      const c = s[this.i];
      if (c === quote) { this.advance(1); return { t: 'string', value: out, line, col }; }
      if (c !== '\\') { out += c; this.advance(1); continue; }
      const escCol = this.col;
      const e = s[this.i + 1];
      if (e === undefined || e === '\n') this.fail(line, col, 'unterminated string');
      if (e in SIMPLE_ESCAPES) { out += SIMPLE_ESCAPES[e]; this.advance(2); continue; }
      let digits: string;
      let code: number;
      if (e === 'x') {
        digits = /^[0-9a-fA-F]{1,2}/.exec(s.slice(this.i + 2, this.i + 4))?.[0] ?? '';
        if (!digits) this.fail(this.line, escCol, "invalid escape '\\x': expected hex digits");
        code = parseInt(digits, 16);
        this.advance(2 + digits.length);
      } else if (e >= '0' && e <= '7') {
        digits = /^[0-7]{1,3}/.exec(s.slice(this.i + 1, this.i + 4))![0];
        code = parseInt(digits, 8);
        if (code > 0xff) this.fail(this.line, escCol, `octal escape '\\${digits}' is out of range`);
        this.advance(1 + digits.length);
      } else {
        this.fail(this.line, escCol, `unknown escape '\\${e}' in string`);
      }
      // Values end up in C strings (xenstore, the kernel command line): no NULs.
      if (code === 0) this.fail(this.line, escCol, 'a string cannot contain a NUL character');
      out += String.fromCharCode(code);
    }
  }
}

function describe(t: Tok): string {
  switch (t.t) {
    case 'ident': return `'${t.text}'`;
    case 'number': return `'${t.text}'`;
    case 'string': return `a string`;
    case 'newline': return 'end of line';
    case 'eof': return 'end of file';
    default: return `'${t.t}'`;
  }
}

// ---- parser -------------------------------------------------------------

class Parser {
  private readonly lex: Lexer;
  private peeked: Tok | null = null;

  constructor(src: string, private readonly file: string, firstLine: number,
              private readonly origin: XlCfgSetting['origin'], private readonly cfg: XlCfg) {
    this.lex = new Lexer(src, file, firstLine);
  }

  private next(): Tok {
    const t = this.peeked ?? this.lex.next();
    this.peeked = null;
    return t;
  }

  private peek(): Tok { return (this.peeked ??= this.lex.next()); }

  private fail(t: { line: number; col: number }, reason: string): never { this.lex.fail(t.line, t.col, reason); }

  parseFile(): void {
    for (;;) {
      const t = this.next();
      if (t.t === 'eof') return;
      if (t.t === 'newline' || t.t === ';') continue;
      if (t.t !== 'ident') this.fail(t, `expected a key, found ${describe(t)}`);
      let op: Tok;
      try {
        op = this.next();
      } catch (e) {
        // 'memory: 64' reads better as a missing '=' than as a stray ':'.
        if (e instanceof XlCfgError) this.fail(e, `expected '=' after key '${t.text}'`);
        throw e;
      }
      if (op.t !== '=' && op.t !== '+=') this.fail(op, `expected '=' after key '${t.text}'`);
      const value = this.value(this.next(), t.text, 0);
      const end = this.next();
      if (end.t !== 'newline' && end.t !== ';' && end.t !== 'eof') {
        this.fail(end, `expected end of statement after the value of '${t.text}', found ${describe(end)}`);
      }
      this.store(t.text, op.t, value, { file: this.file, line: t.line, col: t.col });
      if (end.t === 'eof') return;
    }
  }

  private value(t: Tok, key: string, depth: number): XlCfgValue {
    const pos = { file: this.file, line: t.line, col: t.col };
    if (t.t === 'string') return { kind: 'string', value: t.value, pos };
    if (t.t === 'number') return { kind: 'number', text: t.text, value: t.value, pos };
    if (t.t === '[') return this.list(pos, key, depth + 1);
    this.fail(t, `expected a value for '${key}', found ${describe(t)}`);
  }

  /** After '[': items separated by ',', newlines anywhere, a trailing ',' allowed. */
  private list(pos: XlCfgPos, key: string, depth: number): XlCfgValue {
    if (depth > MAX_DEPTH) this.fail(pos, `lists nested more than ${MAX_DEPTH} deep`);
    const items: XlCfgValue[] = [];
    const skipNewlines = () => { while (this.peek().t === 'newline') this.next(); };
    skipNewlines();
    if (this.peek().t === ']') { this.next(); return { kind: 'list', items, pos }; }
    for (;;) {
      const t = this.next();
      if (t.t === 'eof') this.fail(pos, `unclosed '[' in the value of '${key}'`);
      items.push(this.value(t, key, depth));
      skipNewlines();
      const sep = this.next();
      if (sep.t === ']') return { kind: 'list', items, pos };
      if (sep.t === 'eof') this.fail(pos, `unclosed '[' in the value of '${key}'`);
      if (sep.t !== ',') this.fail(sep, `expected ',' or ']' in the list for '${key}', found ${describe(sep)}`);
      skipNewlines();
      if (this.peek().t === ']') { this.next(); return { kind: 'list', items, pos }; }
    }
  }

  private store(key: string, op: '=' | '+=', value: XlCfgValue, pos: XlCfgPos): void {
    const prev = this.cfg.get(key);
    if (op === '+=' && prev) {
      // libxlu: += appends to a list, concatenates strings, and refuses to mix the two.
      const a = prev.value;
      if ((a.kind === 'list') !== (value.kind === 'list')) {
        const what = (v: XlCfgValue) => (v.kind === 'list' ? 'a list' : 'a single value');
        this.fail(value.pos, `cannot add ${what(value)} to '${key}', which is ${what(a)} (${a.pos.file}:${a.pos.line})`);
      }
      if (a.kind === 'list' && value.kind === 'list') {
        value = { kind: 'list', items: [...a.items, ...value.items], pos: a.pos };
      } else {
        value = { kind: 'string', value: atomText(a) + atomText(value), pos: a.pos };
      }
    }
    this.cfg.delete(key);
    this.cfg.set(key, { key, value, pos, origin: this.origin });
  }
}

function atomText(v: XlCfgValue): string {
  if (v.kind === 'string') return v.value;
  if (v.kind === 'number') return v.text;
  throw new Error('atomText on a list');
}

// ---- DomainConfig -------------------------------------------------------

export interface ToDomainConfigOptions {
  /** the config file's path (absolute, or relative to cwd): relative paths in it resolve against its directory */
  file?: string;
  /** resolves command-line paths and a relative `file`; default process.cwd() */
  cwd?: string;
  /** receives `file:line: message` for keys that are ignored */
  warn?: (msg: string) => void;
  /** pCPUs that cpus/cpus_soft may name; default os.availableParallelism() */
  hostCpus?: number;
  /** check that kernel and ramdisk are readable files (default true) */
  checkFiles?: boolean;
  /** random bytes for generated vif MACs (tests) */
  random?: (n: number) => Uint8Array;
}

export const DEFAULTS = {
  /** libxl's default target and maximum memory (LIBXL_MEMKB_DEFAULT -> 32 MiB) */
  memory: 32,
  vcpus: 1,
  /**
   * libxl takes the default from xl.conf, which takes Xen's gnttab_max_frames
   * (64 since Xen 4.13). The builder's own fallback of 32 only applies without a config.
   */
  maxGrantFrames: 64,
  /** libxl's default for event_channels */
  maxEventChannels: 1023,
  onPoweroff: 'destroy',
  onReboot: 'restart',
  onCrash: 'destroy',
  onWatchdog: 'destroy',
  onSoftReset: 'soft-reset',
} as const;

/** HVM_MAX_VCPUS (xen/include/public/hvm/hvm_info_table.h), the vCPU limit of an HVM/PVH domain. */
export const MAX_VCPUS = 128;
/**
 * libxl passes max_event_channels through as Xen's max_evtchn_port; the
 * highest port any ABI can name is FIFO's, EVTCHN_FIFO_NR_CHANNELS - 1
 * (xen/include/public/event_channel.h). Ports above 4095 need the guest to
 * switch to FIFO, as on Xen.
 */
const MAX_EVENT_CHANNELS = EVTCHN_FIFO_NR_CHANNELS - 1;
/** The daemon's limits (src/tools/daemon/validate.ts): 1 TiB of memory, 4096 grant-table frames. */
const MAX_MEMORY_MIB = 1 << 20;
const MAX_GRANT_FRAMES = 4096;
const MAX_NAME_BYTES = 64;
const INT_MAX = 0x7fffffff;

export const SHUTDOWN_ACTIONS: readonly ShutdownAction[] = [
  'destroy', 'restart', 'rename-restart', 'preserve', 'coredump-destroy', 'coredump-restart', 'soft-reset',
];

/** Keys xl reads that xl.cfg(5) gives to HVM or PV guests only (emulated devices, firmware, the PV shim). */
const NOT_FOR_PVH = [
  'acpi_s3', 'acpi_s4', 'acpi_laptop_slate', 'apic', 'bios', 'bios_path_override', 'boot', 'device_model',
  'device_model_args', 'device_model_args_hvm', 'device_model_args_pv', 'device_model_override',
  'device_model_stubdomain_override', 'device_model_stubdomain_seclabel', 'device_model_user', 'device_model_version',
  'e820_host', 'firmware', 'firmware_override', 'gfx_passthru', 'hdtype', 'hpet', 'hvm_pirq', 'keymap', 'localtime',
  'mmio_hole', 'nographic', 'nx', 'opengl', 'pae', 'pvshim', 'pvshim_cmdline', 'pvshim_extra', 'pvshim_path', 'rdm',
  'rdm_mem_boundary', 'sdl', 'serial', 'smbios', 'smbios_firmware', 'soundhw', 'spice', 'spice_clipboard_sharing',
  'spice_image_compression', 'spice_streaming_video', 'spiceagent_mouse', 'spicedisable_ticketing', 'spicehost',
  'spicepasswd', 'spiceport', 'spicetls_port', 'spiceusbredirection', 'spicevdagent', 'stdvga', 'stubdomain_cmdline',
  'stubdomain_kernel', 'stubdomain_memory', 'stubdomain_ramdisk', 'usb', 'usbdevice', 'usbversion', 'vendor_device',
  'vga', 'videoram', 'viridian', 'vkb_device', 'vnc', 'vncconsole', 'vncdisplay', 'vnclisten', 'vncpasswd',
  'vncunused', 'vncviewer', 'vpt_align', 'xen_platform_pci', 'acpi_firmware', 'mca_caps', 'ms_vm_genid', 'altp2mhvm',
];
/** Keys xl reads on Arm only. */
const ARM_ONLY = ['gic_version', 'vuart', 'sve', 'nr_spis', 'tee', 'llc_colors', 'trap_unmapped_accesses'];
/**
 * xl.cfg(5)'s PVH guest options (and its paging options) that xenode does
 * not take: why, and the value that asks for what xenode does anyway (no warning then).
 */
const PVH_NOT_TAKEN: Record<string, { why: string; matches?: bigint }> = {
  hap: { why: "KVM picks the paging mode: the CPU's nested paging where it has it, shadow paging otherwise" },
  nestedhvm: { why: 'xenode does not expose VMX/SVM to guests', matches: 0n },
  oos: { why: 'KVM decides how shadowed page tables are kept in sync' },
  shadow_memory: { why: 'KVM sizes its own paging structures' },
  timer_mode: { why: 'xenode emulates no platform timer for it to govern' },
  bootloader: { why: "xenode boots the PVH kernel named by 'kernel' directly" },
  bootloader_args: { why: "xenode boots the PVH kernel named by 'kernel' directly" },
  bootloader_restrict: { why: "xenode boots the PVH kernel named by 'kernel' directly" },
  bootloader_user: { why: "xenode boots the PVH kernel named by 'kernel' directly" },
};
/** Keys xl reads that xenode does not act on yet. */
const NOT_YET = [
  'altp2m', 'assisted_x2apic', 'assisted_xapic', 'channel', 'cpuid', 'dtdev', 'device_tree', 'driver_domain',
  'iomem', 'ioports', 'irqs', 'max_grant_version', 'max_maptrack_frames', 'msr_relaxed', 'nomigrate', 'p9', 'pci',
  'pci_msitranslate', 'pci_permissive', 'pci_power_mgmt', 'pci_seize', 'pvcalls', 'rtc_timeoffset', 'tsc_mode', 'vdispl',
  'vfb', 'virtio', 'vkb', 'vmtrace_buf_kb', 'vnuma', 'vsnd', 'vtpm', 'usbctrl', 'usbdev', 'xenstore_feature_mask',
  'xenstore_quota', 'passthrough', 'dm_restrict', 'vpmu', 'max_altp2m',
];

/** Validates parsed settings into a DomainConfig; throws XlCfgError at the offending value. */
export function toDomainConfig(cfg: XlCfg, opts: ToDomainConfigOptions = {}): DomainConfig {
  return new Converter(cfg, opts).run();
}

class Converter {
  private readonly used = new Set<string>();
  private readonly cwd: string;
  private readonly fileDir: string;
  private readonly warn: (msg: string) => void;
  private readonly hostCpus: number;

  constructor(private readonly cfg: XlCfg, private readonly opts: ToDomainConfigOptions) {
    this.cwd = opts.cwd ?? process.cwd();
    this.fileDir = opts.file ? path.dirname(path.resolve(this.cwd, opts.file)) : this.cwd;
    this.warn = opts.warn ?? (() => {});
    this.hostCpus = opts.hostCpus ?? availableParallelism();
  }

  private fail(at: XlCfgPos, reason: string): never { throw new XlCfgError(at.file, at.line, at.col, reason); }

  private warnAt(s: XlCfgSetting, msg: string): void { this.warn(`${s.pos.file}:${s.pos.line}: ${msg}`); }

  private setting(key: string): XlCfgSetting | undefined {
    this.used.add(key);
    return this.cfg.get(key);
  }

  /** A single value; a number is taken as its text, as xl does. */
  private string(key: string): { value: string; s: XlCfgSetting } | undefined {
    const s = this.setting(key);
    if (!s) return undefined;
    if (s.value.kind === 'list') this.fail(s.value.pos, `'${key}' must be a single value, not a list`);
    return { value: atomText(s.value), s };
  }

  /** A number, written as one or as a string holding one (xl converts both with strtol). */
  private number(key: string, min: number, max: number): number | undefined {
    const s = this.setting(key);
    if (!s) return undefined;
    return this.numberValue(key, s.value, min, max);
  }

  private numberValue(key: string, v: XlCfgValue, min: number, max: number): number {
    let n: bigint;
    if (v.kind === 'list') this.fail(v.pos, `'${key}' must be a number, not a list`);
    if (v.kind === 'number') n = v.value;
    else {
      const t = v.value.trim();
      if (!NUMBER.test(t)) this.fail(v.pos, `'${key}' must be a number, not the string ${JSON.stringify(v.value)}`);
      n = BigInt(/^0[0-7]+$/.test(t) ? `0o${t.slice(1)}` : t);
    }
    if (n < BigInt(min) || n > BigInt(max)) this.fail(v.pos, `'${key}' is ${n}, outside ${min}..${max}`);
    return Number(n);
  }

  private bool(key: string): boolean | undefined {
    const n = this.number(key, 0, INT_MAX);
    return n === undefined ? undefined : n !== 0;
  }

  private list(key: string): XlCfgValue[] | undefined {
    const s = this.setting(key);
    if (!s) return undefined;
    if (s.value.kind !== 'list') this.fail(s.value.pos, `'${key}' must be a list, e.g. ${key} = [ '...' ]`);
    return s.value.items;
  }

  private resolvePath(s: XlCfgSetting, p: string): string {
    return path.resolve(s.origin === 'file' ? this.fileDir : this.cwd, p);
  }

  private file(key: string): string | undefined {
    const v = this.string(key);
    if (!v) return undefined;
    if (v.value === '') this.fail(v.s.value.pos, `'${key}' is empty`);
    const abs = this.resolvePath(v.s, v.value);
    if (this.opts.checkFiles ?? true) {
      let ok = false;
      try { ok = statSync(abs).isFile(); } catch { /* reported below */ }
      if (!ok) this.fail(v.s.value.pos, `${key} '${abs}' is not a readable file`);
    }
    return abs;
  }

  private action(key: string, def: ShutdownAction): ShutdownAction {
    const v = this.string(key);
    if (!v) return def;
    if (!(SHUTDOWN_ACTIONS as readonly string[]).includes(v.value)) {
      this.fail(v.s.value.pos, `unknown ${key} action '${v.value}' (${SHUTDOWN_ACTIONS.join(', ')})`);
    }
    return v.value as ShutdownAction;
  }

  run(): DomainConfig {
    this.checkType();
    const name = this.name();
    const uuid = this.uuid();

    const memory = this.number('memory', 1, MAX_MEMORY_MIB) ?? DEFAULTS.memory;
    const maxmemAt = this.cfg.get('maxmem');
    const maxmem = this.number('maxmem', 1, MAX_MEMORY_MIB) ?? memory;
    if (maxmem < memory) this.fail(maxmemAt!.value.pos, `maxmem (${maxmem} MiB) must not be below memory (${memory} MiB)`);

    const vcpus = this.number('vcpus', 1, MAX_VCPUS) ?? DEFAULTS.vcpus;
    const maxvcpusAt = this.cfg.get('maxvcpus');
    const maxvcpus = this.number('maxvcpus', 1, MAX_VCPUS) ?? vcpus;
    if (maxvcpus < vcpus) this.fail(maxvcpusAt!.value.pos, `maxvcpus (${maxvcpus}) must not be below vcpus (${vcpus})`);

    const hard = this.affinity('cpus', maxvcpus);
    const soft = this.affinity('cpus_soft', maxvcpus);

    const kernel = this.file('kernel');
    if (kernel === undefined) {
      this.fail({ file: this.opts.file ?? firstFile(this.cfg), line: 1, col: 1 }, "no 'kernel': xenode boots PVH kernels directly (no bootloader), so kernel = \"path/to/image\" is required");
    }
    const ramdisk = this.file('ramdisk');

    const config: DomainConfig = {
      name, type: 'pvh', uuid, memory, maxmem, vcpus, maxvcpus,
      cpus: hard.all, cpusSoft: soft.all,
      kernel, cmdline: this.cmdline(),
      onPoweroff: this.action('on_poweroff', DEFAULTS.onPoweroff),
      onReboot: this.action('on_reboot', DEFAULTS.onReboot),
      onCrash: this.action('on_crash', DEFAULTS.onCrash),
      onWatchdog: this.action('on_watchdog', DEFAULTS.onWatchdog),
      onSoftReset: this.action('on_soft_reset', DEFAULTS.onSoftReset),
      sched: this.sched(maxvcpus),
      maxGrantFrames: this.number('max_grant_frames', 1, MAX_GRANT_FRAMES) ?? DEFAULTS.maxGrantFrames,
      maxEventChannels: this.number('max_event_channels', 1, MAX_EVENT_CHANNELS) ?? DEFAULTS.maxEventChannels,
      disks: this.disks(),
      vifs: this.vifs(),
      autostart: this.bool('autostart') ?? false,
    };
    if (hard.perVcpu) config.cpusPerVcpu = hard.perVcpu;
    if (soft.perVcpu) config.cpusSoftPerVcpu = soft.perVcpu;
    if (ramdisk !== undefined) config.ramdisk = ramdisk;
    const acpi = this.bool('acpi');
    if (acpi !== undefined) config.acpi = acpi;
    const exclusiveMs = this.number('exclusive_ms', 0, EXCLUSIVE_MAX_MS);
    if (exclusiveMs) config.exclusiveMs = exclusiveMs;
    const pool = this.string('pool');
    if (pool) {
      if (pool.value === '') this.fail(pool.s.value.pos, "'pool' is empty");
      config.pool = pool.value;
    }
    for (const [key, field] of [['seclabel', 'seclabel'], ['init_seclabel', 'initSeclabel']] as const) {
      const v = this.string(key);
      if (!v) continue;
      // A FLASK security context: user:role:type, optionally :level.
      if (!/^[^:\s]+:[^:\s]+:[^:\s]+(:\S+)?$/.test(v.value)) this.fail(v.s.value.pos, `${key} '${v.value}' is not a security label (user:role:type)`);
      config[field] = v.value;
    }
    this.warnUnused();
    return config;
  }

  private checkType(): void {
    const type = this.string('type');
    const builder = this.string('builder');
    const pvh = this.bool('pvh');
    const refuse = (at: XlCfgPos, t: string): never => {
      if (t === 'pv') this.fail(at, 'type "pv" is not supported: xenode runs PVH guests only (PV needs Xen\'s paravirtualised MMU); use type = "pvh" with a PVH-capable kernel');
      if (t === 'hvm') this.fail(at, 'type "hvm" is not supported: xenode runs PVH guests only (HVM needs a device model and firmware); use type = "pvh" with a PVH-capable kernel');
      this.fail(at, `unknown type '${t}' (xl knows pv, pvh and hvm; xenode runs pvh)`);
    };
    if (type) {
      if (type.value !== 'pvh') refuse(type.s.value.pos, type.value);
      if (builder) this.warnAt(builder.s, "'builder' is ignored when 'type' is given");
      return;
    }
    // Before 'type' (Xen < 4.10) the builder and pvh keys chose the guest type.
    if (pvh) return;
    if (builder) {
      if (builder.value === 'hvm') refuse(builder.s.value.pos, 'hvm');
      if (builder.value === 'generic') refuse(builder.s.value.pos, 'pv');
      this.fail(builder.s.value.pos, `unknown builder '${builder.value}' (xenode runs PVH guests: use type = "pvh")`);
    }
  }

  private name(): string {
    const v = this.string('name');
    if (!v) this.fail({ file: this.opts.file ?? firstFile(this.cfg), line: 1, col: 1 }, "no 'name': every domain needs one (name = \"...\")");
    const n = v.value;
    const at = v.s.value.pos;
    if (n === '') this.fail(at, 'the domain name is empty');
    if (Buffer.byteLength(n) > MAX_NAME_BYTES) this.fail(at, `the domain name is longer than ${MAX_NAME_BYTES} bytes`);
    if (n.includes('/') || [...n].some((ch) => ch < ' ' || ch === '\x7f')) this.fail(at, `the domain name ${JSON.stringify(n)} contains '/' or a control character`);
    if (n.trim() !== n) this.fail(at, `the domain name ${JSON.stringify(n)} starts or ends with white space`);
    // xl commands take a name or a domid: an all-digit name would be ambiguous.
    if (/^[0-9]+$/.test(n)) this.fail(at, `the domain name '${n}' is all digits, which xl would read as a domain id`);
    if (n === 'Domain-0') this.fail(at, "'Domain-0' is the control domain's name");
    return n;
  }

  private uuid(): string {
    const v = this.string('uuid');
    if (!v) return randomUUID();
    if (!/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/.test(v.value)) {
      this.fail(v.s.value.pos, `invalid uuid '${v.value}' (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx in hex)`);
    }
    return v.value.toLowerCase();
  }

  /** cmdline, else xl's composition of root and extra. */
  private cmdline(): string {
    const cmdline = this.string('cmdline');
    const root = this.string('root');
    const extra = this.string('extra');
    if (cmdline) {
      if (root || extra) this.warnAt(cmdline.s, "'root' and 'extra' are ignored in favour of 'cmdline'");
      return cmdline.value;
    }
    if (root && extra) return `root=${root.value} ${extra.value}`;
    if (root) return `root=${root.value}`;
    return extra?.value ?? '';
  }

  /**
   * cpus / cpus_soft: a string such as "all", "0-3,^2", "node:0" for every
   * vCPU, or a list with one such entry per vCPU (vCPUs past the list may
   * run anywhere). `all` is the union, the bound the whole domain keeps to.
   */
  private affinity(key: string, maxvcpus: number): { all: number[] | null; perVcpu?: (number[] | null)[] } {
    const s = this.setting(key);
    if (!s) return { all: null };
    if (s.value.kind !== 'list') return { all: this.cpuSet(key, s.value) };
    if (s.value.items.length > maxvcpus) {
      this.fail(s.value.pos, `'${key}' has ${s.value.items.length} entries but the domain has ${maxvcpus} vCPUs`);
    }
    const perVcpu = s.value.items.map((item) => this.cpuSet(key, item));
    let all: number[] | null = null;
    if (perVcpu.length === maxvcpus && perVcpu.every((p) => p !== null)) {
      all = [...new Set(perVcpu.flatMap((p) => p!))].sort((a, b) => a - b);
      if (all.length === this.hostCpus) all = null;
    }
    return { all, perVcpu };
  }

  private cpuSet(key: string, v: XlCfgValue): number[] | null {
    if (v.kind === 'list') this.fail(v.pos, `'${key}' entries must be strings such as "0-3,^2", not lists`);
    try {
      return parseCpuSet(atomText(v), this.hostCpus);
    } catch (e) {
      if (e instanceof CpuSetError) this.fail(v.pos, `${key}: ${e.message}`);
      throw e;
    }
  }

  private sched(maxvcpus: number): DomainConfig['sched'] {
    const sched: DomainConfig['sched'] = {};
    const weight = this.number('cpu_weight', 1, 65535);
    if (weight !== undefined) sched.weight = weight;
    // A cap is a percentage of one pCPU, so at most 100 per vCPU.
    const cap = this.number('cap', 0, 100 * maxvcpus);
    if (cap !== undefined) sched.cap = cap;
    for (const key of ['period', 'slice', 'latency'] as const) {
      const n = this.number(key, 0, INT_MAX);
      if (n !== undefined) sched[key] = n;
    }
    const extratime = this.number('extratime', 0, 1);
    if (extratime !== undefined) sched.extratime = extratime;
    return sched;
  }

  private disks(): DomainConfig['disks'] {
    const items = this.list('disk') ?? [];
    const seen = new Map<string, XlCfgPos>();
    return items.map((item) => {
      if (item.kind === 'list') this.fail(item.pos, 'disk entries must be strings');
      let disk;
      try {
        disk = parseDiskSpec(atomText(item));
      } catch (e) {
        if (e instanceof DiskSpecError) this.fail(item.pos, `disk ${JSON.stringify(atomText(item))}: ${e.message}`);
        throw e;
      }
      const prev = seen.get(disk.vdev);
      if (prev) this.fail(item.pos, `disk: vdev '${disk.vdev}' is already used by the disk at ${prev.line}:${prev.col}`);
      seen.set(disk.vdev, item.pos);
      // The target is kept as written: what it names (file, device, script argument) is the backend's business.
      return disk;
    });
  }

  private vifs(): DomainConfig['vifs'] {
    const items = this.list('vif') ?? [];
    const seen = new Set<number>();
    return items.map((item, index) => {
      if (item.kind === 'list') this.fail(item.pos, 'vif entries must be strings');
      let vif;
      try {
        vif = parseVifSpec(atomText(item), {
          devid: index, random: this.opts.random,
          warn: (msg) => this.warn(`${item.pos.file}:${item.pos.line}: vif: ${msg}`),
        });
      } catch (e) {
        if (e instanceof VifSpecError) this.fail(item.pos, `vif ${JSON.stringify(atomText(item))}: ${e.message}`);
        throw e;
      }
      if (seen.has(vif.devid!)) this.fail(item.pos, `vif: devid ${vif.devid} is already used`);
      seen.add(vif.devid!);
      return vif;
    });
  }

  private warnUnused(): void {
    for (const s of this.cfg.values()) {
      if (this.used.has(s.key)) continue;
      const pvh = PVH_NOT_TAKEN[s.key];
      if (pvh) {
        if (pvh.matches !== undefined && s.value.kind === 'number' && s.value.value === pvh.matches) continue;
        this.warnAt(s, `'${s.key}' is not supported by xenode (${pvh.why}); ignored`);
      } else if (NOT_FOR_PVH.includes(s.key)) this.warnAt(s, `'${s.key}' does not apply to PVH guests on xenode; ignored`);
      else if (ARM_ONLY.includes(s.key)) this.warnAt(s, `'${s.key}' is an Arm option; ignored on x86`);
      else if (NOT_YET.includes(s.key)) this.warnAt(s, `'${s.key}' is not supported by xenode yet; ignored`);
      else this.warnAt(s, `unknown key '${s.key}' ignored`);
    }
  }

}

function firstFile(cfg: XlCfg): string {
  for (const s of cfg.values()) return s.pos.file;
  return COMMAND_LINE;
}

export class CpuSetError extends Error {}

/**
 * xl's CPU set syntax: comma-separated entries applied in order, each a CPU
 * `3`, a range `0-3`, `all`, or `node:N`/`nodes:N-M`, and `^` before an
 * entry removes it. xenode presents the host as one NUMA node, node 0.
 * Returns null when every host CPU is in the set (no restriction).
 */
export function parseCpuSet(spec: string, hostCpus: number): number[] | null {
  const set = new Set<number>();
  const range = (text: string, what: string, limit: number): [number, number] => {
    const m = /^([0-9]+)(?:-([0-9]+))?$/.exec(text);
    if (!m) throw new CpuSetError(`invalid ${what} '${text}' in ${JSON.stringify(spec)}`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (lo > hi) throw new CpuSetError(`${what} range '${text}' runs backwards`);
    if (hi >= limit) {
      throw new CpuSetError(what === 'CPU'
        ? `CPU ${hi} does not exist (this host has ${hostCpus}: 0-${hostCpus - 1})`
        : `NUMA node ${hi} does not exist (xenode presents the host as a single node 0)`);
    }
    return [lo, hi];
  };
  const entries = spec.split(',').map((e) => e.trim());
  for (const entry of entries) {
    if (entry === '') throw new CpuSetError(`empty entry in ${JSON.stringify(spec)}`);
    const remove = entry.startsWith('^');
    const body = remove ? entry.slice(1) : entry;
    let lo: number;
    let hi: number;
    const node = /^nodes?:(.*)$/.exec(body);
    if (body === 'all') [lo, hi] = [0, hostCpus - 1];
    else if (node) { range(node[1], 'node', 1); [lo, hi] = [0, hostCpus - 1]; } else [lo, hi] = range(body, 'CPU', hostCpus);
    for (let c = lo; c <= hi; c++) {
      if (remove) set.delete(c); else set.add(c);
    }
  }
  if (set.size === 0) throw new CpuSetError(`${JSON.stringify(spec)} leaves no CPU`);
  if (set.size === hostCpus) return null;
  return [...set].sort((a, b) => a - b);
}

/** "0-3,5" for [0,1,2,3,5]; "all" for null. */
export function formatCpuSet(cpus: readonly number[] | null): string {
  if (cpus === null) return 'all';
  const out: string[] = [];
  for (let i = 0; i < cpus.length; ) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j] + 1) j++;
    out.push(i === j ? `${cpus[i]}` : `${cpus[i]}-${cpus[j]}`);
    i = j + 1;
  }
  return out.join(',');
}

// ---- writing ------------------------------------------------------------

/** A double-quoted xl.cfg string that the lexer reads back unchanged. */
export function quoteXlCfgString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"' || ch === '\\') out += `\\${ch}`;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

/**
 * A DomainConfig as xl.cfg text (for `xl list -l`-like output and persisted
 * configs). Every field is written out, so parsing it gives back the same
 * config whatever the defaults.
 */
export function serialiseXlCfg(c: DomainConfig): string {
  const q = quoteXlCfgString;
  const lines: string[] = [
    `name = ${q(c.name)}`,
    `type = ${q(c.type)}`,
    `uuid = ${q(c.uuid)}`,
    `memory = ${c.memory}`,
    `maxmem = ${c.maxmem}`,
    `vcpus = ${c.vcpus}`,
    `maxvcpus = ${c.maxvcpus}`,
  ];
  const affinity = (key: string, all: number[] | null, perVcpu: (number[] | null)[] | undefined) => {
    if (perVcpu) lines.push(`${key} = [ ${perVcpu.map((p) => q(formatCpuSet(p))).join(', ')} ]`);
    else if (all) lines.push(`${key} = ${q(formatCpuSet(all))}`);
  };
  affinity('cpus', c.cpus, c.cpusPerVcpu);
  affinity('cpus_soft', c.cpusSoft, c.cpusSoftPerVcpu);
  lines.push(`kernel = ${q(c.kernel)}`);
  if (c.ramdisk !== undefined) lines.push(`ramdisk = ${q(c.ramdisk)}`);
  if (c.acpi !== undefined) lines.push(`acpi = ${c.acpi ? 1 : 0}`);
  lines.push(
    `cmdline = ${q(c.cmdline)}`,
    `on_poweroff = ${q(c.onPoweroff)}`,
    `on_reboot = ${q(c.onReboot)}`,
    `on_crash = ${q(c.onCrash)}`,
    `on_watchdog = ${q(c.onWatchdog)}`,
    `on_soft_reset = ${q(c.onSoftReset)}`,
  );
  if (c.pool !== undefined) lines.push(`pool = ${q(c.pool)}`);
  const s = c.sched;
  if (s.weight !== undefined) lines.push(`cpu_weight = ${s.weight}`);
  for (const key of ['cap', 'period', 'slice', 'latency', 'extratime'] as const) {
    if (s[key] !== undefined) lines.push(`${key} = ${s[key]}`);
  }
  lines.push(`max_grant_frames = ${c.maxGrantFrames}`, `max_event_channels = ${c.maxEventChannels}`);
  if (c.seclabel !== undefined) lines.push(`seclabel = ${q(c.seclabel)}`);
  if (c.initSeclabel !== undefined) lines.push(`init_seclabel = ${q(c.initSeclabel)}`);
  const list = (key: string, items: string[]) => {
    if (items.length) lines.push(`${key} = [\n${items.map((i) => `    ${q(i)},\n`).join('')}]`);
  };
  list('disk', c.disks.map(serialiseDiskSpec));
  list('vif', c.vifs.map(serialiseVifSpec));
  lines.push(`autostart = ${c.autostart ? 1 : 0}`);
  if (c.exclusiveMs) lines.push(`exclusive_ms = ${c.exclusiveMs}`);
  return `${lines.join('\n')}\n`;
}
