// trigger, button-press, debug-keys and dump-core (xl_misc.c). A PVH domain has no
// ACPI power or sleep button and no emulated platform to reset, so those
// triggers are refused as Xen refuses them for PVH (no ACPI PM device:
// hvm_acpi_power_button's -ENODEV); xl would print libxl's error and exit 0,
// xenode exits 1 with the reason, as for pause. An NMI goes to the vCPU named,
// as XEN_DOMCTL_sendtrigger sends it.

import path from 'node:path';
import { commandHelp, type XlCommand, type XlContext } from '../command.js';
import { findDomain, logPrefix, rcOf, reportDaemonError } from './common.js';

/** libxl_trigger's names (libxl_types.idl). */
const TRIGGERS = ['power', 'sleep', 'nmi', 'init', 'reset', 's3resume'] as const;
type Trigger = (typeof TRIGGERS)[number];

/** Why each trigger but nmi cannot be sent to a PVH domain on xenode. */
const NOT_FOR_PVH: Record<Exclude<Trigger, 'nmi'>, string> = {
  power: 'a PVH domain has no ACPI power button (Xen: -ENODEV); use xl shutdown',
  sleep: 'a PVH domain has no ACPI sleep button (Xen: -ENODEV)',
  s3resume: 'a PVH domain has no ACPI sleep state to resume from',
  reset: 'a PVH domain has no emulated platform to reset; use xl reboot',
  init: 'INIT is delivered through a local APIC xenode does not let the toolstack reach yet',
};

async function sendTrigger(ctx: XlContext, domid: number, trigger: Trigger, vcpu: number): Promise<number> {
  // the domain must exist for the refusal to mean anything, as libxl looks it up first
  try {
    const c = await ctx.client();
    if (trigger === 'nmi') {
      await c.call('domain.nmi', { dom: domid, vcpu });
      return 0;
    }
    await c.call('vcpu.list', { dom: domid });
  } catch (e) {
    reportDaemonError(ctx, e);
    return 1;
  }
  ctx.err(`${logPrefix(ctx.global)}xl: Send trigger '${trigger}' to domain ${domid} vCPU ${vcpu} failed: ${NOT_FOR_PVH[trigger]}\n`);
  return 1;
}

export const trigger: XlCommand = {
  name: 'trigger',
  modifies: true,
  desc: 'Send a trigger to a domain',
  usage: '<Domain> <nmi|reset|init|power|sleep|s3resume> [<VCPU>]',
  minArgs: 2,
  async run(ctx, _v, args) {
    const domid = await findDomain(ctx, args[0]!);
    const name = args[1]!;
    if (!(TRIGGERS as readonly string[]).includes(name)) {
      ctx.err(`Invalid trigger "${name}"\n`);
      return 1;
    }
    let vcpu = 0;
    if (args[2] !== undefined) {
      const m = /^\s*[+-]?\d+/.exec(args[2]);
      if (!m) ctx.err('Invalid vcpuid, using default vcpuid=0.\n\n');
      else vcpu = Number(m[0]);
    }
    return sendTrigger(ctx, domid, name as Trigger, vcpu);
  },
};

export const buttonPress: XlCommand = {
  name: 'button-press',
  modifies: true,
  desc: 'Indicate an ACPI button press to the domain',
  usage: '<Domain> <Button>',
  help: "<Button> may be 'power' or 'sleep'.",
  minArgs: 2,
  async run(ctx, _v, args) {
    ctx.err('WARNING: "button-press" is deprecated. Please use "trigger"\n');
    const domid = await findDomain(ctx, args[0]!);
    const b = args[1]!;
    if (b !== 'power' && b !== 'sleep') {
      ctx.err(`${b} is an invalid button identifier\n`);
      return 1;
    }
    return sendTrigger(ctx, domid, b, 0);
  },
};

/** xl sysrq (xl_misc.c main_sysrq): one letter, written to control/sysrq by libxl_send_sysrq. */
export const sysrq: XlCommand = {
  name: 'sysrq',
  modifies: true,
  desc: 'Send a sysrq to a domain',
  usage: '<Domain> <letter>',
  minArgs: 2,
  async run(ctx, _v, args) {
    const domid = await findDomain(ctx, args[0]!);
    const key = args[1]!;
    if (key.length !== 1) {
      ctx.err('Invalid sysrq.\n\n');
      ctx.out(commandHelp(sysrq));
      return 1;
    }
    try {
      await (await ctx.client()).call('domain.sysrq', { dom: domid, key });
    } catch (e) {
      reportDaemonError(ctx, e);
      return 1;
    }
    return 0;
  },
};

export const debugKeys: XlCommand = {
  name: 'debug-keys',
  modifies: true,
  desc: 'Send debug keys to Xen',
  usage: '<Keys>',
  minArgs: 1,
  async run(ctx, _v, args) {
    const keys = args[0]!;
    try {
      await (await ctx.client()).call('host.debugKeys', { keys });
    } catch (e) {
      reportDaemonError(ctx, e);
      ctx.err(`cannot send debug keys: ${keys}\n`);
      return 1;
    }
    return 0;
  },
};

/** xl dump-core: the file is written by the daemon, so a relative name is taken from here first. */
export const dumpCore: XlCommand = {
  name: 'dump-core',
  modifies: true,
  desc: 'Core dump a domain',
  usage: '<Domain> <filename>',
  minArgs: 2,
  async run(ctx, _v, args) {
    const domid = await findDomain(ctx, args[0]!);
    try {
      await (await ctx.client()).call('domain.dumpCore', { dom: domid, path: path.resolve(args[1]!) });
    } catch (e) {
      reportDaemonError(ctx, e);
      ctx.err(`core dump failed (rc=${rcOf(e)})\n`);
      return 1;
    }
    return 0;
  },
};
