// What a vbd's data lives in, as blkback sees it: bytes at offsets, a flush,
// a discard that leaves zeros. A raw image file or block device is read and
// written directly (async fs, off the event loop); any other format goes
// through QEMU's qemu-nbd, which knows the format, over NBD on a Unix socket
// (a well-kept engine rather than a qcow2 reader of our own).

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as libc from '../../kvm/libc.js';
import { NbdClient } from './nbd.js';

export interface BlockImage {
  /** size in bytes */
  readonly size: bigint;
  /** fills `b` from byte `pos` (past the end: zeros) */
  read(b: Uint8Array, pos: number): Promise<void>;
  write(b: Uint8Array, pos: number): Promise<void>;
  /** what was written is durable */
  flush(): Promise<void>;
  /** the range reads back as zeros afterwards, its space given back where the image can */
  discard(pos: number, len: number): Promise<void>;
  close(): Promise<void>;
}

/** The formats qemu-nbd takes (xl-disk-configuration's format=, raw aside). */
export const NBD_FORMATS = ['qcow2', 'qcow', 'vhd', 'qed'] as const;
export type ImageFormat = 'raw' | (typeof NBD_FORMATS)[number];

/** Opens `target` as `format`: a raw file or device directly, anything else through qemu-nbd. */
export function openImage(target: string, format: ImageFormat, readOnly: boolean): Promise<BlockImage> {
  return format === 'raw' ? FileImage.open(target, readOnly) : NbdImage.open(target, format, readOnly);
}

const ZERO_CHUNK = 1 << 20;

export class FileImage implements BlockImage {
  private zeros: Uint8Array | null = null;
  private constructor(private readonly f: FileHandle, readonly size: bigint) {}

  static async open(target: string, readOnly: boolean): Promise<FileImage> {
    const f = await open(target, readOnly ? 'r' : 'r+');
    try {
      return new FileImage(f, await sizeOf(f, target));
    } catch (e) {
      await f.close();
      throw e;
    }
  }

  async read(b: Uint8Array, pos: number): Promise<void> {
    for (let done = 0; done < b.length; ) {
      const { bytesRead } = await this.f.read(b, done, b.length - done, pos + done);
      if (bytesRead === 0) { b.fill(0, done); return; }
      done += bytesRead;
    }
  }

  async write(b: Uint8Array, pos: number): Promise<void> {
    for (let done = 0; done < b.length; ) {
      const { bytesWritten } = await this.f.write(b, done, b.length - done, pos + done);
      done += bytesWritten;
    }
  }

  flush(): Promise<void> {
    return this.f.datasync();
  }

  /** A hole punched (fallocate off the event loop; a block device zeroes the range), else zeros written in bounded chunks. */
  async discard(pos: number, len: number): Promise<void> {
    if (await punchHole(this.f.fd, pos, len)) return;
    this.zeros ??= new Uint8Array(ZERO_CHUNK);
    for (let done = 0; done < len; done += ZERO_CHUNK) await this.write(this.zeros.subarray(0, Math.min(ZERO_CHUNK, len - done)), pos + done);
  }

  close(): Promise<void> {
    return this.f.close();
  }
}

/** A regular file's size, or a block device's from sysfs (stat gives it 0). */
async function sizeOf(f: FileHandle, target: string): Promise<bigint> {
  const st = await f.stat({ bigint: true });
  if (st.isFile()) return st.size;
  if (st.isBlockDevice()) {
    // linux/kdev_t.h: new_encode_dev
    const rdev = Number(st.rdev);
    const major = (rdev >> 8) & 0xfff, minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    return BigInt(readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'latin1').trim()) * 512n;
  }
  throw new Error(`${target} is neither a regular file nor a block device`);
}

/** fallocate(PUNCH_HOLE | KEEP_SIZE) off the event loop: whether the range is a hole now. */
function punchHole(fd: number, pos: number, len: number): Promise<boolean> {
  return new Promise((resolve) => {
    libc.fallocateAsync(fd, libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE, pos, len, (err: unknown, r: number) => resolve(!err && r === 0));
  });
}

/** How long qemu-nbd may take to open the image and listen. */
const NBD_START_MS = 10_000;

export class NbdImage implements BlockImage {
  private constructor(private readonly c: NbdClient, private readonly proc: ChildProcess, private readonly dir: string) {}

  get size(): bigint { return this.c.size; }

  /**
   * Starts qemu-nbd on `target` (its own process, the image's format its
   * business) on a private Unix socket and connects to it. Its complaint is
   * the error when it cannot open the image.
   */
  static async open(target: string, format: ImageFormat, readOnly: boolean): Promise<NbdImage> {
    const dir = mkdtempSync(path.join(tmpdir(), 'xenode-nbd-'));
    const sock = path.join(dir, 'sock');
    const args = ['--socket', sock, '--format', format, '--cache', 'writeback', '--discard', 'unmap', ...(readOnly ? ['--read-only'] : []), target];
    const proc = spawn('qemu-nbd', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let exited: string | null = null;
    proc.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    const spawned = new Promise<void>((resolve, reject) => {
      proc.once('spawn', resolve);
      proc.once('error', (e: NodeJS.ErrnoException) => reject(new Error(e.code === 'ENOENT' ? 'qemu-nbd not found: it serves the non-raw formats (apt-get install qemu-utils)' : `qemu-nbd: ${e.message}`)));
    });
    proc.once('exit', (code, sig) => { exited = `qemu-nbd exited (${sig ?? code})`; });
    const fail = (e: Error) => {
      proc.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      return e;
    };
    try {
      await spawned;
    } catch (e) {
      throw fail(e as Error);
    }
    const end = Date.now() + NBD_START_MS;
    for (;;) {
      if (exited) throw fail(new Error(`${exited}: ${stderr.trim().replace(/^qemu-nbd: /, '')}`));
      try {
        const c = await NbdClient.connect(sock);
        if (!readOnly && c.readOnly) {
          c.close();
          throw fail(new Error(`qemu-nbd serves ${target} read-only`));
        }
        return new NbdImage(c, proc, dir);
      } catch (e) {
        const msg = (e as Error).message;
        if (!msg.includes('ENOENT') && !msg.includes('ECONNREFUSED')) {
          // qemu-nbd listens before it opens the image: a connection it drops is usually its failure, said on stderr
          for (let i = 0; i < 100 && !exited; i++) await sleep(10);
          throw fail(exited ? new Error(`${exited}: ${stderr.trim().replace(/^qemu-nbd: /, '')}`) : (e as Error));
        }
      }
      if (Date.now() > end) throw fail(new Error(`qemu-nbd did not listen within ${NBD_START_MS} ms: ${stderr.trim()}`));
      await sleep(10);
    }
  }

  async read(b: Uint8Array, pos: number): Promise<void> {
    const size = Number(this.c.size);
    const n = Math.max(0, Math.min(b.length, size - pos));
    if (n) await this.c.read(b.subarray(0, n), pos);
    b.fill(0, n);
  }

  write(b: Uint8Array, pos: number): Promise<void> {
    return this.c.write(b, pos);
  }

  flush(): Promise<void> {
    return this.c.flush();
  }

  async discard(pos: number, len: number): Promise<void> {
    // NBD lengths are 32-bit
    for (let done = 0; done < len; ) {
      const n = Math.min(len - done, 1 << 30);
      if (!(await this.c.writeZeroes(pos + done, n))) {
        const zeros = new Uint8Array(Math.min(ZERO_CHUNK, n));
        for (let d = 0; d < n; d += zeros.length) await this.c.write(zeros.subarray(0, Math.min(zeros.length, n - d)), pos + done + d);
      }
      done += n;
    }
  }

  async close(): Promise<void> {
    this.c.close();
    const gone = new Promise<void>((r) => { if (this.proc.exitCode !== null || this.proc.signalCode !== null) r(); else this.proc.once('exit', () => r()); });
    this.proc.kill('SIGTERM');
    await Promise.race([gone, sleep(2000).then(() => { this.proc.kill('SIGKILL'); return gone; })]);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
