// The control domain's driver domains: each a process (`xenode
// driver-domain`) that is a domain of its own, reaching the hypervisor only
// through its privileged stream and xenstore only as itself. The toolstack
// starts one on first use of its name (a disk's backend=<name>), gives it
// its xenstore home as libxl does a driver domain's, and starts it again
// with the same domid when it dies: the devices in its backend directory
// are still there, and so are the frontends' rings, grants and ports
// (unbound toward it now), so the new process takes each device up where
// its frontend is.
//
// A driver domain may also be a process the toolstack did not start
// (`xenode driver-domain --connect <socket>`): it connects to the
// privileged socket, says its name, and is made a domain with a domid of
// its own (the one it had before, when a process of that name connected
// earlier: its devices are still there) and a xenstore connection of its
// own; it is destroyed when it disconnects, and not restarted.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import type { Hypervisor } from '../hv/hypervisor.js';
import type { ProcessDomainInfo } from '../hv/process_domain.js';
import { encodeFrame, FrameSplitter } from '../hv/privcmd.js';
import type { XsClientBase } from './xenstored/index.js';
import type { XenstoredService } from './xenstored_service.js';
import { RestartBudget, START_TIMEOUT_MS, eachLine, streamPair } from './supervise.js';

const XENODE_JS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'xenode.js');


/** How long a driver domain has to take a new device up (libxl waits for hotplug-status the same way). */
export const DRIVER_DEVICE_TIMEOUT_MS = 10_000;

/**
 * libxl__wait_device_connection for a device a driver domain serves: until
 * its backend says hotplug-status connected; its error (hotplug-error) or
 * the timeout is thrown.
 */
export async function awaitHotplug(c: XsClientBase, backendPath: string, driver: string, timeoutMs = DRIVER_DEVICE_TIMEOUT_MS): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const st = await c.tryRead(`${backendPath}/hotplug-status`);
    if (st === 'connected') return;
    if (st === 'error') throw new Error(`driver domain '${driver}': ${(await c.tryRead(`${backendPath}/hotplug-error`)) ?? 'no reason given'}`);
    if (Date.now() > end) throw new Error(`driver domain '${driver}' did not take the device up within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Waits for each of the devices whose nodes the toolstack just wrote for
 * driver domain `driver` (awaitHotplug); the first failure, made into the
 * caller's error by `fail(i, why)`, removes every device's directories.
 */
export async function awaitDriverDevices(c: XsClientBase, nodes: { frontendPath: string; backendPath: string }[], driver: string, fail: (i: number, why: string) => Error, timeoutMs?: number): Promise<void> {
  try {
    for (const [i, n] of nodes.entries()) {
      try {
        await awaitHotplug(c, n.backendPath, driver, timeoutMs);
      } catch (e) {
        throw fail(i, (e as Error).message);
      }
    }
  } catch (e) {
    for (const n of nodes) for (const p of [n.frontendPath, n.backendPath]) await c.rm(p).catch(() => {});
    throw e;
  }
}

/** A driver domain's name as a device's backend= gives it, or why it is not one (a domid is only known once it runs). */
export function driverNameProblem(name: string): string | null {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name)) return `backend '${name}': not a driver domain name (letters, digits, '.', '_', '-')`;
  if (/^\d+$/.test(name)) return `backend '${name}': name the driver domain (a domid is only known once it runs)`;
  return null;
}

export interface DriverDomain {
  name: string;
  domid: number;
  /** started by the toolstack (and restarted), or a process that connected by itself */
  connected?: boolean;
  /** the process serving it now (null between a death and its restart) */
  pid: number | null;
  /** how many times it was started (1 for a domain that never died) */
  starts: number;
}

interface Running extends DriverDomain {
  /** the hypervisor's record of its current life (a late exit must not destroy a later one's) */
  info: ProcessDomainInfo;
  child: ChildProcess | null;
  /** resolves once the process has said it is up */
  ready: Promise<void>;
  deaths: RestartBudget;
  stopping: boolean;
  exited: Promise<void>;
}

export class DriverDomains {
  private readonly byName = new Map<string, Running>();
  /** processes that connected by themselves, by name; and the domid each name had, kept for its next connection */
  private readonly joined = new Map<string, { domid: number; pid: number; info: ProcessDomainInfo; sock: net.Socket; gone: () => void }>();
  private readonly joinedDomids = new Map<string, number>();
  private server: net.Server | null = null;

  constructor(private readonly hv: Hypervisor, private readonly xs: XenstoredService, private readonly client: XsClientBase, private readonly log: (line: string) => void) {
    // a xenstored started again has none of their connections: each driver domain it started gets a new stream
    xs.onRestart(() => {
      for (const r of this.byName.values()) if (r.child?.connected) void this.newXenstoreStream(r);
    });
  }

  private async newXenstoreStream(r: Running): Promise<void> {
    const child = r.child;
    try {
      const pair = await streamPair();
      if (r.child !== child || !child?.connected) {
        pair.near.destroy();
        pair.far.destroy();
        return;
      }
      this.xs.attachDomainStream(pair.far, r.domid);
      child.send({ op: 'xenstore' }, pair.near, (e) => {
        if (e) this.log(`d${r.domid} (${r.name}): its new xenstore stream could not be handed over: ${e.message}`);
      });
    } catch (e) {
      this.log(`d${r.domid} (${r.name}): no new xenstore stream: ${(e as Error).message}`);
    }
  }

  list(): DriverDomain[] {
    const joined = [...this.joined.entries()].map(([name, j]) => ({ name, domid: j.domid, pid: j.pid, starts: 1, connected: true }));
    return [...[...this.byName.values()].map(({ name, domid, pid, starts }) => ({ name, domid, pid, starts })), ...joined];
  }

  get(name: string): DriverDomain | undefined {
    const j = this.joined.get(name);
    return this.byName.get(name) ?? (j ? { name, domid: j.domid, pid: j.pid, starts: 1, connected: true } : undefined);
  }

  /**
   * Serves the privileged socket at `socketPath` (mode 0600: the toolstack's user) for driver domains that
   * connect by themselves: a hello frame {op: 'hello', name, pid} is answered {op: 'welcome', domid,
   * xenstore} naming a one-shot socket for its xenstore connection; then the stream is its privileged
   * interface. A name in use, or a bad one, is refused with {op: 'refused', why} and the stream closed.
   */
  async listen(socketPath: string): Promise<void> {
    try { fs.unlinkSync(socketPath); } catch { /* none there */ }
    const server = net.createServer((s) => this.accept(s, path.dirname(socketPath)));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => { server.off('error', reject); resolve(); });
    });
    fs.chmodSync(socketPath, 0o600);
    this.server = server;
  }

  private accept(s: net.Socket, dir: string): void {
    const frames = new FrameSplitter();
    const refuse = (why: string) => {
      this.log(`driver domain connection refused: ${why}`);
      s.end(encodeFrame({ op: 'refused', why }));
    };
    const onData = (chunk: Buffer) => {
      frames.push(chunk);
      let f;
      try { f = frames.next(); } catch (e) { return refuse((e as Error).message); }
      if (!f) return;
      s.off('data', onData);
      const h = f.header;
      if (h.op !== 'hello' || typeof h.name !== 'string' || !Number.isInteger(h.pid)) return refuse('the first frame must be {op: "hello", name, pid}');
      const bad = driverNameProblem(h.name);
      if (bad) return refuse(bad);
      if (this.byName.has(h.name) || this.joined.has(h.name)) return refuse(`a driver domain called '${h.name}' is running`);
      this.join(s, h.name, h.pid as number, dir).catch((e: unknown) => refuse((e as Error).message));
    };
    s.on('data', onData);
    s.on('error', () => {});
  }

  private async join(s: net.Socket, name: string, pid: number, dir: string): Promise<void> {
    const info = this.hv.createProcessDomain({ name, domid: this.joinedDomids.get(name) });
    const domid = info.domid;
    this.joinedDomids.set(name, domid);
    let xsServer: net.Server | null = null;
    const xsPath = path.join(dir, `xenode-xs-d${domid}.sock`);
    const gone = () => {
      if (this.joined.get(name)?.info !== info) return;
      this.joined.delete(name);
      xsServer?.close();
      try { fs.unlinkSync(xsPath); } catch { /* taken already */ }
      this.hv.destroyProcessDomain(domid, info);
      this.log(`d${domid} (${name}): driver domain disconnected`);
    };
    this.joined.set(name, { domid, pid, info, sock: s, gone });
    s.once('close', gone);
    try {
      await this.writeHome({ domid, name });
      // its xenstore connection: a socket of its own, taken once
      try { fs.unlinkSync(xsPath); } catch { /* none */ }
      // paused: a stream xenstored takes over must not have been read from here
      xsServer = net.createServer({ pauseOnConnect: true }, (x) => {
        xsServer?.close();
        try { fs.unlinkSync(xsPath); } catch { /* gone */ }
        this.xs.attachDomainStream(x, domid);
      });
      await new Promise<void>((resolve) => xsServer!.listen(xsPath, resolve));
      fs.chmodSync(xsPath, 0o600);
      this.hv.servePrivcmd(domid, s, { mayMap: true, peerPid: pid });
      s.write(encodeFrame({ op: 'welcome', domid, xenstore: xsPath }));
      this.log(`d${domid} (${name}): driver domain connected (pid ${pid})`);
    } catch (e) {
      s.destroy();
      gone();
      throw e;
    }
  }

  /** The driver domain called `name`, started if it is not running yet (one that connected by itself is used as it is). */
  async ensure(name: string): Promise<DriverDomain> {
    const j = this.get(name);
    if (j?.connected) return j;
    // a name a process took by connecting is its own: the toolstack does not start one in its place
    if (this.joinedDomids.has(name)) throw new Error(`driver domain '${name}' (d${this.joinedDomids.get(name)}) connected by itself and is not connected now: start it again`);
    const have = this.byName.get(name);
    if (have) {
      await have.ready;
      return have;
    }
    const bad = driverNameProblem(name);
    if (bad) throw new Error(bad);
    const info = this.hv.createProcessDomain({ name });
    const r: Running = { name, domid: info.domid, info, pid: null, starts: 0, child: null, ready: Promise.resolve(), deaths: new RestartBudget(), stopping: false, exited: Promise.resolve() };
    this.byName.set(name, r);
    try {
      await this.writeHome(r);
      await this.launch(r);
      await r.ready;
    } catch (e) {
      this.byName.delete(name);
      r.stopping = true;
      r.child?.kill('SIGKILL');
      await r.exited;
      this.hv.destroyProcessDomain(r.domid, r.info);
      await this.client.rm(`/local/domain/${r.domid}`).catch(() => {});
      throw e;
    }
    return r;
  }

  /** libxl's home for a domain: /local/domain/<id> the control domain's, readable by the domain, name and domid. */
  private async writeHome(r: { domid: number; name: string }): Promise<void> {
    const home = `/local/domain/${r.domid}`;
    await this.client.transaction(async (tx) => {
      await this.client.write(home, '', tx);
      await this.client.setPerms(home, ['n0', `r${r.domid}`], tx);
      await this.client.write(`${home}/name`, r.name, tx);
      await this.client.write(`${home}/domid`, String(r.domid), tx);
    });
  }

  private async launch(r: Running): Promise<void> {
    // its xenstore stream: one end its fd 4, the other never read here, so that xenstored (maybe another process) can take it
    const pair = await streamPair();
    const child = spawn(process.execPath, [XENODE_JS, 'driver-domain', '--domid', String(r.domid), '--name', r.name], {
      // fd 5: the IPC channel a new xenstore stream comes over when xenstored is started again
      stdio: ['ignore', 'ignore', 'pipe', 'pipe', pair.near, 'ipc'],
    });
    pair.near.destroy(); // the child has its own copy
    r.child = child;
    r.pid = child.pid ?? null;
    r.starts++;
    const priv = child.stdio[3] as net.Socket, store = pair.far;
    // a trusted driver domain: it maps its frontends' rings; its copy buffers are memory files of its process
    this.hv.servePrivcmd(r.domid, priv, { mayMap: true, peerPid: child.pid });
    this.xs.attachDomainStream(store, r.domid);
    let up!: () => void, failed!: (e: Error) => void;
    r.ready = new Promise<void>((res, rej) => { up = res; failed = rej; });
    r.ready.catch(() => {});
    // a process that neither comes up nor dies is killed, and its exit says why
    const late = setTimeout(() => {
      failed(new Error(`driver domain '${r.name}' did not come up within ${START_TIMEOUT_MS / 1000} s`));
      child.kill('SIGKILL');
    }, START_TIMEOUT_MS);
    r.ready.then(() => clearTimeout(late), () => clearTimeout(late));
    let wasUp = false;
    const said = eachLine(child.stderr!, (line) => {
      this.log(line);
      if (/driver domain up/.test(line)) {
        wasUp = true;
        up();
      }
    });
    r.exited = new Promise<void>((res) => {
      child.once('exit', (code, signal) => {
        const how = signal ? `killed by ${signal}` : `exited with ${code}`;
        failed(new Error(`driver domain '${r.name}' ${how} before it was up${said() ? `: ${said().trim()}` : ''}`));
        priv.destroy();
        store.destroy();
        r.child = null;
        r.pid = null;
        // its ports go back to unbound toward its domid and its grant mappings are dropped, as Xen's domain_kill
        this.hv.destroyProcessDomain(r.domid, r.info);
        res();
        // a first life that never came up fails the device that asked for it (ensure), rather than looping
        if (r.stopping || (!wasUp && r.starts === 1)) return;
        this.log(`d${r.domid} (${r.name}): driver domain ${how}`);
        this.restart(r);
      });
    });
  }

  private restart(r: Running): void {
    if (!r.deaths.died()) {
      this.log(`d${r.domid} (${r.name}): ${r.deaths.why}; left down (its devices wait for it)`);
      return;
    }
    const failed = (e: unknown) => this.log(`d${r.domid} (${r.name}): cannot start it again: ${(e as Error).message}`);
    try {
      r.info = this.hv.createProcessDomain({ name: r.name, domid: r.domid });
    } catch (e) {
      return failed(e);
    }
    this.launch(r).then(() => this.log(`d${r.domid} (${r.name}): driver domain started again (pid ${r.pid})`), (e: unknown) => {
      this.hv.destroyProcessDomain(r.domid, r.info);
      failed(e);
    });
  }

  /** Stops every driver domain (SIGTERM, then SIGKILL; one that connected by itself is disconnected) and removes their homes. */
  async stopAll(): Promise<void> {
    this.server?.close();
    this.server = null;
    for (const j of [...this.joined.values()]) {
      j.gone();
      j.sock.destroy();
      await this.client.rm(`/local/domain/${j.domid}`).catch(() => {});
    }
    for (const r of this.byName.values()) {
      r.stopping = true;
      r.child?.kill('SIGTERM');
      const t = setTimeout(() => r.child?.kill('SIGKILL'), 3000);
      await r.exited;
      clearTimeout(t);
      await this.client.rm(`/local/domain/${r.domid}`).catch(() => {});
    }
    this.byName.clear();
  }
}
