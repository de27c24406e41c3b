// `xenode driver-domain --domid N --name NAME`: a driver domain's process.
// The toolstack that starts it hands it two streams: fd 3, the hypervisor's
// privileged interface as domain N (hv/privcmd.ts), and fd 4, its xenstore
// connection as domain N. It serves the device backends the toolstack puts
// in its backend directory, and exits when either stream closes (the
// toolstack then destroys its domain, and may start it again).

import net from 'node:net';
import { parseArgs } from 'node:util';
import { SocketClient } from '../xenstored/client.js';
import { processDevices } from '../libs/process_devices.js';
import { BackendProbe } from './probe.js';

const USAGE = `usage: xenode driver-domain --domid N --name NAME
  started by the toolstack with the privileged interface on fd 3 and xenstore on fd 4`;

export const PRIVCMD_FD = 3;
export const XENSTORE_FD = 4;

export async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: { domid: { type: 'string' }, name: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true }));
  } catch (e) {
    console.error(`driver-domain: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const domid = Number(values.domid);
  if (!Number.isInteger(domid) || domid < 1 || !values.name) {
    console.error(`driver-domain: --domid (a domain id) and --name are required\n${USAGE}`);
    return 2;
  }
  const name = values.name;
  const log = (line: string) => process.stderr.write(`d${domid} (${name}): ${line}\n`);
  let priv: net.Socket, xsSock: net.Socket;
  try {
    priv = new net.Socket({ fd: PRIVCMD_FD, readable: true, writable: true });
    xsSock = new net.Socket({ fd: XENSTORE_FD, readable: true, writable: true });
  } catch (e) {
    console.error(`driver-domain: fds ${PRIVCMD_FD} and ${XENSTORE_FD} are not the streams a toolstack gives a driver domain: ${(e as Error).message}`);
    return 2;
  }
  const xs = SocketClient.over(xsSock);
  const devices = processDevices(domid, priv, xs);
  const probe = new BackendProbe(devices, log);
  const ended = new Promise<string>((resolve) => {
    devices.closed.then(() => resolve('the privileged interface closed'));
    xsSock.once('close', () => resolve('xenstore closed'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  try {
    await probe.start();
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
  return 0;
}
