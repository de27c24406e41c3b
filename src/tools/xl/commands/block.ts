// xl block-list (xl_block.c main_blocklist): each disk of each domain named,
// from the domain's frontend directories in xenstore as
// libxl_device_disk_getinfo reads them (a node that is not there shows -1).

import { ApiCallError } from '../../daemon/client.js';
import { SocketClient } from '../../xenstored/client.js';
import type { XlCommand } from '../command.js';
import { isDomid, qualifierDomid } from './common.js';

const num = (v: string | undefined): number => (v !== undefined && /^\d+$/.test(v) ? Number(v) : -1);

export const blockList: XlCommand = {
  name: 'block-list',
  desc: 'List virtual block devices for a domain',
  usage: '<Domain(s)>',
  minArgs: 1,
  async run(ctx, _v, args) {
    const c = await ctx.client();
    const { path } = await c.call('xenstore.socket', {});
    const xs = await SocketClient.connect(path);
    try {
      const row = (...f: (string | number)[]) => [5, 3, 6, 5, 6, 8, 30].map((w, i) => String(f[i]).padEnd(w)).join(' ');
      ctx.out(`${row('Vdev', 'BE', 'handle', 'state', 'evt-ch', 'ring-ref', 'BE-path')}\n`);
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
        const dir = `/local/domain/${domid}/device/vbd`;
        const devs = (await xs.directory(dir).catch(() => [] as string[])).filter((x) => /^\d+$/.test(x)).sort((x, y) => Number(x) - Number(y));
        for (const dev of devs) {
          const fe = `${dir}/${dev}`;
          const [be, beId, state, evtch, rref] = await Promise.all(['backend', 'backend-id', 'state', 'event-channel', 'ring-ref'].map((k) => xs.tryRead(`${fe}/${k}`)));
          ctx.out(`${row(Number(dev), num(beId), domid, num(state), num(evtch), num(rref), be ?? '')}\n`);
        }
      }
    } finally {
      xs.close();
    }
    return 0;
  },
};
