// The daemon's state directory (libxl's /var/lib/xen plus xendomains'
// /etc/xen/auto), all plain JSON so a person can read it:
//
//   <state>/xenode.log              the daemon's log
//   <state>/domains/<domid>.json    config of each live domain (libxl's userdata), removed on destroy
//   <state>/auto/<uuid>.json        configs with autostart: true, re-created when the daemon starts
//   <state>/console/<name>.log      each domain's console output (capped, rotated to .log.1)

import fs from 'node:fs';
import path from 'node:path';
import type { DomainConfig } from '../xl/config.js';

export interface DomainRecordFile {
  domid: number;
  name: string;
  uuid: string;
  /** ISO time of creation */
  created: string;
  config: DomainConfig;
}

export class StateDir {
  readonly domainsDir: string;
  readonly autoDir: string;
  readonly consoleDir: string;
  readonly logFile: string;
  private logFd = -1;
  /** per-file chains of background writes: a file's writes land in order, none on the main thread's time */
  private readonly writes = new Map<string, Promise<void>>();

  constructor(readonly dir: string) {
    this.domainsDir = path.join(dir, 'domains');
    this.autoDir = path.join(dir, 'auto');
    this.consoleDir = path.join(dir, 'console');
    this.logFile = path.join(dir, 'xenode.log');
  }

  /** Creates the layout (0700: configs name kernels, consoles carry guest output). */
  init(): void {
    for (const d of [this.dir, this.domainsDir, this.autoDir, this.consoleDir]) fs.mkdirSync(d, { recursive: true, mode: 0o700 });
    this.logFd = fs.openSync(this.logFile, 'a', 0o600);
  }

  log(line: string): void {
    if (this.logFd < 0) return;
    try { fs.writeSync(this.logFd, `${new Date().toISOString()} ${line}\n`); } catch { /* disk full: keep running */ }
  }

  close(): void {
    if (this.logFd >= 0) fs.closeSync(this.logFd);
    this.logFd = -1;
  }

  /**
   * Records a live domain, in the background: the record only tells a
   * restarted daemon which domains died with the last one, so it need not
   * hold up the create (the write costs more than the rest of the create's
   * main-thread work on a slow disk). Failures go to the log.
   */
  saveDomain(r: DomainRecordFile): void {
    const file = path.join(this.domainsDir, `${r.domid}.json`);
    const text = JSON.stringify(r, null, 2) + '\n';
    this.inBackground(file, async () => {
      const tmp = `${file}.tmp`;
      await fs.promises.writeFile(tmp, text, { mode: 0o600 });
      await fs.promises.rename(tmp, file);
    });
  }

  removeDomain(domid: number): void {
    const file = path.join(this.domainsDir, `${domid}.json`);
    this.inBackground(file, () => fs.promises.rm(file, { force: true }));
  }

  private inBackground(file: string, op: () => Promise<void>): void {
    const p = (this.writes.get(file) ?? Promise.resolve())
      .then(op)
      .catch((e: unknown) => this.log(`${file}: ${e instanceof Error ? e.message : String(e)}`))
      .then(() => { if (this.writes.get(file) === p) this.writes.delete(file); });
    this.writes.set(file, p);
  }

  /** Resolves once every background write has landed (daemon stop, tests). */
  async flush(): Promise<void> {
    while (this.writes.size) await Promise.all(this.writes.values());
  }

  /** Records left by a daemon that did not stop cleanly: those domains died with it. */
  staleDomains(): DomainRecordFile[] {
    return readJsonDir<DomainRecordFile>(this.domainsDir);
  }

  clearDomains(): void {
    for (const f of jsonFiles(this.domainsDir)) rmQuiet(path.join(this.domainsDir, f));
  }

  saveAuto(cfg: DomainConfig): void {
    writeJsonAtomic(path.join(this.autoDir, `${cfg.uuid}.json`), cfg);
  }

  removeAuto(uuid: string): void {
    rmQuiet(path.join(this.autoDir, `${uuid}.json`));
  }

  /** Autostart configs, by name; unreadable files are reported, not fatal. */
  autoConfigs(onError: (file: string, e: Error) => void): DomainConfig[] {
    return readJsonDir<DomainConfig>(this.autoDir, onError).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
}

function jsonFiles(dir: string): string[] {
  try { return fs.readdirSync(dir).filter((f) => f.endsWith('.json')); } catch { return []; }
}

function readJsonDir<T>(dir: string, onError?: (file: string, e: Error) => void): T[] {
  const out: T[] = [];
  for (const f of jsonFiles(dir)) {
    const p = path.join(dir, f);
    try { out.push(JSON.parse(fs.readFileSync(p, 'utf8')) as T); } catch (e) { onError?.(p, e as Error); }
  }
  return out;
}

/** Write-then-rename, so a crash never leaves half a config. */
function writeJsonAtomic(file: string, v: unknown): void {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(v, null, 2) + '\n', { mode: 0o600 });
  fs.renameSync(tmp, file);
}

function rmQuiet(file: string): void {
  try { fs.unlinkSync(file); } catch { /* absent */ }
}
