// console_io (public/xen.h CONSOLEIO_*): the hypervisor console. Domains
// flagged as console domains may write (and read Xen's console input);
// others get -EPERM, as the dummy XSM policy decides. Output is sanitised to
// printable characters and line-buffered, as Xen does for guests; port 0xE9
// output (Xen's hvm_print_line) takes the same way. These lines belong to the
// hypervisor console (`xl dmesg`), not to the domain's console, which is its
// PV console ring (tools/console.ts).

import { registerHypercall, Hcall } from './hypercall.js';
import { HYPERCALL } from './abi/xen.js';
import { EINVAL, ENOSYS, EPERM, XenError } from './errno.js';
import type { Domain } from './domain.js';

export const CONSOLEIO_write = 0;
export const CONSOLEIO_read = 1;

/**
 * A domain's line as the hypervisor console (`xl dmesg`) shows it: Xen's
 * guest_printk prefixes "(d<domid>) " where its own messages have "(XEN) ".
 */
export function guestConsoleLine(domid: number, text: string): string {
  return `(d${domid}) ${text}`;
}

/** Where finished console lines go (the worker forwards them to the control domain). */
export interface ConsoleSink {
  /** A line of output; `eol` is false for a partial line flushed at the domain's death. */
  line(dom: Domain, source: 'console_io' | 'debugport', text: string, eol: boolean): void;
}

let sink: ConsoleSink = { line: () => {} };
export function setConsoleSink(s: ConsoleSink): void {
  sink = s;
}

/** Input waiting for CONSOLEIO_read, per domain. */
const input = new Map<number, number[]>();
export function feedConsoleInput(domid: number, bytes: Uint8Array): void {
  const q = input.get(domid) ?? [];
  q.push(...bytes);
  input.set(domid, q);
}

function printable(c: number): boolean {
  return (c >= 0x20 && c < 0x7f) || c === 0x0a || c === 0x09;
}

/** Appends guest bytes to a line buffer, emitting each finished line. */
export function emitConsoleBytes(dom: Domain, source: 'console_io' | 'debugport', bytes: Uint8Array): void {
  let line = source === 'console_io' ? dom.consoleLine : dom.debugLine;
  for (const c of bytes) {
    if (c === 0x0a) {
      sink.line(dom, source, line, true);
      line = '';
    } else if (printable(c)) {
      line += String.fromCharCode(c);
      if (line.length >= 4096) { sink.line(dom, source, line, false); line = ''; }
    }
  }
  if (source === 'console_io') dom.consoleLine = line;
  else dom.debugLine = line;
}

/** Flushes partial lines (at domain death). */
export function flushConsole(dom: Domain): void {
  if (dom.consoleLine) sink.line(dom, 'console_io', dom.consoleLine, false);
  if (dom.debugLine) sink.line(dom, 'debugport', dom.debugLine, false);
  dom.consoleLine = dom.debugLine = '';
}

function consoleIo(h: Hcall): number {
  const cmd = h.int(0);
  const count = h.uint(1);
  const buf = h.ptr(2);
  if (cmd !== CONSOLEIO_write && cmd !== CONSOLEIO_read) throw new XenError(ENOSYS);
  if (h.dom.shared.get('isConsole') !== 1 && !h.dom.privileged) throw new XenError(EPERM);
  if (cmd === CONSOLEIO_write) {
    if (count > 1 << 20) throw new XenError(EINVAL);
    emitConsoleBytes(h.dom, 'console_io', h.g.read(buf, count));
    return 0;
  }
  const q = input.get(h.dom.domid);
  if (!q || q.length === 0 || count === 0) return 0;
  const n = Math.min(count, q.length);
  h.g.write(buf, Uint8Array.from(q.slice(0, n)));
  q.splice(0, n);
  return n;
}

registerHypercall(HYPERCALL.console_io, consoleIo);
