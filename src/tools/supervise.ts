// What the toolstack's supervisors of its processes (driver domains,
// xenstored) share: how often one may die before it is left down, how long
// it has to come up, its stderr as lines, and the stream pair through which
// a connection reaches another process unread.

import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';

/** Restarts within this window count toward the limit; past it the process is left down, and said so. */
export const RESTART_WINDOW_MS = 60_000;
export const MAX_RESTARTS = 5;
/** How long a process the toolstack starts has to say it is up (node's start and its first work). */
export const START_TIMEOUT_MS = 20_000;

/** The deaths of one supervised process within RESTART_WINDOW_MS. */
export class RestartBudget {
  private deaths: number[] = [];

  /** Counts a death; false when it was one too many to start the process again. */
  died(now = Date.now()): boolean {
    this.deaths = this.deaths.filter((t) => now - t < RESTART_WINDOW_MS);
    this.deaths.push(now);
    return this.deaths.length <= MAX_RESTARTS;
  }

  /** What the log says when died() was false. */
  get why(): string {
    return `died ${this.deaths.length} times within ${RESTART_WINDOW_MS / 1000} s`;
  }
}

/** Calls `line` with each line `stream` writes; returns what it wrote so far (for an error that quotes it). */
export function eachLine(stream: Readable, line: (l: string) => void): () => string {
  let all = '', rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (text: string) => {
    all += text;
    rest += text;
    for (let nl = rest.indexOf('\n'); nl >= 0; nl = rest.indexOf('\n')) {
      line(rest.slice(0, nl));
      rest = rest.slice(nl + 1);
    }
  });
  return () => all;
}

/**
 * Two connected Unix sockets: `near` to hand to a child (one of its fds, or
 * over its IPC channel), `far` paused from the start (pauseOnConnect), so
 * not a byte of it is read in this process and another process can be
 * given it whole.
 */
export async function streamPair(): Promise<{ near: net.Socket; far: net.Socket }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xenode-pair-'));
  const sockPath = path.join(dir, 's');
  try {
    const server = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(sockPath, resolve); });
    const far = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    const near = net.createConnection(sockPath);
    await new Promise<void>((resolve, reject) => { near.once('connect', resolve); near.once('error', reject); });
    near.pause();
    const f = await far;
    server.close();
    return { near, far: f };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
