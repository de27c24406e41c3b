// `xl debug-keys`: the keys of Xen's keyhandler.c that mean something on
// xenode, each writing its report to the hypervisor log (`xl dmesg`) as Xen's
// handlers printk theirs. Keys without a handler are ignored, as Xen's
// handle_keypress ignores them.

import type { Hypervisor } from '../../hv/hypervisor.js';
import * as core from '../../hv/evtchn_core.js';
import { RUNSTATE } from '../../hv/shared.js';

interface KeyHandler {
  desc: string;
  run(hv: Hypervisor, names: (domid: number) => string): string[];
}

const RUNSTATE_NAMES = ['running', 'runnable', 'blocked', 'offline'];
const ECS_NAMES = ['closed', 'unbound', 'interdomain', 'pirq', 'virq', 'ipi'];

/** 'q': each domain's state, memory and vCPUs (Xen's dump_domains). */
function dumpDomains(hv: Hypervisor, name: (domid: number) => string): string[] {
  const out = ["'q' pressed -> dumping domain info"];
  for (const d of hv.list()) {
    out.push(`General information for domain ${d.domid} (${name(d.domid)}):`);
    out.push(`    state=${d.state} paused=${d.paused ? 1 : 0} shutdown_reason=${d.shutdownReason} nr_vcpus=${d.vcpus} online=${d.onlineVcpus}`);
    out.push(`    nr_pages=${d.memoryKiB / 4} max_pages=${d.maxMemKiB / 4} cpu_time=${d.cpuTimeUs}us`);
    for (const v of hv.vcpus(d.domid)) {
      out.push(`    VCPU${v.vcpu}: CPU${v.pcpu} ${RUNSTATE_NAMES[v.state] ?? v.state} up=${v.up ? 1 : 0} time=${v.cpuTimeUs}us`);
    }
  }
  return out;
}

/** 'e': every bound event-channel port of every domain (Xen's dump_evtchn_info). */
function dumpEvtchn(hv: Hypervisor, name: (domid: number) => string): string[] {
  const out = ["'e' pressed -> dumping event-channel info"];
  for (const d of hv.list()) {
    const ed = hv.evtchnDomain(d.domid);
    if (!ed) continue;
    out.push(`Event channel information for domain ${d.domid} (${name(d.domid)}):`);
    const last = core.lastPort(ed.shared);
    for (let port = 1; port <= last; port++) {
      const p = core.portInfo(ed.shared, port);
      if (p.state === core.ECS.closed) continue;
      let what = '';
      if (p.state === core.ECS.interdomain) what = ` d=${p.remoteDom} p=${p.remotePort}`;
      else if (p.state === core.ECS.unbound) what = ` remote=${p.remoteDom}`;
      else if (p.state === core.ECS.virq) what = ` v=${p.remoteDom}`;
      out.push(`    ${String(port).padStart(4)}: s=${ECS_NAMES[p.state] ?? p.state} n=${p.vcpu} pending=${core.isPending(ed, port) ? 1 : 0} masked=${core.isMasked(ed, port) ? 1 : 0}${what}`);
    }
  }
  return out;
}

/** 'r': what each pCPU worker runs (Xen's run queue dump, from the vCPUs' shared state). */
function dumpRunq(hv: Hypervisor): string[] {
  const out = ["'r' pressed -> dumping run queues"];
  for (let p = 0; p < hv.nrPcpus; p++) {
    const here: string[] = [];
    for (const d of hv.list()) {
      for (const v of hv.vcpus(d.domid)) {
        if (v.pcpu === p && (v.state === RUNSTATE.running || v.state === RUNSTATE.runnable)) here.push(`d${d.domid}v${v.vcpu}(${RUNSTATE_NAMES[v.state]})`);
      }
    }
    out.push(`CPU[${String(p).padStart(2, '0')}] ${here.length ? here.join(' ') : 'idle'}`);
  }
  return out;
}

export const DEBUG_KEYS: Record<string, KeyHandler> = {
  h: { desc: 'show this message', run: () => ["'h' pressed -> showing installed handlers", ...Object.entries(DEBUG_KEYS).map(([k, h]) => ` key '${k}' (ascii '${k.charCodeAt(0).toString(16).padStart(2, '0')}') => ${h.desc}`)] },
  q: { desc: 'dump domain (and guest debug) info', run: dumpDomains },
  e: { desc: 'dump evtchn info', run: dumpEvtchn },
  r: { desc: 'dump run queues', run: (hv) => dumpRunq(hv) },
};

/** Runs each key's handler in order; the lines for the hypervisor log. */
export function debugKeys(hv: Hypervisor, keys: string, names: (domid: number) => string): string[] {
  const out: string[] = [];
  for (const k of keys) {
    const h = DEBUG_KEYS[k];
    if (h) out.push(...h.run(hv, names));
  }
  return out;
}
