// xl's block commands (xl_block.c): block-list reads each disk of each
// domain named from its frontend directory in xenstore, as
// libxl_device_disk_getinfo does (a node that is not there shows -1);
// block-attach and block-detach ask the daemon, which runs libxl's device
// addition and removal.

import { ApiCallError } from '../../daemon/client.js';
import type { XlCommand } from '../command.js';
import { findDomain, listDevices, nodeNumber, reportDaemonError } from './common.js';
import { DiskSpecError, parseDiskSpec } from '../disk.js';

export const blockList: XlCommand = {
  name: 'block-list',
  desc: 'List virtual block devices for a domain',
  usage: '<Domain(s)>',
  minArgs: 1,
  run(ctx, _v, args) {
    // "%-5s %-3s %-6s %-5s %-6s %-8s %-30s\n", and the same widths for each disk's numbers
    const row = (...f: (string | number)[]) => [5, 3, 6, 5, 6, 8, 30].map((w, i) => String(f[i]).padEnd(w)).join(' ');
    return listDevices(ctx, args, 'vbd', row('Vdev', 'BE', 'handle', 'state', 'evt-ch', 'ring-ref', 'BE-path'), async (read, domid, dev) => {
      const [be, beId, state, evtch, rref] = await Promise.all(['backend', 'backend-id', 'state', 'event-channel', 'ring-ref'].map(read));
      return row(dev, nodeNumber(beId), domid, nodeNumber(state), nodeNumber(evtch), nodeNumber(rref), be ?? '');
    });
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
