// Test support: a network namespace of the test's own (`ip netns add`), so
// the bridges, taps and addresses a test makes never reach the host's, and
// are gone with it. Commands run in it through `ip netns exec`; this
// process's own calls can be made in it for a moment with run(), which moves
// the calling (main) thread there (setns(2) is per thread) and back.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';
import koffi from 'koffi';
import * as libc from '../kvm/libc.js';
import { havePeer, which } from './peers.js';

const setns = koffi.load('libc.so.6').func('int setns(int fd, int nstype)') as (fd: number, t: number) => number;
const CLONE_NEWNET = 0x40000000;

/** Whether this process may make namespaces, bridges and taps (root, /dev/net/tun, ip(8)); in CI, a test fails without. */
export function haveNetAdmin(t: TestContext): boolean {
  let tun = false;
  try {
    accessSync('/dev/net/tun', constants.R_OK | constants.W_OK);
    tun = true;
  } catch { /* absent */ }
  return havePeer(t, process.getuid?.() === 0 && tun && which('ip') !== null,
    'root (CAP_NET_ADMIN), /dev/net/tun and ip(8) for a network namespace with a bridge and taps', 'run the test as root on a host with the tun driver and iproute2');
}

export class Netns {
  private constructor(readonly name: string) {}

  static create(prefix = 'xenode'): Netns {
    const name = `${prefix}-${randomBytes(3).toString('hex')}`;
    execFileSync('ip', ['netns', 'add', name], { stdio: 'pipe', timeout: 10_000 });
    const ns = new Netns(name);
    ns.ip('link', 'set', 'lo', 'up');
    return ns;
  }

  /** `ip <args>` inside the namespace; its output */
  ip(...args: string[]): string {
    return execFileSync('ip', ['-n', this.name, ...args], { encoding: 'utf8', stdio: 'pipe', timeout: 10_000 });
  }

  /** A command run inside the namespace, to completion (bounded); its output */
  exec(cmd: string, args: string[], timeout = 20_000): string {
    return execFileSync('ip', ['netns', 'exec', this.name, cmd, ...args], { encoding: 'utf8', stdio: 'pipe', timeout });
  }

  /** A command started inside the namespace */
  spawn(cmd: string, args: string[]): ChildProcess {
    return spawn('ip', ['netns', 'exec', this.name, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /** `f` with the calling thread inside the namespace (what it opens there stays there), then back. */
  run<T>(f: () => T): T {
    const here = libc.check(libc.open('/proc/thread-self/ns/net', libc.O_CLOEXEC, 0), 'open /proc/thread-self/ns/net');
    const there = libc.open(`/run/netns/${this.name}`, libc.O_CLOEXEC, 0);
    try {
      libc.check(there, `open /run/netns/${this.name}`);
      libc.check(setns(there, CLONE_NEWNET), 'setns');
      try {
        return f();
      } finally {
        libc.check(setns(here, CLONE_NEWNET), 'setns back');
      }
    } finally {
      if (there >= 0) libc.close(there);
      libc.close(here);
    }
  }

  /** The interface's `ip -j -d link show` record, or null when there is none */
  link(dev: string): Record<string, unknown> | null {
    try {
      return (JSON.parse(this.ip('-j', '-d', 'link', 'show', 'dev', dev)) as Record<string, unknown>[])[0] ?? null;
    } catch {
      return null;
    }
  }

  delete(): void {
    if (existsSync(`/run/netns/${this.name}`)) execFileSync('ip', ['netns', 'delete', this.name], { stdio: 'pipe', timeout: 10_000 });
  }
}
