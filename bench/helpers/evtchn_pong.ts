// The answering end of bench/evtchn.ts's guest <-> backend round trip, as a
// process domain of its own: started with the privileged stream on fd 3
// (as a driver domain is), it allocates a port for the guest, says it on
// stdout, and answers every event with one back until the stream closes.
//
//   node dist/bench/helpers/evtchn_pong.js <its domid> <the guest's domid> (bench/evtchn.ts starts it)

import net from 'node:net';
import { processDevices } from '../../src/tools/libs/process_devices.js';
import type { XsClientBase } from '../../src/tools/xenstored/client.js';

const [domid, guest] = process.argv.slice(2).map(Number);
const devices = processDevices(domid!, new net.Socket({ fd: 3, readable: true, writable: true }), null as unknown as XsClientBase);
let port = 0;
port = await devices.evtchn.allocUnbound(guest!, () => devices.evtchn.notify(port));
console.log(`port ${port}`);
await devices.closed;
