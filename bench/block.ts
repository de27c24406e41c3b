// Disk throughput as a Linux guest sees it: Debian's cloud kernel reading and
// writing a raw image with O_DIRECT dd, xenode (xen-blkfront -> blkback)
// against QEMU (virtio-blk on microvm), same kernel, same image size, same
// guest script, in one run.
//
//   node dist/bench/block.js [--n 3] [--mib 256] [--format raw|qcow2] [--no-qemu] [--json FILE]
//
// The event timed is inside the guest, by its own clock (/proc/uptime, 10 ms
// resolution): from before to after
//   dd if=<disk> of=/dev/null bs=1M count=<mib> iflag=direct       (read)
//   dd if=/dev/zero of=<disk> bs=1M count=<mib> oflag=direct conv=fsync  (write, flushed)
// on xenode's /dev/xvda (`xenode run --disk <img>,raw,xvda,rw`), served by the
// control domain's blkback and, in a second kind, by a driver domain's
// (backend=blkdd: a process of its own, every request's data through grant
// copies over its privileged stream), and on QEMU's /dev/vda (-drive
// file=<img>,format=raw,if=none -device virtio-blk-device). The host runs
// the same two dd commands on an image file of its own (raw only), timed by
// its clock (date +%s.%N): the native figure the guests are held against.
// Then 4 KiB random reads and writes, O_DIRECT, one at a time (bench/randio.c,
// built static here and put in each initramfs; the host runs the same
// binary on its file): IOPS and each request's latency, p50 and p99, timed
// around each pread/pwrite by the guest's CLOCK_MONOTONIC.
// Both images are sparse files on the same host filesystem, both through the
// host's page cache; with --format qcow2 both are qcow2 (made by qemu-img),
// which xenode serves through qemu-nbd and QEMU reads itself. Booting is not
// timed.

import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT, XENODE_JS, benchArgs, hostTscKhz, fmt, machine, numArg, printMachine, stats, statsRow, STATS_HEADERS, table, writeJson, type Stats } from './common.js';
import { busyboxInitramfs, busyboxPath, linuxBzImage, linuxDir, linuxElf } from '../src/testing/initramfs.js';

const QEMU = 'qemu-system-x86_64';
const MODULES = path.join(linuxDir, 'modules');

const USAGE = `
usage: node dist/bench/block.js [--n N] [--mib M] [--format raw|qcow2] [--no-qemu] [--json FILE]

Debian's cloud kernel (scripts/fetch-linux.sh) reads and writes M MiB of a raw
disk with O_DIRECT dd, timed by the guest: xenode's xen-blkfront/blkback (in the
control domain and in a driver domain) against QEMU microvm's virtio-blk
(-accel tcg) and the host's own dd on a file, interleaved, medians over N rounds.

  --n N          rounds (default 3)
  --mib M        MiB read and written per round (default 256)
  --format F     the images' format: raw (default) or qcow2 (xenode through qemu-nbd)
  --no-qemu      xenode alone
  --json FILE    also write the figures as JSON
`;

/** 4 KiB random requests per direction and round */
const RANDOM_OPS = 2000;

function randomIo(cmd: string, dev: string, mib: number): string[] {
  return [`${cmd} read ${dev} ${RANDOM_OPS} ${mib}`, `${cmd} write ${dev} ${RANDOM_OPS} ${mib}`];
}

function guestScript(mib: number, dev: string, modules: string[], randio: boolean): string {
  const up = 'cut -d" " -f1 /proc/uptime';
  return [
    'mount -t proc proc /proc', 'mount -t sysfs sysfs /sys', 'mount -t devtmpfs devtmpfs /dev',
    ...modules.map((m) => `insmod /${m}.ko`),
    `for i in $(seq 1 300); do [ -b ${dev} ] && break; sleep 0.1; done`,
    `[ -b ${dev} ] || echo "bench: no ${dev}"`,
    `t0=$(${up}); dd if=${dev} of=/dev/null bs=1M count=${mib} iflag=direct 2>/dev/null; t1=$(${up}); echo "bench: read $t0 $t1"`,
    `t0=$(${up}); dd if=/dev/zero of=${dev} bs=1M count=${mib} oflag=direct conv=fsync 2>/dev/null; t1=$(${up}); echo "bench: write $t0 $t1"`,
    ...(randio ? ['chmod +x /randio', ...randomIo('/randio', dev, mib)] : []),
    'poweroff -f', '',
  ].join('\n');
}

interface Random { iops: number; p50Us: number; p99Us: number }
interface Sample { readS: number; writeS: number; randRead: Random | null; randWrite: Random | null; out: string }

function randomOf(out: string, mode: 'read' | 'write'): Random | null {
  const m = new RegExp(`randio: ${mode} ops=\\d+ secs=[\\d.]+ iops=(\\d+) p50_us=([\\d.]+) p99_us=([\\d.]+)`).exec(out);
  return m ? { iops: Number(m[1]), p50Us: Number(m[2]), p99Us: Number(m[3]) } : null;
}

function runGuest(cmd: string, args: string[], timeoutMs: number): Promise<Sample> {
  return new Promise((resolve, reject) => {
    let out = '';
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO_ROOT });
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.stdout.on('data', (d: Buffer) => { out += d.toString('latin1'); });
    p.stderr.on('data', (d: Buffer) => { out += d.toString('latin1'); });
    p.once('error', reject);
    p.once('exit', () => {
      clearTimeout(timer);
      const span = (what: string) => {
        const m = new RegExp(`bench: ${what} ([\\d.]+) ([\\d.]+)`).exec(out);
        return m ? Number(m[2]) - Number(m[1]) : NaN;
      };
      resolve({ readS: span('read'), writeS: span('write'), randRead: randomOf(out, 'read'), randWrite: randomOf(out, 'write'), out });
    });
  });
}

async function main(): Promise<void> {
  const { values } = benchArgs(USAGE, (args) => parseArgs({
    args,
    options: {
      n: { type: 'string', default: '3' },
      mib: { type: 'string', default: '256' },
      format: { type: 'string', default: 'raw' },
      json: { type: 'string' },
      'no-qemu': { type: 'boolean', default: false },
    },
  }));
  const N = numArg(values.n, '--n', USAGE);
  const mib = numArg(values.mib, '--mib', USAGE);
  const format = values.format;
  if (format !== 'raw' && format !== 'qcow2') {
    process.stderr.write(`--format must be raw or qcow2\n${USAGE}`);
    process.exit(2);
  }
  const m = machine();
  printMachine(m);
  if (!fs.existsSync(XENODE_JS)) throw new Error('build first: npm run build');
  for (const f of [linuxBzImage, linuxElf, busyboxPath, path.join(MODULES, 'xen-blkfront.ko'), path.join(MODULES, 'virtio_blk.ko')]) {
    if (!fs.existsSync(f)) throw new Error(`${f} is missing: run scripts/fetch-linux.sh`);
  }
  const version = fs.readFileSync(path.join(linuxDir, 'VERSION'), 'utf8').trim();
  console.log(`kernel: ${version}`);
  const haveQemu = !values['no-qemu'] && spawnSync(QEMU, ['--version']).status === 0;
  if (!values['no-qemu'] && !haveQemu) console.log('\n' + '!'.repeat(78) + `\n!!! ${QEMU} NOT FOUND (apt-get install qemu-system-x86): xenode alone, NO QEMU COMPARISON\n` + '!'.repeat(78) + '\n');
  const qemuVersion = haveQemu ? spawnSync(QEMU, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0]! : null;
  if (qemuVersion) console.log(`qemu: ${qemuVersion}`);
  const { chooseAccel } = await import('../src/hv/accel.js');
  console.log(`xenode's CPU: ${chooseAccel('auto').why}`);

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-block-'));
  const randio = path.join(tmp, 'randio');
  const cc = spawnSync('gcc', ['-static', '-O2', '-o', randio, path.join(REPO_ROOT, 'bench', 'randio.c')], { encoding: 'utf8' });
  const haveRandio = cc.status === 0;
  if (!haveRandio) console.log('\n' + '!'.repeat(78) + `\n!!! bench/randio.c does not build static (${(cc.stderr || cc.error?.message || '').trim().split('\n')[0]}): NO RANDOM I/O FIGURES\n` + '!'.repeat(78) + '\n');
  const mod = (names: string[]) => Object.fromEntries(names.map((n) => [`${n}.ko`, fs.readFileSync(path.join(MODULES, `${n}.ko`))]));
  const xenMods = ['xen-blkfront'], virtioMods = ['virtio_ring', 'virtio', 'virtio_mmio', 'virtio_blk'];
  const xenInitrd = path.join(tmp, 'xen.gz'), virtioInitrd = path.join(tmp, 'virtio.gz');
  const extra: Record<string, Uint8Array> = haveRandio ? { randio: fs.readFileSync(randio) } : {};
  fs.writeFileSync(xenInitrd, busyboxInitramfs({ init: guestScript(mib, '/dev/xvda', xenMods, haveRandio), files: { ...mod(xenMods), ...extra } }));
  fs.writeFileSync(virtioInitrd, busyboxInitramfs({ init: guestScript(mib, '/dev/vda', virtioMods, haveRandio), files: { ...mod(virtioMods), ...extra } }));
  const image = (name: string) => {
    const f = path.join(tmp, name);
    if (format === 'qcow2') {
      const r = spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', f, `${mib + 8}M`], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`qemu-img create: ${r.stderr || r.error?.message} (apt-get install qemu-utils)`);
      return f;
    }
    fs.writeFileSync(f, '');
    fs.truncateSync(f, (mib + 8) * 1024 * 1024);
    return f;
  };
  const xenImg = image('xen.img'), qemuImg = image('qemu.img');
  const xenRun = (disk: string) => [XENODE_JS, 'run', linuxBzImage, '--memory', '256', '--ramdisk', xenInitrd, '--cmdline', 'console=hvc0', '--disk', disk, '--quiet'];
  const kinds: { name: string; cmd: string; args: string[] }[] = [
    { name: 'xenode: xen-blkfront -> blkback', cmd: process.execPath, args: xenRun(`${xenImg},${format},xvda,rw`) },
    { name: 'xenode: xen-blkfront -> driver domain', cmd: process.execPath, args: xenRun(`format=${format}, vdev=xvda, access=rw, backend=blkdd, target=${xenImg}`) },
  ];
  if (format === 'raw') {
    const hostImg = image('host.img');
    const now = 'date +%s.%N';
    kinds.push({
      name: 'host: dd on an image file', cmd: 'sh',
      args: ['-c', [
        `t0=$(${now}); dd if=${hostImg} of=/dev/null bs=1M count=${mib} iflag=direct 2>/dev/null; t1=$(${now}); echo "bench: read $t0 $t1"`,
        `t0=$(${now}); dd if=/dev/zero of=${hostImg} bs=1M count=${mib} oflag=direct conv=fsync,notrunc 2>/dev/null; t1=$(${now}); echo "bench: write $t0 $t1"`,
        ...(haveRandio ? randomIo(randio, hostImg, mib) : []),
      ].join('; ')],
    });
  }
  if (haveQemu) {
    kinds.push({
      name: 'qemu microvm -accel tcg: virtio-blk', cmd: QEMU,
      args: ['-accel', 'tcg', '-M', 'microvm', '-m', '256', '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-no-reboot',
        '-kernel', linuxElf, '-initrd', virtioInitrd, '-append', `console=ttyS0 tsc_early_khz=${hostTscKhz()}`,
        '-drive', `id=d0,file=${qemuImg},format=${format},if=none`, '-device', 'virtio-blk-device,drive=d0'],
    });
  }
  const rd: Record<string, number[]> = Object.fromEntries(kinds.map((k) => [k.name, []]));
  const rnd: Record<string, { read: Random[]; write: Random[] }> = Object.fromEntries(kinds.map((k) => [k.name, { read: [], write: [] }]));
  const wr: Record<string, number[]> = Object.fromEntries(kinds.map((k) => [k.name, []]));
  console.log(`\n${N} rounds of ${mib} MiB, ${format} images, interleaved: ${kinds.map((k) => k.name).join(' | ')}`);
  for (let i = 0; i < N; i++) {
    for (let j = 0; j < kinds.length; j++) {
      const k = kinds[(i + j) % kinds.length]!;
      const s = await runGuest(k.cmd, k.args, 600_000);
      if (!(s.readS > 0) || !(s.writeS > 0)) {
        console.log(`!!! ${k.name}: no timing line (not counted); its output ended with:\n${s.out.slice(-1500)}`);
        continue;
      }
      rd[k.name]!.push(mib / s.readS);
      wr[k.name]!.push(mib / s.writeS);
      if (s.randRead) rnd[k.name]!.read.push(s.randRead);
      if (s.randWrite) rnd[k.name]!.write.push(s.randWrite);
      const r = s.randRead && s.randWrite ? `; 4k random read ${s.randRead.iops} / write ${s.randWrite.iops} IOPS` : '';
      console.log(`  round ${i + 1}: ${k.name}: read ${fmt(mib / s.readS, 1)} MiB/s, write ${fmt(mib / s.writeS, 1)} MiB/s${r}`);
    }
  }
  const st = (x: Record<string, number[]>): Record<string, Stats> => Object.fromEntries(kinds.map((k) => [k.name, stats(x[k.name]!)]));
  const rs = st(rd), ws = st(wr);
  console.log(`\nO_DIRECT dd read, ${mib} MiB, bs=1M, ${format} images, timed by the guest (MiB/s)`);
  table(STATS_HEADERS('MiB/s'), kinds.map((k) => statsRow(k.name, rs[k.name]!, 1)));
  console.log(`\nO_DIRECT dd write + fsync, ${mib} MiB, bs=1M, ${format} images, timed by the guest (MiB/s)`);
  table(STATS_HEADERS('MiB/s'), kinds.map((k) => statsRow(k.name, ws[k.name]!, 1)));
  const randomStats: Record<string, Record<string, Stats>> = {};
  if (haveRandio) {
    for (const mode of ['read', 'write'] as const) {
      for (const [what, f] of [['IOPS', (r: Random) => r.iops], ['p50 latency us', (r: Random) => r.p50Us], ['p99 latency us', (r: Random) => r.p99Us]] as const) {
        const key = `${mode} ${what}`;
        randomStats[key] = Object.fromEntries(kinds.map((k) => [k.name, stats(rnd[k.name]![mode].map(f))]));
        console.log(`\n4 KiB random ${mode}, O_DIRECT, queue depth 1, ${RANDOM_OPS} requests over ${mib} MiB (${what}, per round)`);
        table(STATS_HEADERS(what), kinds.map((k) => statsRow(k.name, randomStats[key]![k.name]!, 1)));
      }
    }
  }
  const ratios: Record<string, number> = {};
  if (haveQemu) {
    const q = 'qemu microvm -accel tcg: virtio-blk', x = kinds[0]!.name;
    ratios.read = rs[x]!.median / rs[q]!.median;
    ratios.write = ws[x]!.median / ws[q]!.median;
    console.log(`\nratio xenode / QEMU (medians, higher is faster): read ${fmt(ratios.read)}x, write ${fmt(ratios.write)}x`);
  }
  const dd = 'xenode: xen-blkfront -> driver domain', h = 'host: dd on an image file';
  ratios.driverDomainRead = rs[dd]!.median / rs[kinds[0]!.name]!.median;
  ratios.driverDomainWrite = ws[dd]!.median / ws[kinds[0]!.name]!.median;
  console.log(`ratio driver domain / control domain blkback (medians): read ${fmt(ratios.driverDomainRead)}x, write ${fmt(ratios.driverDomainWrite)}x`);
  if (rs[h]) {
    ratios.hostRead = rs[kinds[0]!.name]!.median / rs[h]!.median;
    ratios.hostWrite = ws[kinds[0]!.name]!.median / ws[h]!.median;
    console.log(`ratio xenode (control domain) / host dd (medians): read ${fmt(ratios.hostRead)}x, write ${fmt(ratios.hostWrite)}x`);
    if (haveRandio) {
      for (const mode of ['read', 'write'] as const) {
        const iops = randomStats[`${mode} IOPS`]!;
        ratios[`random${mode === 'read' ? 'Read' : 'Write'}Host`] = iops[kinds[0]!.name]!.median / iops[h]!.median;
        ratios[`random${mode === 'read' ? 'Read' : 'Write'}DriverDomain`] = iops[dd]!.median / iops[kinds[0]!.name]!.median;
      }
      console.log(`ratio 4k random IOPS, xenode (control domain) / host: read ${fmt(ratios.randomReadHost!)}x, write ${fmt(ratios.randomWriteHost!)}x; driver domain / control domain: read ${fmt(ratios.randomReadDriverDomain!)}x, write ${fmt(ratios.randomWriteDriverDomain!)}x`);
    }
  }
  fs.rmSync(tmp, { recursive: true, force: true });
  writeJson(values.json, { bench: 'block', machine: m, kernel: version, qemu: qemuVersion, n: N, mib, format, readMiBs: rs, writeMiBs: ws, random: randomStats, ratios });
}

await main();
