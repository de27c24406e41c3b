// Test support: real peers (Debian's xenstore-utils, Xen's test-xenstore and
// readnotes, python3-pyxs, GRUB's xen_pvh image...) that a test runs against.
// In CI (CI=true) a missing peer fails the test: a green run must mean the
// peer was exercised. Elsewhere it is skipped with a banner nobody can miss.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';

/** True when the run is CI's (.ci/run exports CI=true; so do the usual CI services). */
export const inCi = process.env['CI'] === 'true' || process.env['CI'] === '1';

/** A banner on stderr, which node --test shows in its output. */
export function banner(msg: string): void {
  process.stderr.write(`\n********************************************************************\n*** ${msg}\n********************************************************************\n\n`);
}

/**
 * Whether a peer is there. When it is not: in CI, fails the test with what is
 * missing and how to install it; elsewhere prints a banner, skips the test and
 * returns false (the caller returns at once).
 */
export function havePeer(t: TestContext, present: boolean, what: string, install: string): boolean {
  if (present) return true;
  const msg = `${what} is missing (${install})`;
  assert.ok(!inCi, `required in CI: ${msg}`);
  banner(`SKIPPED: ${t.name}: ${msg}`);
  t.skip(`SKIPPED LOUDLY: ${msg}`);
  return false;
}

/** Absolute path of an executable on PATH, or null. */
export function which(cmd: string): string | null {
  for (const dir of (process.env['PATH'] ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, cmd);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch { /* not here */ }
  }
  return null;
}

/** The python3 (Debian's, else the one on PATH) that can `import <module>`, or null. */
export function pythonHas(module: string): string | null {
  for (const py of ['/usr/bin/python3', which('python3')]) {
    if (!py || !existsSync(py)) continue;
    try {
      execFileSync(py, ['-c', `import ${module}`], { stdio: 'ignore', timeout: 30_000 });
      return py;
    } catch { /* try the next interpreter */ }
  }
  return null;
}
