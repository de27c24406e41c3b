// xl network-list (xl_nic.c main_networklist): each vif of each domain named,
// from the domain's frontend directories in xenstore as
// libxl_device_nic_getinfo reads them (a node that is not there shows -1:
// a frontend with split event channels has no event-channel).

import type { XlCommand } from '../command.js';
import { listDevices, nodeNumber } from './common.js';

export const networkList: XlCommand = {
  name: 'network-list',
  desc: 'List virtual network interfaces for a domain',
  usage: '<Domain(s)>',
  minArgs: 1,
  run(ctx, _v, args) {
    // "%-3s %-2s %-17s %-6s %-5s %-6s %5s/%-5s %-30s\n"
    const header = `${'Idx'.padEnd(3)} ${'BE'.padEnd(2)} ${'Mac Addr.'.padEnd(17)} ${'handle'.padEnd(6)} ${'state'.padEnd(5)} ${'evt-ch'.padEnd(6)} ${'tx-'.padStart(5)}/${'rx-ring-ref'.padEnd(5)} ${'BE-path'.padEnd(30)}`;
    return listDevices(ctx, args, 'vif', header, async (read, _domid, id) => {
      const [be, beId, mac, state, evtch, tx, rx] = await Promise.all(['backend', 'backend-id', 'mac', 'state', 'event-channel', 'tx-ring-ref', 'rx-ring-ref'].map(read));
      const n = (v: string | undefined, w: number) => String(nodeNumber(v)).padStart(w);
      // "%-3d %-2d " LIBXL_MAC_FMT "%6d %5d %6d %5d/%-11d %-30s\n"
      return `${String(id).padEnd(3)} ${String(nodeNumber(beId)).padEnd(2)} ${mac ?? '00:00:00:00:00:00'}${String(id).padStart(6)} ${n(state, 5)} ${n(evtch, 6)} ${n(tx, 5)}/${String(nodeNumber(rx)).padEnd(11)} ${(be ?? '').padEnd(30)}`;
    });
  },
};
