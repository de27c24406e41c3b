// The thread that waits for the host's tap devices to have frames to read.
// A tap's file descriptor is a character device: libuv can only read it with
// a blocking read on its threadpool, which would hold one of its four threads
// per vif for as long as the vif lives. Instead this one thread poll(2)s every
// armed tap of the process (and an eventfd the main thread writes to when the
// set changes), disarms each that is readable and tells the main thread,
// which reads it dry without blocking (O_NONBLOCK) and arms it again. So one
// thread serves any number of vifs, at most one notice per tap is ever in
// flight, and a tap whose guest is slow is simply not read (its frames wait,
// bounded, in the kernel's queue). Nothing is read or copied here.

import { parentPort, workerData } from 'node:worker_threads';
import * as libc from '../../kvm/libc.js';

// ctl (Int32): [0] stop, then from `hdr` a pair per slot: the tap's fd (-1: free), armed (1) or not (0)
const { ctl, wakeFd, hdr: TAP_POLL_HDR } = workerData as { ctl: SharedArrayBuffer; wakeFd: number; hdr: number };
const TAP_POLL_STOP = 0;
const c = new Int32Array(ctl);
const slots = (c.length - TAP_POLL_HDR) / 2;
const POLLIN = 1;
const pfds = new Uint8Array(8 * (slots + 1));
const dv = new DataView(pfds.buffer);
const slotOf = new Int32Array(slots + 1);
const drain = new Uint8Array(8);
/** A bound on each wait: a stop the eventfd failed to announce is still seen. */
const POLL_MS = 500;

while (!Atomics.load(c, TAP_POLL_STOP)) {
  let n = 0;
  const put = (fd: number, slot: number) => {
    dv.setInt32(8 * n, fd, true);
    dv.setInt16(8 * n + 4, POLLIN, true);
    dv.setInt16(8 * n + 6, 0, true);
    slotOf[n++] = slot;
  };
  put(wakeFd, -1);
  for (let i = 0; i < slots; i++) {
    const fd = Atomics.load(c, TAP_POLL_HDR + 2 * i);
    if (fd >= 0 && Atomics.load(c, TAP_POLL_HDR + 2 * i + 1)) put(fd, i);
  }
  const r = libc.poll(pfds, n, POLL_MS);
  if (r < 0) {
    if (libc.errno() === libc.EINTR) continue;
    parentPort!.postMessage({ error: `poll: ${libc.strerror(libc.errno())}` });
    break;
  }
  if (r === 0) continue;
  if (dv.getInt16(6, true)) libc.read(wakeFd, drain, 8);
  const ready: number[] = [];
  for (let j = 1; j < n; j++) {
    // readable, or hung up / invalid (a tap closed under the poll): the main thread's read tells which
    if (!dv.getInt16(8 * j + 6, true)) continue;
    Atomics.store(c, TAP_POLL_HDR + 2 * slotOf[j]! + 1, 0);
    ready.push(slotOf[j]!);
  }
  if (ready.length) parentPort!.postMessage(ready);
}
