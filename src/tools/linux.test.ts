// Debian's cloud kernel as a user meets it (docs/linux.md): Debian 12's
// unmodified linux-image-*-cloud-amd64 with a busybox initramfs, under
// `xenode run` and under the daemon with `xl`, its console on a pty.
// A boot costs about a minute of the software CPU on the development
// machines, so one guest goes through the xl steps in order (console,
// sysrq, a kill -9 of xenstored, an NMI, mem-set down and up, vcpu-set down and up again, reboot, shutdown)
// and each step is its own test.

import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { busyboxInitramfs, haveLinux, linuxBzImage } from '../testing/initramfs.js';
import { PtySession, havePtyTool } from '../testing/pty.js';
import { havePeer } from '../testing/peers.js';
import { until } from '../testing/wait.js';
import { xenodeRun, root } from '../testing/xenode.js';
import { startDaemon, type TestDaemon } from './daemon/testing.js';

/** A boot under the software CPU on a loaded 2-CPU host: ~60-90 s to /init. */
const BOOT_MS = 200_000;
const XL_JS = path.join(root, 'dist/src/tools/xl/xl.js');
// The PVH ELF inside Debian's bzImage (scripts/fetch-linux.sh extracts it).
const KERNEL = linuxBzImage;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xl-linux-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** What the guest reports about itself, in lines the tests look for. */
const REPORT = `
echo "hypervisor: $(cat /sys/hypervisor/type) $(cat /sys/hypervisor/guest_type)"
echo "cpus: $(nproc)"
echo "clocksource: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
`;

function reportOf(out: string): { hypervisor: string; cpus: number; clocksource: string } {
  const m = /hypervisor: (\S+ \S+)\r*\ncpus: (\d+)\r*\nclocksource: (\S+)/.exec(out);
  assert.ok(m, `the guest's report:\n${out.slice(-3000)}`);
  return { hypervisor: m[1]!, cpus: Number(m[2]), clocksource: m[3]! };
}

describe('xenode run: Debian\'s kernel to a busybox /init that reports and powers off', () => {
  test('1 vCPU: /sys/hypervisor says xen PVH, one CPU, exit 0 after Linux powers off', { timeout: BOOT_MS + 30_000 }, async (t) => {
    if (!haveLinux(t)) return;
    const initrd = path.join(dir, 'report.gz');
    fs.writeFileSync(initrd, busyboxInitramfs({ init: `mount -t proc proc /proc\nmount -t sysfs sysfs /sys\n${REPORT}poweroff -f\n` }));
    const r = await xenodeRun([KERNEL, '--memory', '256', '--vcpus', '1', '--ramdisk', initrd, '--cmdline', 'console=hvc0'], { timeoutMs: BOOT_MS });
    const rep = reportOf(r.stdout);
    assert.equal(rep.hypervisor, 'xen PVH');
    assert.equal(rep.cpus, 1);
    assert.match(rep.clocksource, /^(xen|tsc)$/, 'the PV clock, or the TSC Linux prefers when Xen says it is stable');
    // no ACPI S5 in a PVH domain's tables: Linux halts every vCPU with interrupts off, which Xen's hvm_hlt takes as poweroff
    assert.match(r.stdout, /reboot: (Power down|System halted)/, 'Linux\'s own poweroff path');
    assert.equal(r.code, 0, r.stderr);
  });
});

describe('xl with Debian\'s kernel: a busybox shell on the console, sysrq, an NMI, vcpu-set, reboot, shutdown, destroy', () => {
  let daemon: TestDaemon | undefined;
  let env: NodeJS.ProcessEnv;
  let cfg = '';

  const xl = (...argv: string[]): Promise<{ code: number | null; out: string; err: string }> => new Promise((resolve) => {
    const p = spawn(process.execPath, [XL_JS, ...argv], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    p.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    p.on('close', (code) => resolve({ code, out, err }));
  });
  const domid = async (): Promise<number | null> => {
    const r = await xl('domid', 'linux');
    return r.code === 0 ? Number(r.out) : null;
  };
  /** `xl console linux` on a pty, at a shell prompt (a command typed and answered proves it). */
  const consoleAtShell = async (): Promise<PtySession> => {
    const con = new PtySession([process.execPath, XL_JS, 'console', 'linux'], env);
    await shellAnswers(con, 'echo $((40+2))ok', /\n42ok\r*\n/);
    return con;
  };
  /** Types a command and waits for its answer (the guest echoes what is typed, so `re` must not match the command itself). */
  const shellAnswers = async (con: PtySession, cmd: string, re: RegExp, ms = 30_000): Promise<RegExpMatchArray> => {
    con.type(`${cmd}\r`);
    return con.waitFor(`the answer to '${cmd}'`, re, ms);
  };
  const detach = async (con: PtySession): Promise<number | null> => {
    con.type(Buffer.from([0x1d]));
    try {
      return await Promise.race([con.exited, new Promise<null>((_, rej) => setTimeout(() => rej(new Error('xl console did not exit on Ctrl-]')), 10_000))]);
    } finally {
      con.kill();
    }
  };

  before(async () => {
    if (!fs.existsSync(KERNEL) || !havePtyTool()) return; // each test says what is missing
    daemon = await startDaemon();
    env = { ...process.env, XENODE_SOCKET: daemon.socket, XENODE_STATE_DIR: daemon.stateDir };
    const initrd = path.join(dir, 'shell.gz');
    fs.writeFileSync(initrd, busyboxInitramfs({
      files: {
        // busybox init: /etc/rc once, a shell on the console for ever; SIGUSR2 (poweroff) and SIGTERM (reboot)
        // from Linux's orderly_poweroff/orderly_reboot take it through its shutdown
        'etc/inittab': '::sysinit:/etc/rc\n::respawn:/bin/cttyhack /bin/sh\n',
        'etc/rc': `#!/bin/sh\nmount -t proc proc /proc\nmount -t sysfs sysfs /sys\nmount -t devtmpfs devtmpfs /dev\n${REPORT}echo "rc: done"\n`,
      },
    }));
    cfg = path.join(dir, 'linux.cfg');
    fs.writeFileSync(cfg, `name = "linux"\ntype = "pvh"\nkernel = "${KERNEL}"\nramdisk = "${initrd}"\nextra = "console=hvc0"\nmemory = 256\nvcpus = 2\n`);
  });

  after(async () => {
    if (!daemon) return;
    if (daemon.proc.exitCode === null) await xl('destroy', 'linux');
    await daemon.stop();
  });

  const guard = (t: TestContext): boolean => haveLinux(t) && havePeer(t, havePtyTool(), 'util-linux script (a pty for xl console)', 'apt-get install bsdutils') && !!daemon;

  test('xl create -c shows the boot and a busybox shell; a command typed on the pty is answered; Ctrl-] leaves it running', { timeout: BOOT_MS + 60_000 }, async (t) => {
    if (!guard(t)) return;
    const con = new PtySession([process.execPath, XL_JS, 'create', '-c', cfg], env);
    try {
      await con.waitFor('Linux\'s banner', /Linux version 6\.1\.\d+-\d+-cloud-amd64/, 60_000);
      await con.waitFor('/etc/rc finishing', /rc: done/, BOOT_MS);
      const rep = reportOf(con.output);
      assert.equal(rep.hypervisor, 'xen PVH');
      assert.equal(rep.cpus, 2, 'both vCPUs brought up');
      assert.match(rep.clocksource, /^(xen|tsc)$/);
      await shellAnswers(con, 'echo $((6*7))x', /\n42x\r*\n/);
      await shellAnswers(con, 'cat /sys/hypervisor/uuid', /\n[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\r*\n/);
      assert.equal(await detach(con), 0);
    } finally {
      con.kill();
    }
    assert.notEqual(await domid(), null, 'still there after detaching');
  });

  test('xl console attaches later, and xl sysrq reaches Linux\'s sysrq watcher', { timeout: 90_000 }, async (t) => {
    if (!guard(t)) return;
    const con = await consoleAtShell();
    try {
      assert.deepEqual(await xl('sysrq', 'linux', 's'), { code: 0, out: '', err: '' });
      await con.waitFor('the sysrq on the console', /sysrq: Emergency Sync/);
      assert.equal(await detach(con), 0);
    } finally {
      con.kill();
    }
  });

  test('kill -9 of the control domain\'s xenstored: it is started again, no committed write is lost, and Linux\'s xenstore connection goes on (its sysrq watch fires on the new xenstored)', { timeout: 90_000 }, async (t) => {
    if (!guard(t)) return;
    const pidOf = async (): Promise<number> => Number(/^xenstored_pid\s*:\s*(\d+)/m.exec((await xl('info')).out)?.[1]);
    const pid = await pidOf();
    assert.ok(pid > 0 && pid !== daemon!.proc.pid, 'xenstored is a process of its own');
    assert.deepEqual(await xl('xenstore-write', '/local/domain/0/data/kept', 'committed'), { code: 0, out: '', err: '' });
    const con = await consoleAtShell();
    try {
      process.kill(pid, 'SIGKILL');
      await until('xenstored to be started again', async () => { const p = await pidOf(); return (p > 0 && p !== pid) || undefined; }, 30_000, 100);
      assert.deepEqual(await xl('xenstore-read', '/local/domain/0/data/kept'), { code: 0, out: 'committed\n', err: '' });
      // Linux registered its watch on control/sysrq with the xenstored that died; its ring is served again with the watch
      await shellAnswers(con, 'echo $((7*6))restarted', /\n42restarted\r*\n/); // what is printed from here on is new
      assert.deepEqual(await xl('sysrq', 'linux', 's'), { code: 0, out: '', err: '' });
      await con.waitFor('the sysrq after the restart', /sysrq: Emergency Sync/);
      assert.equal(await detach(con), 0);
    } finally {
      con.kill();
    }
    assert.match((await xl('list', 'linux')).out, /^linux\s+\d+\s+\d+\s+2\s/m, 'still listed, with its vCPUs');
  });

  test('xl trigger nmi: Linux takes the NMI on the vCPU named and goes on; a vCPU the domain lacks is refused', { timeout: 90_000 }, async (t) => {
    if (!guard(t)) return;
    const con = await consoleAtShell();
    try {
      assert.deepEqual(await xl('trigger', 'linux', 'nmi', '1'), { code: 0, out: '', err: '' });
      // default_do_nmi: no handler claims it, so the reason port decides which line Linux prints (unknown, SERR or IOCHK)
      await con.waitFor('Linux\'s NMI report for CPU 1',
        /NMI received for unknown reason [0-9a-f]{2} on CPU 1\.|NMI: (PCI system error \(SERR\)|IOCK error \(debug interrupt\?\)) for reason [0-9a-f]{2} on CPU 1\./);
      await shellAnswers(con, 'echo $((5*5))nmi', /\n25nmi\r*\n/);
      const bad = await xl('trigger', 'linux', 'nmi', '7');
      assert.equal(bad.code, 1);
      assert.match(bad.err, /has no vCPU 7/);
      assert.equal(await detach(con), 0);
    } finally {
      con.kill();
    }
  });

  test('xl mem-set: Linux\'s xen-balloon gives pages back down to the target and takes them again up to it; xl list follows', { timeout: 150_000 }, async (t) => {
    if (!guard(t)) return;
    const con = await consoleAtShell();
    // each question tagged, so an answer is never taken for a later question's
    let asked = 0;
    const memTotalKiB = async (): Promise<number> => {
      const tag = ++asked;
      const m = await shellAnswers(con, `echo mt:$(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2):${tag}`, new RegExp(`\\nmt:(\\d+):${tag}\\r*\\n`));
      return Number(m[1]);
    };
    const listMiB = async (): Promise<number> => Number(/^linux\s+\d+\s+(\d+)/m.exec((await xl('list', 'linux')).out)?.[1]);
    try {
      const before = await memTotalKiB();
      // what Linux holds of its 256 MiB after boot (it may have handed a page or so back already)
      const held = await listMiB();
      assert.ok(held > 240 && held <= 256, `xl list: ${held} MiB`);
      assert.deepEqual(await xl('mem-set', 'linux', '192m'), { code: 0, out: '', err: '' });
      // the balloon driver works in steps (balloon_process): poll until it has given 64 MiB back
      await until('Linux to balloon down by 64 MiB', async () => (before - (await memTotalKiB())) >= 64 * 1024 - 1024 || undefined, 60_000, 1000);
      await until('xl list to show the domain at its target', async () => (await listMiB()) <= 193 || undefined, 20_000, 500);
      assert.deepEqual(await xl('mem-set', 'linux', '256m'), { code: 0, out: '', err: '' });
      await until('Linux to balloon back up', async () => (before - (await memTotalKiB())) <= 1024 || undefined, 60_000, 1000);
      await until('xl list to show what it held before', async () => (await listMiB()) >= held || undefined, 20_000, 500);
      await shellAnswers(con, 'echo $((7*7))ball', /\n49ball\r*\n/);
      assert.equal(await detach(con), 0);
    } finally {
      con.kill();
    }
  });

  test('xl vcpu-set takes a vCPU offline through cpu/N/availability: Linux\'s hotplug watcher takes it down', { timeout: 120_000 }, async (t) => {
    if (!guard(t)) return;
    const con = await consoleAtShell();
    try {
      await shellAnswers(con, 'echo online:$(cat /sys/devices/system/cpu/online)', /\nonline:0-1\r*\n/);
      assert.deepEqual(await xl('vcpu-set', 'linux', '1'), { code: 0, out: '', err: '' });
      await until('vCPU 1 offline in the guest', async () => {
        con.type('echo online:$(cat /sys/devices/system/cpu/online)\r');
        await new Promise((r) => setTimeout(r, 1000));
        return /\nonline:0\r*\n/.test(con.output);
      }, 60_000, 0);
      assert.match((await xl('vcpu-list', 'linux')).out, /^linux\s+\d+\s+1\s+-\s+--p/m, 'the hypervisor sees vCPU 1 down');
      assert.equal(await detach(con), 0);
    } finally {
      con.kill();
    }
  });

  test('xl vcpu-set brings it back: Linux registers the vCPU again, onlining it restarts it with INIT and STARTUP, a task pinned there runs', { timeout: 150_000 }, async (t) => {
    if (!guard(t)) return;
    const con = await consoleAtShell();
    try {
      await shellAnswers(con, 'echo online:$(cat /sys/devices/system/cpu/online)', /\nonline:0\r*\n/);
      assert.deepEqual(await xl('vcpu-set', 'linux', '2'), { code: 0, out: '', err: '' });
      // Linux's hotplug watcher makes the CPU present again and leaves onlining to user space (a udev rule on a
      // full system), as on Xen; busybox has no udev, so the shell does what the rule does.
      await until('vCPU 1 present again in the guest', async () => {
        con.type('echo present:$(cat /sys/devices/system/cpu/present)\r');
        await new Promise((r) => setTimeout(r, 1000));
        return /\npresent:0-1\r*\n/.test(con.output);
      }, 60_000, 0);
      // cpu_up: Linux's native_cpu_up sends INIT, INIT de-assert and two STARTUPs to the vCPU it halted down.
      await shellAnswers(con, 'echo 1 > /sys/devices/system/cpu/cpu1/online && echo up:$(cat /sys/devices/system/cpu/cpu1/online)', /\nup:1\r*\n/, 90_000);
      await shellAnswers(con, 'echo online:$(cat /sys/devices/system/cpu/online) cpus:$(nproc)', /\nonline:0-1 cpus:2\r*\n/);
      // /proc/self/stat field 39: the CPU the process last ran on
      await shellAnswers(con, 'echo pinned:$(taskset -c 1 cut -d" " -f39 /proc/self/stat)', /\npinned:1\r*\n/);
      assert.match((await xl('vcpu-list', 'linux')).out, /^linux\s+\d+\s+1\s+\d+\s+(r--|-b-)/m, 'the hypervisor runs vCPU 1 again');
      assert.equal(await detach(con), 0);
    } finally {
      con.kill();
    }
  });

  test('xl reboot goes through Linux\'s reboot; the domain comes back under its name and boots again', { timeout: BOOT_MS + 60_000 }, async (t) => {
    if (!guard(t)) return;
    const before = await domid();
    assert.notEqual(before, null);
    const con = await consoleAtShell();
    try {
      assert.equal((await xl('reboot', 'linux')).code, 0);
      await con.waitFor('busybox init\'s reboot', /The system is going down NOW!/, 60_000);
      await con.waitFor('Linux restarting', /reboot: Restarting system/, 60_000);
    } finally {
      con.kill();
    }
    const next = await until('the restarted domain', async () => { const d = await domid(); return d !== null && d !== before ? d : null; }, 60_000, 200);
    assert.ok(next > before!);
    const again = new PtySession([process.execPath, XL_JS, 'console', 'linux'], env);
    try {
      await again.waitFor('the second boot\'s /etc/rc', /rc: done/, BOOT_MS);
      assert.equal(await detach(again), 0);
    } finally {
      again.kill();
    }
  });

  test('xl shutdown of a guest at its shell ends in Linux\'s own clean poweroff', { timeout: 120_000 }, async (t) => {
    if (!guard(t)) return;
    const id = await domid();
    const con = await consoleAtShell();
    try {
      const sd = await xl('shutdown', '-w', 'linux');
      assert.equal(sd.code, 0, sd.err);
      assert.match(sd.err, new RegExp(`^Shutting down domain ${id}\nWaiting for 1 domains\nDomain ${id} has been (shut down, reason code 0|destroyed)\n$`));
      // Linux's control/shutdown watcher ran /sbin/poweroff: busybox init's shutdown, then the kernel's
      await con.waitFor('busybox init going down', /The system is going down NOW!/);
      await con.waitFor('Linux powering down', /reboot: (Power down|System halted)/);
    } finally {
      con.kill();
    }
    await until('the domain gone (on_poweroff=destroy)', async () => (await domid()) === null, 20_000, 200);
  });

  test('xl destroy ends a guest in the middle of its boot', { timeout: 120_000 }, async (t) => {
    if (!guard(t)) return;
    const con = new PtySession([process.execPath, XL_JS, 'create', '-c', cfg], env);
    try {
      await con.waitFor('Linux\'s banner', /Linux version/, 60_000);
      assert.deepEqual(await xl('destroy', 'linux'), { code: 0, out: '', err: '' });
      const ended = await Promise.race([con.exited.then(() => 'exited'), new Promise((r) => setTimeout(() => r('still attached'), 20_000))]);
      assert.equal(ended, 'exited', 'the console ends with the domain');
    } finally {
      con.kill();
    }
    assert.equal(await domid(), null);
  });
});
