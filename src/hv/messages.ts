// Messages between the control domain (main thread) and the pCPU workers.
// They carry control operations only; nothing on a guest's hot path waits
// for one.

import type { DomainSpec } from './domain.js';

export type MainToWorker =
  | { type: 'adopt'; spec: DomainSpec }
  | { type: 'pause'; domid: number }
  | { type: 'unpause'; domid: number }
  | { type: 'destroy'; domid: number }
  | { type: 'wake'; domid: number; vcpu: number }
  /** A domain exists (on whichever worker): enough to deliver events to it from this one. */
  | { type: 'known'; domid: number; sharedSab: SharedArrayBuffer; memFd: number; bytes: number }
  | { type: 'forget'; domid: number }
  | { type: 'stop' };

export type WorkerToMain =
  | { type: 'ready'; pcpu: number; tid: number }
  | { type: 'adopted'; domid: number; error?: string }
  | { type: 'console'; domid: number; source: 'console_io' | 'debugport'; text: string; eol: boolean }
  | { type: 'shutdown'; domid: number; reason: number; detail: string }
  | { type: 'destroyed'; domid: number }
  | { type: 'log'; level: 'info' | 'warn' | 'error'; text: string };
