// The daemon's side of xenconsoled: for each domain, everything its console
// produces (the PV console ring and the hypervisor's console_io/debug-port
// lines) goes to a bounded log file, an in-memory tail for late readers, and
// every attached reader. The log is per domain name, so a restarted domain
// appends to the same file, as xenconsoled's guest-<name>.log does.

import fs from 'node:fs';
import path from 'node:path';

export interface ConsoleReader {
  data(b: Buffer): void;
  end(reason: string): void;
}

export interface ConsoleLogOptions {
  /** cap of the log file; beyond it the file is rotated to <file>.1 (default 1 MiB) */
  fileBytes?: number;
  /** bytes kept in memory for `replay` (default 16 KiB) */
  tailBytes?: number;
}

export class DomainConsole {
  private readonly readers = new Set<ConsoleReader>();
  private tailChunks: Buffer[] = [];
  private tailLen = 0;
  private fileLen = 0;
  /** the log, opened at the first byte and kept open until the domain is gone (an open per write cost more than the rest of a small guest's create) */
  private fd = -1;
  private ended = false;
  private firstByte: ((t: number) => void) | null = null;
  private readonly fileBytes: number;
  private readonly tailBytes: number;

  constructor(private file: string, o: ConsoleLogOptions = {}) {
    this.fileBytes = o.fileBytes ?? 1 << 20;
    this.tailBytes = o.tailBytes ?? 16 << 10;
  }

  get path(): string {
    return this.file;
  }

  /** Calls `f` with performance.now() when the next byte arrives (benchmarks, `create` timings). */
  onFirstByte(f: (t: number) => void): void {
    this.firstByte = f;
  }

  /** Output from the guest. */
  write(b: Buffer): void {
    if (b.length === 0 || this.ended) return;
    if (this.firstByte) {
      const f = this.firstByte;
      this.firstByte = null;
      f(performance.now());
    }
    for (const r of this.readers) r.data(b);
    this.tailChunks.push(b);
    this.tailLen += b.length;
    while (this.tailLen - this.tailChunks[0]!.length >= this.tailBytes) this.tailLen -= this.tailChunks.shift()!.length;
    this.appendFile(b);
  }

  private appendFile(b: Buffer): void {
    try {
      if (this.fd < 0) this.openLog();
      if (this.fileLen + b.length > this.fileBytes && this.fileLen > 0) {
        this.closeLog();
        fs.renameSync(this.file, this.file + '.1');
        this.openLog();
      }
      for (let off = 0; off < b.length;) off += fs.writeSync(this.fd, b, off);
      this.fileLen += b.length;
    } catch {
      // a full or read-only disk must not take the console down: readers still get the output
    }
  }

  private openLog(): void {
    this.fd = fs.openSync(this.file, 'a', 0o600);
    this.fileLen = fs.fstatSync(this.fd).size;
  }

  private closeLog(): void {
    if (this.fd < 0) return;
    try { fs.closeSync(this.fd); } catch { /* already closed */ }
    this.fd = -1;
  }

  /** The last bytes written (at most tailBytes, whole chunks). */
  tail(): Buffer {
    return Buffer.concat(this.tailChunks);
  }

  /** Adds a reader; returns its detach function. */
  attach(r: ConsoleReader): () => void {
    if (this.ended) {
      r.end('domain is gone');
      return () => {};
    }
    this.readers.add(r);
    return () => { this.readers.delete(r); };
  }

  get readerCount(): number {
    return this.readers.size;
  }

  /** The domain was renamed: its log follows the name (an open log stays open: the rename keeps the file). */
  rename(file: string): void {
    try { fs.renameSync(this.file, file); } catch { /* nothing written yet */ }
    this.file = file;
  }

  /** The domain died: every reader gets `end`. */
  end(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.closeLog();
    for (const r of this.readers) r.end(reason);
    this.readers.clear();
  }
}

/** The per-name log path under <state>/console/. */
export function consoleLogPath(stateDir: string, name: string): string {
  return path.join(stateDir, 'console', `${name}.log`);
}
