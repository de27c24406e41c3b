// Drawing a scheduling trace: per-pCPU runs reconstructed from switch/block
// records, a per-domain table (CPU share, wake-up latency, budget exhaustions,
// deadline misses), and both as one SVG: a Gantt chart per pCPU with the table
// beside it. Pure functions of the records, so they draw a live trace or a
// simulated one the same way.

import type { TraceRecord } from '../../hv/sched/trace.js';
import { percentiles } from '../../hv/sched/sim.js';
import { EXCLUSIVE_END_NAMES } from '../../hv/abi/xenode_sched.js';

export interface Run {
  domid: number;
  vcpu: number;
  start: bigint;
  end: bigint;
}

/** What the runs of one pCPU were, from its records (oldest first), clipped to [from, to). */
export function runsOf(records: TraceRecord[], from: bigint, to: bigint): Run[] {
  const out: Run[] = [];
  let cur: { domid: number; vcpu: number; start: bigint } | null = null;
  const close = (t: bigint) => {
    if (!cur) return;
    const s = cur.start < from ? from : cur.start;
    const e = t > to ? to : t;
    if (e > s) out.push({ domid: cur.domid, vcpu: cur.vcpu, start: s, end: e });
    cur = null;
  };
  for (const r of records) {
    if (r.event === 'switch') {
      close(r.t);
      if (r.vcpu >= 0) cur = { domid: r.domid, vcpu: r.vcpu, start: r.t };
    } else if (r.event === 'block' && cur && cur.domid === r.domid && cur.vcpu === r.vcpu) close(r.t);
  }
  close(to);
  return out;
}

/** A span during which a pCPU ran only `holder`'s vCPUs (exclusive record to the next release or exclusive). */
export interface ExclusivePeriod {
  holder: number;
  /** when the holder asked (the trigger), when this pCPU had stopped the others, when it ended here (null: still held) */
  requested: bigint;
  from: bigint;
  to: bigint | null;
  /** EXCLUSIVE_END, null when not released in the trace */
  reason: number | null;
}

/** One pCPU's exclusive periods, from its records (oldest first). */
export function exclusivePeriods(records: TraceRecord[]): ExclusivePeriod[] {
  const out: ExclusivePeriod[] = [];
  let open: ExclusivePeriod | null = null;
  for (const r of records) {
    if (r.event !== 'exclusive' && r.event !== 'release') continue;
    if (open) {
      open.to = r.t;
      if (r.event === 'release') open.reason = Number(r.arg);
    }
    open = null;
    if (r.event === 'exclusive') out.push(open = { holder: r.domid, requested: r.arg, from: r.t, to: null, reason: null });
  }
  return out;
}

/**
 * Trigger to exclusivity, per period: from the request to the moment the
 * last pCPU had stopped every other domain's vCPU (the pCPUs' exclusive
 * records carry the request time). Periods some pCPU's trace lacks are left out.
 */
export function exclusiveLatencies(perPcpu: TraceRecord[][]): bigint[] {
  const byRequest = new Map<bigint, bigint[]>();
  for (const records of perPcpu) {
    for (const p of exclusivePeriods(records)) {
      const l = byRequest.get(p.requested) ?? [];
      l.push(p.from - p.requested);
      byRequest.set(p.requested, l);
    }
  }
  const out: bigint[] = [];
  for (const l of byRequest.values()) if (l.length === perPcpu.length) out.push(l.reduce((a, b) => (a > b ? a : b)));
  return out;
}

export interface DomainRow {
  domid: number;
  name: string;
  /** Share of the traced span of the pCPUs it ran on (0..1). */
  share: number;
  runNs: bigint;
  wakeups: number;
  latency: { median: bigint; p99: bigint; max: bigint };
  budget: number;
  misses: number;
}

/** The traced span: from the first record to the last of all pCPUs. */
export function span(perPcpu: TraceRecord[][]): { from: bigint; to: bigint } {
  let from = -1n;
  let to = -1n;
  for (const rs of perPcpu) {
    if (!rs.length) continue;
    if (from < 0n || rs[0]!.t < from) from = rs[0]!.t;
    if (rs[rs.length - 1]!.t > to) to = rs[rs.length - 1]!.t;
  }
  return from < 0n ? { from: 0n, to: 0n } : { from, to };
}

export function domainTable(perPcpu: TraceRecord[][], names: Map<number, string>, from: bigint, to: bigint): DomainRow[] {
  const rows = new Map<number, DomainRow & { lat: bigint[] }>();
  const row = (domid: number) => {
    let r = rows.get(domid);
    if (!r) {
      r = { domid, name: names.get(domid) ?? `d${domid}`, share: 0, runNs: 0n, wakeups: 0, latency: { median: 0n, p99: 0n, max: 0n }, budget: 0, misses: 0, lat: [] };
      rows.set(domid, r);
    }
    return r;
  };
  const pcpusOf = new Map<number, Set<number>>();
  perPcpu.forEach((records, pcpu) => {
    for (const run of runsOf(records, from, to)) {
      row(run.domid).runNs += run.end - run.start;
      let s = pcpusOf.get(run.domid);
      if (!s) pcpusOf.set(run.domid, (s = new Set()));
      s.add(pcpu);
    }
    // Wake-up latency: a wake record to the vCPU's next switch-in on this pCPU.
    const woken = new Map<string, bigint>();
    for (const r of records) {
      if (r.t < from || r.t > to) continue;
      const key = `${r.domid}.${r.vcpu}`;
      if (r.event === 'wake') woken.set(key, r.t);
      else if (r.event === 'switch' && woken.has(key)) {
        row(r.domid).lat.push(r.t - woken.get(key)!);
        woken.delete(key);
      } else if (r.event === 'budget') row(r.domid).budget++;
      else if (r.event === 'miss') row(r.domid).misses++;
    }
  });
  const spanNs = Number(to - from);
  for (const r of rows.values()) {
    r.share = spanNs > 0 ? Number(r.runNs) / (spanNs * Math.max(1, pcpusOf.get(r.domid)?.size ?? 1)) : 0;
    r.wakeups = r.lat.length;
    r.latency = percentiles(r.lat);
  }
  return [...rows.values()].filter((r) => r.domid !== 0x7fff).sort((a, b) => a.domid - b.domid).map(({ lat: _lat, ...r }) => r);
}

const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];
const esc = (s: string) => s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
const us = (ns: bigint) => (Number(ns) / 1000).toFixed(Number(ns) < 10_000 ? 1 : 0);

export interface DrawOptions {
  title: string;
  names: Map<number, string>;
  /** The part of the trace to draw (the table covers `table` or the same). */
  from: bigint;
  to: bigint;
  table?: { from: bigint; to: bigint };
}

/** An SVG Gantt chart, one lane per pCPU, with the per-domain table beside it. */
export function drawSvg(perPcpu: TraceRecord[][], o: DrawOptions): string {
  const chartW = 900;
  const left = 70;
  const laneH = 30;
  const top = 50;
  const lanes = perPcpu.length;
  const tableX = left + chartW + 30;
  const rows = domainTable(perPcpu, o.names, o.table?.from ?? o.from, o.table?.to ?? o.to);
  const width = tableX + 560;
  const height = Math.max(top + lanes * (laneH + 14) + 80, top + 40 + rows.length * 20 + 40);
  const spanNs = Number(o.to - o.from) || 1;
  const x = (t: bigint) => left + (Number(t - o.from) / spanNs) * chartW;
  const color = new Map<number, string>();
  rows.forEach((r, i) => color.set(r.domid, PALETTE[i % PALETTE.length]!));
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(`<text x="${left}" y="22" font-size="15" font-weight="bold">${esc(o.title)}</text>`);
  // Time axis: about ten ticks at a round step.
  const stepMs = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000].find((s) => (spanNs / 1e6) / s <= 10) ?? 10000;
  const axisY = top + lanes * (laneH + 14);
  for (let k = 0; k * stepMs * 1e6 <= spanNs; k++) {
    const px = left + ((k * stepMs * 1e6) / spanNs) * chartW;
    out.push(`<line x1="${px.toFixed(1)}" y1="${top - 4}" x2="${px.toFixed(1)}" y2="${axisY}" stroke="#ddd"/>`);
    out.push(`<text x="${px.toFixed(1)}" y="${axisY + 14}" text-anchor="middle" fill="#555">${+(k * stepMs).toFixed(1)} ms</text>`);
  }
  perPcpu.forEach((records, pcpu) => {
    const y = top + pcpu * (laneH + 14);
    out.push(`<text x="${left - 8}" y="${y + laneH / 2 + 4}" text-anchor="end">pCPU ${pcpu}</text>`);
    out.push(`<rect x="${left}" y="${y}" width="${chartW}" height="${laneH}" fill="#f4f4f4" stroke="#ccc"/>`);
    // Exclusive periods: a band behind the runs, and a mark at the trigger.
    const exclusive = exclusivePeriods(records);
    for (const p of exclusive) {
      const a = p.from < o.from ? o.from : p.from;
      const b = p.to === null || p.to > o.to ? o.to : p.to;
      if (b <= a) continue;
      out.push(`<rect x="${x(a).toFixed(2)}" y="${y - 3}" width="${Math.max(0.5, x(b) - x(a)).toFixed(2)}" height="${laneH + 6}" fill="#fde0dd" stroke="#c51b8a" stroke-dasharray="3,2"><title>exclusive for ${esc(o.names.get(p.holder) ?? `d${p.holder}`)}: stopped the others ${us(p.from - p.requested)} us after the trigger${p.reason !== null ? `, ${EXCLUSIVE_END_NAMES[p.reason] ?? '?'}` : ''}</title></rect>`);
      if (p.requested >= o.from && p.requested <= o.to) out.push(`<path d="M${x(p.requested).toFixed(2)},${y - 3} l-4,-7 h8 z" fill="#c51b8a"><title>exclusivity asked by ${esc(o.names.get(p.holder) ?? `d${p.holder}`)}</title></path>`);
    }
    for (const r of runsOf(records, o.from, o.to)) {
      const x0 = x(r.start);
      const w = Math.max(0.5, x(r.end) - x0);
      out.push(`<rect x="${x0.toFixed(2)}" y="${y}" width="${w.toFixed(2)}" height="${laneH}" fill="${color.get(r.domid) ?? '#888'}"><title>${esc(o.names.get(r.domid) ?? `d${r.domid}`)} v${r.vcpu}: ${us(r.start - o.from)}..${us(r.end - o.from)} us</title></rect>`);
    }
    for (const r of records) {
      if (r.t < o.from || r.t > o.to) continue;
      const px = x(r.t).toFixed(2);
      if (r.event === 'wake') out.push(`<path d="M${px},${y - 1} l-3,-6 h6 z" fill="${color.get(r.domid) ?? '#888'}"><title>wake d${r.domid}v${r.vcpu}</title></path>`);
      else if (r.event === 'miss') out.push(`<text x="${px}" y="${y + laneH + 11}" text-anchor="middle" fill="#d00" font-weight="bold">×<title>deadline miss d${r.domid}v${r.vcpu}</title></text>`);
      else if (r.event === 'budget') out.push(`<line x1="${px}" y1="${y + laneH}" x2="${px}" y2="${y + laneH + 5}" stroke="black"><title>budget exhausted d${r.domid}v${r.vcpu}</title></line>`);
    }
  });
  out.push(`<text x="${left}" y="${axisY + 34}" fill="#555">▼ wake-up   | budget exhausted   × deadline miss   grey: idle   pink band: exclusive (magenta ▼: its trigger)</text>`);
  const lat = exclusiveLatencies(perPcpu);
  if (lat.length) {
    const p = percentiles(lat);
    out.push(`<text x="${left}" y="${axisY + 52}" fill="#555">exclusivity: ${lat.length} periods; trigger to every pCPU stopped: median ${us(p.median)} us, p99 ${us(p.p99)} us, max ${us(p.max)} us</text>`);
  }
  // The table beside the chart.
  const cols = [0, 140, 215, 290, 370, 450, 510];
  const heads = ['domain', 'CPU share', 'wake-ups', 'lat. p50 us', 'p99 us', 'max us', 'misses'];
  let ty = top + 4;
  heads.forEach((h, i) => out.push(`<text x="${tableX + cols[i]!}" y="${ty}" font-weight="bold">${h}</text>`));
  for (const r of rows) {
    ty += 20;
    out.push(`<rect x="${tableX - 14}" y="${ty - 10}" width="10" height="10" fill="${color.get(r.domid)}"/>`);
    const cells = [r.name, `${(r.share * 100).toFixed(1)}%`, String(r.wakeups), us(r.latency.median), us(r.latency.p99), us(r.latency.max), String(r.misses)];
    cells.forEach((c, i) => out.push(`<text x="${tableX + cols[i]!}" y="${ty}"${i === 6 && r.misses ? ' fill="#d00"' : ''}>${esc(c)}</text>`));
  }
  const tableNs = Number((o.table?.to ?? o.to) - (o.table?.from ?? o.from));
  out.push(`<text x="${tableX}" y="${ty + 24}" fill="#555">table over ${tableNs >= 1e9 ? `${(tableNs / 1e9).toFixed(2)} s` : `${(tableNs / 1e6).toFixed(1)} ms`} of trace; latency: wake-up to running</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** The table as text, for the terminal. */
export function formatTable(rows: DomainRow[]): string {
  const lines = [['domain', 'share', 'wakeups', 'lat_p50_us', 'lat_p99_us', 'lat_max_us', 'budget', 'misses']];
  for (const r of rows) lines.push([r.name, `${(r.share * 100).toFixed(1)}%`, String(r.wakeups), us(r.latency.median), us(r.latency.p99), us(r.latency.max), String(r.budget), String(r.misses)]);
  const w = lines[0]!.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
  return lines.map((l) => l.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ')).join('\n');
}
