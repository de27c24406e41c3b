// xl's network commands (xl_nic.c): network-list reads each vif of each
// domain named from its frontend directory in xenstore as
// libxl_device_nic_getinfo does (a node that is not there shows -1: a
// frontend with split event channels has no event-channel); network-attach
// and network-detach ask the daemon, which runs libxl's device addition and
// removal.

import { ApiCallError } from '../../daemon/client.js';
import type { XlCommand } from '../command.js';
import { findDomain, listDevices, nodeNumber, reportDaemonError } from './common.js';
import { parseVifSpec, VifSpecError } from '../vif.js';

/** xl network-attach (main_networkattach): each argument one key=value of a vif spec, as parse_nic_config takes them. */
export const networkAttach: XlCommand = {
  name: 'network-attach',
  modifies: true,
  desc: 'Create a new virtual network device',
  usage: '<Domain> [type=<type>] [mac=<mac>] [bridge=<bridge>] [ip=<ip>] [script=<script>] [backend=<BackDomain>] [vifname=<name>] [rate=<rate>] [model=<model>] [accel=<accel>] [mtu=<mtu>]',
  minArgs: 1,
  async run(ctx, _v, args) {
    const domid = await findDomain(ctx, args[0]!);
    const vif = args.slice(1).join(',');
    try {
      parseVifSpec(vif, { warn: (m) => ctx.err(`${m}\n`) });
    } catch (e) {
      if (!(e instanceof VifSpecError)) throw e;
      ctx.err(`${e.message}\n`);
      return 1;
    }
    try {
      await (await ctx.client()).call('domain.networkAttach', { dom: domid, vif });
    } catch (e) {
      reportDaemonError(ctx, e);
      ctx.err('libxl_device_nic_add failed.\n');
      return 1;
    }
    return 0;
  },
};

/** xl network-detach (main_networkdetach): a devid, or a MAC when the argument has a ':'. */
export const networkDetach: XlCommand = {
  name: 'network-detach',
  modifies: true,
  desc: 'Destroy a domain\'s virtual network device',
  usage: '<Domain> <DevId|mac>',
  minArgs: 2,
  async run(ctx, _v, args) {
    const domid = await findDomain(ctx, args[0]!);
    try {
      await (await ctx.client()).call('domain.networkDetach', { dom: domid, dev: args[1]! });
    } catch (e) {
      if (e instanceof ApiCallError && e.code === 'ENOENT') {
        ctx.err(`Unknown device ${args[1]!}.\n`);
        return 1;
      }
      reportDaemonError(ctx, e);
      ctx.err('libxl_device_nic_del failed.\n');
      return 1;
    }
    return 0;
  },
};

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
