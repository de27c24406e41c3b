// Test support: Debian's kernel and busybox fetched by scripts/fetch-linux.sh,
// and a busybox initramfs built in memory (cpio "newc" + gzip, as the kernel's
// initramfs unpacker reads it: init/initramfs.c, Documentation/driver-api/early-userspace/buffer-format.rst).

import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import type { TestContext } from 'node:test';
import { root } from './xenode.js';
import { havePeer } from './peers.js';

export const linuxDir = path.join(root, '.cache', 'linux');
/** The kernel as Debian ships it (a bzImage). */
export const linuxBzImage = path.join(linuxDir, 'vmlinuz');
/** The PVH ELF inside it. */
export const linuxElf = path.join(linuxDir, 'vmlinux');
export const busyboxPath = path.join(linuxDir, 'busybox');

/** Debian's xen-netfront module, for an initramfs that loads it. */
export const netfrontModule = path.join(linuxDir, 'modules', 'xen-netfront.ko');

/** The start of a network test's /init: the file systems, xen-netfront loaded from the initramfs, eth0 waited for (20 s) and its MAC said. */
export const NETFRONT_INIT = `
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
insmod /xen-netfront.ko || echo "net: insmod failed"
for i in $(seq 1 200); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
echo "net: mac $(cat /sys/class/net/eth0/address)"
`;

/** Whether the kernel and busybox are there (in CI: fails the test when not; elsewhere skips loudly). */
export function haveLinux(t: TestContext): boolean {
  return havePeer(t, existsSync(linuxElf) && existsSync(linuxBzImage) && existsSync(busyboxPath),
    "Debian's cloud kernel and busybox-static in .cache/linux", 'scripts/fetch-linux.sh');
}

export interface CpioEntry {
  /** path inside the archive, without a leading slash */
  name: string;
  /** S_IFDIR/S_IFREG/S_IFLNK/S_IFCHR bits and permissions */
  mode: number;
  /** a file's contents, or a symlink's target */
  data?: Uint8Array | string;
  /** a device node's major and minor */
  rdev?: [number, number];
}

export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;

const hex8 = (n: number): string => (n >>> 0).toString(16).padStart(8, '0');
const pad4 = (n: number): number => (4 - (n % 4)) % 4;

/**
 * A cpio archive in the "newc" format: per entry a 110-byte ASCII header
 * ("070701" and 13 eight-digit hex fields), the NUL-terminated name padded to 4
 * bytes, the data padded to 4 bytes; ended by the entry "TRAILER!!!".
 */
export function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const mtime = 0; // reproducible archives
  let ino = 1;
  const one = (e: CpioEntry) => {
    const data = typeof e.data === 'string' ? Buffer.from(e.data) : Buffer.from(e.data ?? new Uint8Array());
    const name = Buffer.from(e.name + '\0');
    const [maj, min] = e.rdev ?? [0, 0];
    const nlink = (e.mode & 0o170000) === S_IFDIR ? 2 : 1;
    const fields = [ino++, e.mode, 0, 0, nlink, mtime, data.length, 0, 0, maj, min, name.length, 0];
    const hdr = Buffer.from('070701' + fields.map(hex8).join(''), 'ascii');
    parts.push(hdr, name, Buffer.alloc(pad4(hdr.length + name.length)), data, Buffer.alloc(pad4(data.length)));
  };
  for (const e of entries) one(e);
  one({ name: 'TRAILER!!!', mode: 0 });
  return Buffer.concat(parts);
}

/** The busybox applets the tests' scripts call (links in /bin). */
const APPLETS = ['sh', 'init', 'cat', 'echo', 'ls', 'mount', 'umount', 'poweroff', 'reboot', 'halt', 'nproc', 'grep', 'sleep', 'uname', 'date', 'dmesg', 'head', 'sed', 'tr', 'wc', 'true', 'false', 'test', '[', 'seq', 'printf', 'setsid', 'cttyhack', 'insmod', 'mkdir', 'sync', 'dd', 'od', 'md5sum', 'blkdiscard', 'ifconfig', 'ping', 'ip', 'nc', 'cut'];

export interface InitramfsOptions {
  /** a shell script run as /init (busybox sh); without one, /init is busybox's own init, which reads /etc/inittab */
  init?: string;
  /** more files, by path inside the archive (text executable when it starts with #!) */
  files?: Record<string, string | Uint8Array>;
}

/**
 * A gzip'd initramfs: busybox in /bin with its applet links, /dev/console,
 * /proc, /sys, /etc and /init.
 */
export function busyboxInitramfs(opts: InitramfsOptions, busybox: Uint8Array = readFileSync(busyboxPath)): Buffer {
  const file = (name: string, data: string | Uint8Array): CpioEntry => ({ name, mode: S_IFREG | (typeof data === 'string' && data.startsWith('#!') ? 0o755 : 0o644), data });
  const entries: CpioEntry[] = [
    { name: 'bin', mode: S_IFDIR | 0o755 },
    { name: 'bin/busybox', mode: S_IFREG | 0o755, data: busybox },
    ...APPLETS.map((a) => ({ name: `bin/${a}`, mode: S_IFLNK | 0o777, data: 'busybox' })),
    // Linux's orderly_poweroff and orderly_reboot run /sbin/poweroff and /sbin/reboot
    { name: 'sbin', mode: S_IFLNK | 0o777, data: 'bin' },
    { name: 'dev', mode: S_IFDIR | 0o755 },
    // the kernel opens /dev/console for init's stdio before any devtmpfs is mounted
    { name: 'dev/console', mode: S_IFCHR | 0o600, rdev: [5, 1] },
    { name: 'proc', mode: S_IFDIR | 0o755 },
    { name: 'sys', mode: S_IFDIR | 0o755 },
    { name: 'tmp', mode: S_IFDIR | 0o1777 },
    { name: 'etc', mode: S_IFDIR | 0o755 },
    opts.init !== undefined
      ? file('init', opts.init.startsWith('#!') ? opts.init : `#!/bin/sh\n${opts.init}`)
      : { name: 'init', mode: S_IFLNK | 0o777, data: 'bin/busybox' },
    ...Object.entries(opts.files ?? {}).map(([name, text]) => file(name.replace(/^\/+/, ''), text)),
  ];
  return gzipSync(cpioNewc(entries), { level: 1 });
}
