// `xenode driver-domain --domid N --name NAME`: a driver domain's process.
// The toolstack that starts it hands it two streams: fd 3, the hypervisor's
// privileged interface as domain N (hv/privcmd.ts), and fd 4, its xenstore
// connection as domain N; and an IPC channel (fd 5) on which a new xenstore
// stream comes when xenstored was killed and started again. It serves the
// device backends the toolstack puts in its backend directory, and exits
// when the privileged stream closes or xenstore is gone for good (the
// toolstack then destroys its domain, and may start it again).
//
// `xenode driver-domain --connect SOCKET --name NAME`: the same, started by
// someone else: it connects to the daemon's privileged socket
// (xenode-privcmd.sock beside its API socket), is given its domid and a
// socket for its xenstore connection, and serves until it disconnects.

import net from 'node:net';
import { parseArgs } from 'node:util';
import { ReconnectingClient, SocketClient, type XsClientBase } from '../xenstored/client.js';
import { processDevices } from '../libs/process_devices.js';
import { BackendProbe } from './probe.js';
import { encodeFrame, FrameSplitter } from '../../hv/privcmd.js';

const USAGE = `usage: xenode driver-domain --domid N --name NAME     (started by the toolstack: fds 3, 4 and 5)
       xenode driver-domain --connect SOCKET --name NAME  (a daemon's privileged socket, xenode-privcmd.sock)`;

/** Says hello on the privileged socket; the domid and the xenstore socket the toolstack gives, or why not. */
async function connect(socketPath: string, name: string): Promise<{ priv: net.Socket; xsSock: net.Socket; domid: number }> {
  const priv = net.createConnection(socketPath);
  await new Promise<void>((resolve, reject) => { priv.once('connect', resolve); priv.once('error', reject); });
  priv.write(encodeFrame({ op: 'hello', name, pid: process.pid }));
  const frames = new FrameSplitter();
  const answer = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const onData = (b: Buffer) => {
      frames.push(b);
      const f = frames.next();
      if (!f) return;
      priv.off('data', onData);
      priv.pause();
      resolve(f.header);
    };
    priv.on('data', onData);
    priv.once('close', () => reject(new Error('the daemon closed the connection')));
  });
  if (answer.op !== 'welcome' || !Number.isInteger(answer.domid) || typeof answer.xenstore !== 'string') throw new Error(`refused: ${String(answer.why ?? JSON.stringify(answer))}`);
  const xsSock = net.createConnection(answer.xenstore);
  await new Promise<void>((resolve, reject) => { xsSock.once('connect', resolve); xsSock.once('error', reject); });
  return { priv, xsSock, domid: answer.domid as number };
}

export const PRIVCMD_FD = 3;
export const XENSTORE_FD = 4;

export async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: { domid: { type: 'string' }, name: { type: 'string' }, connect: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true }));
  } catch (e) {
    console.error(`driver-domain: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.name || (values.connect === undefined) === (values.domid === undefined)) {
    console.error(`driver-domain: --name, and either --domid (started by the toolstack) or --connect, are required\n${USAGE}`);
    return 2;
  }
  const name = values.name;
  let priv: net.Socket, xsSock: net.Socket, domid: number;
  if (values.connect !== undefined) {
    try {
      ({ priv, xsSock, domid } = await connect(values.connect, name));
    } catch (e) {
      console.error(`driver-domain: ${values.connect}: ${(e as Error).message}`);
      return 1;
    }
  } else {
    domid = Number(values.domid);
    if (!Number.isInteger(domid) || domid < 1) {
      console.error(`driver-domain: --domid must be a domain id\n${USAGE}`);
      return 2;
    }
    try {
      priv = new net.Socket({ fd: PRIVCMD_FD, readable: true, writable: true });
      xsSock = new net.Socket({ fd: XENSTORE_FD, readable: true, writable: true });
    } catch (e) {
      console.error(`driver-domain: fds ${PRIVCMD_FD} and ${XENSTORE_FD} are not the streams a toolstack gives a driver domain: ${(e as Error).message}`);
      return 2;
    }
  }
  const log = (line: string) => process.stderr.write(`d${domid} (${name}): ${line}\n`);
  // started by a toolstack with an IPC channel: when xenstored is started again, the toolstack hands over a
  // new stream there, and the connection goes on (its watches again, unanswered requests sent again)
  const launched = values.connect === undefined && typeof process.send === 'function';
  let xs: XsClientBase;
  let xsLost: Promise<string>;
  if (launched) {
    const streams = toolstackStreams(xsSock);
    const rc = await ReconnectingClient.over(streams, 'xenstored (a new stream from the toolstack)');
    rc.on('disconnected', () => log('xenstore connection lost; waiting for the toolstack\'s next stream'));
    rc.on('connected', (n: number) => { if (n > 1) log('xenstore connection back'); });
    xs = rc;
    xsLost = new Promise((resolve) => rc.once('failed', (e: Error) => resolve(`xenstore gone: ${e.message}`)));
  } else {
    xs = SocketClient.over(xsSock);
    xsLost = new Promise((resolve) => xsSock.once('close', () => resolve('xenstore closed')));
  }
  const devices = processDevices(domid, priv, xs);
  const probe = new BackendProbe(devices, log);
  const ended = new Promise<string>((resolve) => {
    devices.closed.then(() => resolve('the privileged interface closed'));
    void xsLost.then(resolve);
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  try {
    // a stream that closes (or a SIGTERM) while the first scan waits on it ends the process too
    const early = await Promise.race([probe.start().then(() => null), ended]);
    if (early !== null) {
      log(`stopping before it was up: ${early}`);
      devices.close();
      xs.close();
      return 1;
    }
  } catch (e) {
    log(`cannot start: ${(e as Error).message}`);
    return 1;
  }
  log(`driver domain up, serving ${probe.devicePaths.length} device(s)`);
  const why = await ended;
  log(`stopping: ${why}`);
  await Promise.race([probe.stop(), new Promise((r) => setTimeout(r, 2000))]);
  devices.close();
  xs.close();
  if (launched) process.disconnect();
  return 0;
}

/** The first xenstore stream (fd 4), then each one the toolstack sends over the IPC channel ({op: 'xenstore'} with a socket). */
function toolstackStreams(first: net.Socket): () => Promise<net.Socket> {
  let initial: net.Socket | null = first;
  const arrived: net.Socket[] = [];
  let wake: (() => void) | null = null;
  process.on('message', (m: { op?: string }, handle?: unknown) => {
    if (m?.op !== 'xenstore' || !(handle instanceof net.Socket)) return;
    arrived.push(handle);
    wake?.();
  });
  return async () => {
    if (initial) {
      const s = initial;
      initial = null;
      return s;
    }
    if (!arrived.length) {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => { wake = null; reject(new Error('no stream from the toolstack yet')); }, 1000);
        wake = () => { clearTimeout(t); wake = null; resolve(); };
      });
    }
    return arrived.shift()!;
  };
}
