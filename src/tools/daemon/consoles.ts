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
  /** output waiting for the disk beyond which it is not logged (default 1 MiB) */
  backlogBytes?: number;
}

export class DomainConsole {
  private readonly readers = new Set<ConsoleReader>();
  private tailChunks: Buffer[] = [];
  private tailLen = 0;
  /**
   * The log is written off the main thread, in order: output queues here and
   * one writer drains it through a file handle opened at the first byte and
   * kept until the domain is gone (creating a file took ~0.4 ms of the main
   * thread on the dev machine, as long as the rest of a small guest's create).
   */
  private queue: Buffer[] = [];
  private queued = 0;
  private writer: Promise<void> | null = null;
  private fh: fs.promises.FileHandle | null = null;
  private fileLen = 0;
  /** bytes not logged because the disk fell behind by more than the cap (readers still got them) */
  dropped = 0;
  private ended = false;
  private firstByte: ((t: number) => void) | null = null;
  private readonly fileBytes: number;
  private readonly tailBytes: number;
  private readonly backlogBytes: number;

  constructor(private file: string, o: ConsoleLogOptions = {}) {
    this.fileBytes = o.fileBytes ?? 1 << 20;
    this.tailBytes = o.tailBytes ?? 16 << 10;
    this.backlogBytes = o.backlogBytes ?? 1 << 20;
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
    // a disk that cannot keep up must not grow the daemon without bound
    if (this.queued + b.length > this.backlogBytes) {
      this.dropped += b.length;
      return;
    }
    this.queue.push(b);
    this.queued += b.length;
    this.writer ??= this.drain();
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length) {
        if (!this.fh) await this.openLog();
        if (this.fileLen + this.queue[0]!.length > this.fileBytes && this.fileLen > 0) {
          await this.closeLog();
          await fs.promises.rename(this.file, this.file + '.1');
          await this.openLog();
        }
        // as many queued writes as fit before the cap, in one write
        let n = 0;
        let len = 0;
        while (n < this.queue.length && (n === 0 || this.fileLen + len + this.queue[n]!.length <= this.fileBytes)) len += this.queue[n++]!.length;
        const parts = this.queue.splice(0, n);
        this.queued -= len;
        await this.fh!.write(n === 1 ? parts[0]! : Buffer.concat(parts, len));
        this.fileLen += len;
      }
    } catch {
      // a full or read-only disk must not take the console down: readers still get the output
      this.queue = [];
      this.queued = 0;
    } finally {
      this.writer = null;
      if (this.ended) await this.closeLog();
    }
  }

  private async openLog(): Promise<void> {
    const file = this.file;
    this.fh = await fs.promises.open(file, 'a', 0o600);
    // renamed while the open was in flight: the file follows the name
    if (this.file !== file) await fs.promises.rename(file, this.file).catch(() => {});
    this.fileLen = (await this.fh.stat()).size;
  }

  private async closeLog(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    await fh?.close().catch(() => { /* already closed */ });
  }

  /** Resolves once everything written so far is in the log file. */
  async flushed(): Promise<void> {
    while (this.writer) await this.writer;
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
    // (a rotation in flight at this moment leaves its .1 file under the old name)
    try { fs.renameSync(this.file, file); } catch { /* nothing written yet */ }
    this.file = file;
  }

  /** The domain died: every reader gets `end`. */
  end(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.writer) void this.closeLog();
    for (const r of this.readers) r.end(reason);
    this.readers.clear();
  }
}

/** The per-name log path under <state>/console/. */
export function consoleLogPath(stateDir: string, name: string): string {
  return path.join(stateDir, 'console', `${name}.log`);
}
