// xl network-list (xl_nic.c main_networklist): each vif of each domain named,
// from the domain's frontend directories in xenstore as
// libxl_device_nic_getinfo reads them (a node that is not there shows -1:
// a frontend with split event channels has no event-channel).

import { ApiCallError } from '../../daemon/client.js';
import { SocketClient } from '../../xenstored/client.js';
import type { XlCommand } from '../command.js';
import { isDomid, qualifierDomid } from './common.js';

const num = (v: string | undefined): number => (v !== undefined && /^\d+$/.test(v) ? Number(v) : -1);

export const networkList: XlCommand = {
  name: 'network-list',
  desc: 'List virtual network interfaces for a domain',
  usage: '<Domain(s)>',
  minArgs: 1,
  async run(ctx, _v, args) {
    const c = await ctx.client();
    const { path } = await c.call('xenstore.socket', {});
    const xs = await SocketClient.connect(path);
    try {
      // "%-3s %-2s %-17s %-6s %-5s %-6s %5s/%-5s %-30s\n"
      ctx.out(`${'Idx'.padEnd(3)} ${'BE'.padEnd(2)} ${'Mac Addr.'.padEnd(17)} ${'handle'.padEnd(6)} ${'state'.padEnd(5)} ${'evt-ch'.padEnd(6)} ${'tx-'.padStart(5)}/${'rx-ring-ref'.padEnd(5)} ${'BE-path'.padEnd(30)}\n`);
      for (const a of args) {
        let domid: number;
        if (isDomid(a)) domid = qualifierDomid(a);
        else {
          try {
            domid = (await c.call('domain.resolve', { dom: a })).domid;
          } catch (e) {
            if (!(e instanceof ApiCallError && e.code === 'ENOENT')) throw e;
            ctx.err(`${a} is an invalid domain identifier\n`);
            continue;
          }
        }
        const dir = `/local/domain/${domid}/device/vif`;
        const devs = (await xs.directory(dir).catch(() => [] as string[])).filter((x) => /^\d+$/.test(x)).sort((x, y) => Number(x) - Number(y));
        for (const dev of devs) {
          const fe = `${dir}/${dev}`;
          const [be, beId, mac, state, evtch, tx, rx] = await Promise.all(['backend', 'backend-id', 'mac', 'state', 'event-channel', 'tx-ring-ref', 'rx-ring-ref'].map((k) => xs.tryRead(`${fe}/${k}`)));
          const id = Number(dev);
          // "%-3d %-2d " LIBXL_MAC_FMT "%6d %5d %6d %5d/%-11d %-30s\n"
          ctx.out(`${String(id).padEnd(3)} ${String(num(beId)).padEnd(2)} ${mac ?? '00:00:00:00:00:00'}${String(id).padStart(6)} ${String(num(state)).padStart(5)} ${String(num(evtch)).padStart(6)} ${String(num(tx)).padStart(5)}/${String(num(rx)).padEnd(11)} ${(be ?? '').padEnd(30)}\n`);
        }
      }
    } finally {
      xs.close();
    }
    return 0;
  },
};
