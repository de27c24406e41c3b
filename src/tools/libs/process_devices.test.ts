// A process domain's devices against the real hypervisor: the grant
// sample's granter (a guest) grants pages to a process domain, which plays
// its backend through the privileged stream (hv/privcmd.ts) the way a driver
// domain does: Xen's answers to good and bad copies and maps, a mapping's
// page shared with the guest, handles that are only their owner's, and a
// dead process domain's mappings and ports let go, so that the same domid,
// started again, finishes the work. Event channels go both ways between a
// guest's port and a process domain's.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { GRANT_ELF } from '../../testing/grant.js';
import { needsGuestCpu } from '../../testing/accel.js';
import { until, within } from '../../testing/wait.js';
import { GNTST } from '../../hv/abi/grant_table.js';
import { encodeFrame, FrameSplitter } from '../../hv/privcmd.js';
import { ECS, portInfo, send } from '../../hv/evtchn_core.js';
import { LocalClient } from '../xenstored/index.js';
import { processDevices } from './process_devices.js';
import type { Toolstack } from '../toolstack.js';
import type { XenDevices, GrantMapping } from './devices.js';

const REF_RW = 8, REF_RO = 9, REF_DONE = 10;
const OFF_COPIED = 64, OFF_MAPPED = 128, OFF_ACK = 192;

/** What a test opened, closed at its end whatever happened (an open socket would keep the test process alive). */
const open = new Set<() => void>();
const closeAll = () => { for (const k of open) k(); open.clear(); };

/** A process domain on `ts` with its devices over a real Unix socket, as a driver domain gets them. */
async function processDomain(ts: Toolstack, dir: string, name: string, domid?: number) {
  const info = ts.hv.createProcessDomain({ name, domid });
  const sock = path.join(dir, `${name}-${info.domid}-${Date.now()}.sock`);
  const server = net.createServer();
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  await new Promise<void>((r) => server.listen(sock, r));
  const client = net.createConnection(sock);
  const serverSide = await accepted;
  server.close();
  ts.hv.servePrivcmd(info.domid, serverSide, { mayMap: true, peerPid: process.pid });
  const xs = new LocalClient(ts.xs.daemon!, info.domid);
  const devices = processDevices(info.domid, client, xs);
  /** the process is gone: its stream closes and the toolstack destroys its domain */
  const kill = () => {
    open.delete(kill);
    client.destroy();
    serverSide.destroy();
    xs.close();
    ts.hv.destroyProcessDomain(info.domid);
  };
  open.add(kill);
  return { domid: info.domid, devices, stream: client, kill };
}

const copy1 = async (d: XenDevices, op: Parameters<XenDevices['gnttab']['copy']>[0][0]) => (await d.gnttab.copy([op]))[0];

test('a process domain backs the grant sample through the privileged interface: copies, maps, Xen\'s errors; its death unmaps; its domid finishes the work', needsGuestCpu(), async (t) => {
  const { Toolstack } = await import('../toolstack.js');
  const dir = mkdtempSync(path.join(tmpdir(), 'xenode-pd-'));
  const ts = await Toolstack.start({ pcpus: 2, log: () => {} });
  let out = '';
  const down = new Map<number, number>();
  ts.hv.on('shutdown', (domid: number, reason: number) => down.set(domid, reason));
  ts.hv.on('console', (_d: number, _s: string, text: string, eol: boolean) => { out += eol ? `${text}\n` : text; });
  try {
    const pd = await processDomain(ts, dir, 'backend');
    const g = await ts.create({ name: 'granter', kernel: readFileSync(GRANT_ELF), memoryMiB: 8, vcpus: 1, cmdline: 'role=granter' }, (b) => { out += Buffer.from(b).toString('latin1'); });
    await ts.client.write(`/local/domain/${g.domid}/data/peer`, String(pd.domid));
    // the process domain reads what the granter published for it, as itself (the node is readable by it alone)
    const gref = Number(await until('the granter to publish its grant', () => pd.devices.xenstore.tryRead(`/local/domain/${g.domid}/data/gref`), 60_000, 20));
    assert.equal(gref, REF_RW);
    const { devices } = pd;
    const local = devices.gnttab.allocBuffer(8192);
    const G = g.domid;

    // copies (GNTTABOP_copy as the process domain)
    assert.equal(await copy1(devices, { source: { domid: G, ref: REF_RW, offset: 0 }, dest: { buf: local, offset: 4096 }, len: 64 }), GNTST.okay);
    assert.deepEqual([...local.subarray(4096, 4096 + 64)], Array.from({ length: 64 }, (_, i) => 0xa0 + i), 'the pattern, into the local buffer at its offset');
    // bytes that are not in a buffer from allocBuffer travel in the frames instead
    const plain = new Uint8Array(100);
    assert.equal(await copy1(devices, { source: { domid: G, ref: REF_RW, offset: 2 }, dest: { buf: plain, offset: 36 }, len: 64 - 2 }), GNTST.okay);
    assert.deepEqual([...plain.subarray(36, 36 + 62)], Array.from({ length: 62 }, (_, i) => 0xa2 + i), 'the pattern, into a plain array');
    local[5000] = 'C'.charCodeAt(0);
    assert.equal(await copy1(devices, { source: { buf: local, offset: 5000 }, dest: { domid: G, ref: REF_RW, offset: OFF_COPIED }, len: 1 }), GNTST.okay);
    const batch = await devices.gnttab.copy([
      { source: { domid: G, ref: REF_RW, offset: 4000 }, dest: { buf: local, offset: 0 }, len: 200 }, // across the page's end
      { source: { domid: G, ref: 100000, offset: 0 }, dest: { buf: local, offset: 0 }, len: 8 },
      { source: { buf: local, offset: 0 }, dest: { domid: G, ref: REF_RO, offset: 0 }, len: 8 },
      { source: { domid: G, ref: REF_RO, offset: 0 }, dest: { buf: local, offset: 100 }, len: 8 },
      { source: { domid: G + 100, ref: REF_RW, offset: 0 }, dest: { buf: local, offset: 0 }, len: 8 },
    ]);
    assert.deepEqual(batch, [GNTST.bad_copy_arg, GNTST.bad_gntref, GNTST.general_error, GNTST.okay, GNTST.bad_domain], 'one status each, the batch going on after a failure');
    assert.equal(local[100], 0x5c, 'the read-only page, read');
    // bytes travelling in the frame: a refused op's bytes do not shift the next op's
    const big = new Uint8Array(6000).fill(0xee), mark = Uint8Array.of(0x77);
    assert.deepEqual(await devices.gnttab.copy([
      { source: { buf: big, offset: 0 }, dest: { domid: G, ref: REF_RW, offset: 300 }, len: 5000 },
      { source: { buf: mark, offset: 0 }, dest: { domid: G, ref: REF_RW, offset: 300 }, len: 1 },
    ]), [GNTST.bad_copy_arg, GNTST.okay]);
    const back = new Uint8Array(2);
    assert.equal(await copy1(devices, { source: { domid: G, ref: REF_RW, offset: 300 }, dest: { buf: back, offset: 0 }, len: 2 }), GNTST.okay);
    assert.deepEqual([...back], [0x77, 0], 'the second op\'s byte, not the first op\'s');

    // maps: the granted page itself, shared with the guest
    const m = await devices.gnttab.map(G, REF_RW, false);
    assert.ok(typeof m !== 'number', `mapped: ${m as number}`);
    const page = (m as GrantMapping).page;
    assert.equal(page[5], 0xa5);
    assert.equal(page[OFF_COPIED], 'C'.charCodeAt(0), 'the copy, seen through the mapping');
    assert.equal(await devices.gnttab.map(G, REF_RO, false), GNTST.general_error, 'a writable map of a read-only grant');
    const again = await devices.gnttab.map(G, REF_RW, true);
    assert.ok(typeof again !== 'number', 'a second (read-only) mapping of the same grant');
    // another process domain's handles are not this one's
    const other = await processDomain(ts, dir, 'other');
    assert.equal(await other.devices.gnttab.unmap((again as GrantMapping).handle), GNTST.bad_handle);
    other.kill();
    assert.equal(await devices.gnttab.unmap((again as GrantMapping).handle), GNTST.okay);
    assert.equal(await devices.gnttab.unmap((again as GrantMapping).handle), GNTST.bad_handle, 'unmapped twice');
    page[OFF_MAPPED] = 'M'.charCodeAt(0);
    await until('the granter to ack what it saw', () => page[OFF_ACK] === 'A'.charCodeAt(0) || undefined, 60_000, 10);

    // event channels, both ways: a guest port unbound for the process domain
    const guestPort = ts.hv.allocUnbound(G, pd.domid);
    let events = 0;
    const mine = await devices.evtchn.bindInterdomain(G, guestPort, () => { events++; });
    assert.deepEqual(portInfo(ts.hv.evtchnDomain(G)!.shared, guestPort), { state: ECS.interdomain, vcpu: 0, remoteDom: pd.domid, remotePort: mine });
    await assert.rejects(devices.evtchn.bindInterdomain(G, guestPort, () => {}), /not unbound/, 'a bound port cannot be bound twice');
    // a new port starts pending (an event may have come before the bind): that one first
    await until('the bind\'s own event', () => events > 0 || undefined, 5000, 5);
    const before = events;
    // (the way out, to a guest's port, is what every blkfront request's answer takes: linux_driver_domain.test)
    send(ts.hv.evtchnHost, ts.hv.evtchnDomain(G)!, guestPort);
    await until('the guest\'s event to reach the process domain', () => events > before || undefined, 5000, 5);

    // the process dies holding its mapping: the hypervisor unmaps it, and the guest's port is unbound toward it again
    pd.kill();
    assert.deepEqual(portInfo(ts.hv.evtchnDomain(G)!.shared, guestPort), { state: ECS.unbound, vcpu: 0, remoteDom: pd.domid, remotePort: 0 });
    await until('the granter to revoke its grant once the dead mapper is gone', () => /PASS granter-revokes-after-unmap/.test(out) || undefined, 60_000, 20);

    // the same domid, started again, binds the port its predecessor left and says done
    const again2 = await processDomain(ts, dir, 'backend', pd.domid);
    assert.equal(again2.domid, pd.domid);
    assert.throws(() => ts.hv.createProcessDomain({ name: 'dup', domid: pd.domid }), /in use/);
    const rebound = await again2.devices.evtchn.bindInterdomain(G, guestPort, () => {});
    assert.ok(rebound > 0);
    const done = again2.devices.gnttab.allocBuffer(1);
    done[0] = 'D'.charCodeAt(0);
    assert.equal(await copy1(again2.devices, { source: { buf: done, offset: 0 }, dest: { domid: G, ref: REF_DONE, offset: 0 }, len: 1 }), GNTST.okay);
    await until('the granter to power off', () => down.has(G) || undefined, 60_000, 20);
    t.diagnostic(out.split('\n').filter((l) => /^(PASS|FAIL|RESULT)/.test(l)).join('; '));
    assert.doesNotMatch(out, /^FAIL/m, out);
    assert.match(out, /PASS granter-sees-the-copy/);
    assert.match(out, /PASS granter-sees-the-write-through-the-mapping/);
    assert.match(out, /PASS granter-entry-in-use-while-mapped/);
    assert.match(out, /PASS granter-cannot-revoke-while-mapped/);
    assert.equal(down.get(G), 0, 'the granter powered off');
    again2.kill();
  } finally {
    closeAll();
    await ts.shutdown();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the privileged interface drops a stream that sends a malformed frame; bad calls are refused; nothing else changes', needsGuestCpu(), async () => {
  const { Toolstack } = await import('../toolstack.js');
  const dir = mkdtempSync(path.join(tmpdir(), 'xenode-pd-'));
  const ts = await Toolstack.start({ pcpus: 1, log: () => {} });
  try {
    const pd = await processDomain(ts, dir, 'hostile');
    const ok = await processDomain(ts, dir, 'fine');
    // a port one process domain allocates for another, bound by it: events both ways (backends that offer a port do this)
    let got = 0, back = 0;
    const offered = await ok.devices.evtchn.allocUnbound(pd.domid, () => { got++; });
    const bound = await pd.devices.evtchn.bindInterdomain(ok.domid, offered, () => { back++; });
    await until('the bind\'s own event', () => back > 0 || undefined, 5000, 5);
    pd.devices.evtchn.notify(bound);
    await until('the event to the allocating domain', () => got > 0 || undefined, 5000, 5);
    const before = back;
    ok.devices.evtchn.notify(offered);
    await until('the event back', () => back > before || undefined, 5000, 5);
    const forAnother = await ok.devices.evtchn.allocUnbound(pd.domid + 1000, () => {});
    await assert.rejects(pd.devices.evtchn.bindInterdomain(ok.domid, forAnother, () => {}), /does not accept domain/, 'a port offered to another domain');
    // calls the hypervisor refuses, each with its reason, the stream staying up
    await assert.rejects(pd.devices.evtchn.bindInterdomain(0x7fef, 1, () => {}), /no domain/);
    await assert.rejects(pd.devices.evtchn.bindInterdomain(ok.domid, 99999, () => {}), /bad remote port/);
    assert.equal(await pd.devices.gnttab.map(ok.domid, 1, false), GNTST.bad_domain, 'a process domain has no grants to map');
    assert.deepEqual(await pd.devices.gnttab.copy([{ source: { domid: 0x7fef, ref: 1, offset: 0 }, dest: { buf: new Uint8Array(8), offset: 0 }, len: 8 }]), [GNTST.bad_domain]);
    // a copy buffer must be a memory file of the peer's: a plain file is refused, and a copy naming it too
    const file = openSync(path.join(dir, 'not-memory'), 'w+');
    ftruncateSync(file, 4096);
    const replies = new FrameSplitter();
    const answered = new Promise<Record<string, unknown>>((resolve) => pd.stream.on('data', (b: Buffer) => {
      replies.push(b);
      for (let f = replies.next(); f; f = replies.next()) if (f.header.id === 999_999) resolve(f.header);
    }));
    pd.stream.write(encodeFrame({ op: 'buffer', buffer: 77, fd: file, size: 4096 }));
    pd.stream.write(encodeFrame({ op: 'copy', id: 999_999, ops: [{ source: { domid: 0x7fef, ref: 1, offset: 0 }, dest: { buffer: 77, offset: 0 }, len: 8 }] }));
    assert.deepEqual((await within('the copy\'s answer', answered, 5000)).statuses, [GNTST.bad_copy_arg]);
    closeSync(file);
    // a frame whose header claims more than the limit: that stream is dropped
    const bad = Buffer.alloc(8);
    bad.writeUInt32LE(4 + (2 << 20), 0);
    bad.writeUInt32LE(2 << 20, 4);
    pd.stream.write(bad);
    await within('the hostile stream to be dropped', pd.devices.closed, 5000);
    // the other process domain, and the hypervisor, go on
    const port = ts.hv.allocUnbound(ok.domid, ok.domid);
    assert.ok(await ok.devices.evtchn.bindInterdomain(ok.domid, port, () => {}) > 0, 'a loopback bind still works');
    pd.kill();
    ok.kill();
  } finally {
    closeAll();
    await ts.shutdown();
    rmSync(dir, { recursive: true, force: true });
  }
});
