// The domain configuration the toolstack works from: what an xl.cfg file (plus
// command-line `key=value` overrides) says about one domain, validated and
// typed. The parser (cfg.ts) produces it; the daemon persists it as JSON and
// the builder consumes it. Field names follow xl.cfg's keys.

/** xl.cfg's on_poweroff/on_reboot/on_crash/on_watchdog/on_soft_reset actions (libxl_action_on_shutdown). */
export type ShutdownAction =
  | 'destroy' | 'restart' | 'rename-restart' | 'preserve'
  | 'coredump-destroy' | 'coredump-restart' | 'soft-reset';

/** One `disk=[...]` entry (xl-disk-configuration). */
export interface DiskSpec {
  target: string;
  format: 'raw' | 'qcow' | 'qcow2' | 'vhd' | 'qed';
  vdev: string;
  access: 'r' | 'rw';
  devtype: 'disk' | 'cdrom';
  backend: string;
  backendtype?: 'phy' | 'qdisk' | 'standalone' | 'tap';
  script?: string;
  directIoSafe: boolean;
  discard?: boolean;
  trusted: boolean;
  specification?: string;
}

/** One `vif=[...]` entry (xl-network-configuration). */
export interface VifSpec {
  mac: string;
  bridge: string;
  type?: string;
  model?: string;
  vifname?: string;
  script?: string;
  ip?: string;
  backend: string;
  rate?: string;
  devid?: number;
  mtu?: number;
  vlan?: string;
  gatewaydev?: string;
  trusted: boolean;
}

export interface DomainConfig {
  name: string;
  type: 'pvh';
  /** canonical 8-4-4-4-12 lower-case; generated when the file has none */
  uuid: string;
  memory: number; // MiB
  maxmem: number; // MiB, >= memory
  vcpus: number;
  maxvcpus: number;
  /** hard affinity, pCPU numbers; null = all */
  cpus: number[] | null;
  cpusSoft: number[] | null;
  /**
   * per-vCPU hard/soft affinity when `cpus`/`cpus_soft` is a list (entry i for
   * vCPU i, null = all; vCPUs past the list: all); `cpus`/`cpusSoft` then hold the union
   */
  cpusPerVcpu?: (number[] | null)[];
  cpusSoftPerVcpu?: (number[] | null)[];
  /** absolute path of the kernel image */
  kernel: string;
  ramdisk?: string;
  /** ACPI tables for the guest (xl.cfg acpi; absent: libxl's default for PVH, on) */
  acpi?: boolean;
  cmdline: string;
  onPoweroff: ShutdownAction;
  onReboot: ShutdownAction;
  onCrash: ShutdownAction;
  onWatchdog: ShutdownAction;
  onSoftReset: ShutdownAction;
  /** cpupool name and scheduling parameters: stored for the scheduler issue */
  pool?: string;
  sched: { weight?: number; cap?: number; period?: number; slice?: number; latency?: number; extratime?: number };
  maxGrantFrames: number;
  maxEventChannels: number;
  seclabel?: string;
  initSeclabel?: string;
  disks: DiskSpec[];
  vifs: VifSpec[];
  /** daemon extension: start this domain when the daemon starts (xendomains' job) */
  autostart: boolean;
  /**
   * xenode extension (exclusive_ms): the right to have the whole machine to
   * itself, for at most this many ms at a time (SCHEDOP_xenode_exclusive);
   * absent = not granted
   */
  exclusiveMs?: number;
}
