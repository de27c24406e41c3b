// xl's block commands (xl_block.c): block-list reads each disk of each
// domain named from its frontend directory in xenstore, as
// libxl_device_disk_getinfo does (a node that is not there shows -1);
// block-attach and block-detach ask the daemon, which runs libxl's device
// addition and removal.

import { ApiCallError } from '../../daemon/client.js';
import { SocketClient } from '../../xenstored/client.js';
import type { XlCommand } from '../command.js';
import { findDomain, isDomid, qualifierDomid, reportDaemonError } from './common.js';
import { DiskSpecError, parseDiskSpec } from '../disk.js';

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

/** xl block-attach (main_blockattach): the components are one disk spec, as xlu_disk_parse takes several strings. */
export const blockAttach: XlCommand = {
  name: 'block-attach',
  modifies: true,
  desc: 'Create a new virtual block device',
  usage: '<Domain> <disk-spec-component(s)>...',
  minArgs: 2,
  async run(ctx, _v, args) {
    const domid = await findDomain(ctx, args[0]!);
    const disk = args.slice(1).join(',');
    try {
      parseDiskSpec(disk);
    } catch (e) {
      if (!(e instanceof DiskSpecError)) throw e;
      ctx.err(`${e.message}\n`);
      return 1;
    }
    try {
      await (await ctx.client()).call('domain.blockAttach', { dom: domid, disk });
    } catch (e) {
      reportDaemonError(ctx, e);
      ctx.err('libxl_device_disk_add failed.\n');
      return 1;
    }
    return 0;
  },
};

/** xl block-detach (main_blockdetach): by vdev or device number. */
export const blockDetach: XlCommand = {
  name: 'block-detach',
  modifies: true,
  desc: 'Destroy a domain\'s virtual block device',
  usage: '<Domain> <DevId>',
  minArgs: 2,
  async run(ctx, _v, args) {
    const domid = await findDomain(ctx, args[0]!);
    try {
      await (await ctx.client()).call('domain.blockDetach', { dom: domid, dev: args[1]! });
    } catch (e) {
      if (e instanceof ApiCallError && e.code === 'ENOENT') {
        ctx.err(`Error: Device ${args[1]!} not connected.\n`);
        return 1;
      }
      reportDaemonError(ctx, e);
      ctx.err('libxl_device_disk_remove failed.\n');
      return 1;
    }
    return 0;
  },
};
