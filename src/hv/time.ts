// Xen system time: nanoseconds since the hypervisor started, from the host's
// monotonic clock (the same in every thread). Guests read it through pvclock
// (vcpu_time_info): system_time + scale(tsc - tsc_timestamp).

const bootNs = process.hrtime.bigint();
const bootWallNs = BigInt(Date.now()) * 1000000n - (process.hrtime.bigint() - bootNs);

/** Origin of system time shared by all threads; workers receive it from the main thread. */
export interface TimeBase {
  bootNs: bigint; // hrtime at system time 0
  bootWallNs: bigint; // wall-clock ns since the epoch at system time 0
}

export const localTimeBase: TimeBase = { bootNs, bootWallNs };

export function systemTimeNs(base: TimeBase = localTimeBase): bigint {
  return process.hrtime.bigint() - base.bootNs;
}

/** pvclock scaling: ns = ((tsc_delta << shift) * mul) >> 32 (shift may be negative). */
export interface TscScale {
  mul: number; // u32
  shift: number; // i8
}

/** Computes mul/shift for a TSC of `khz` kHz, as Xen's set_time_scale does in spirit. */
export function tscScale(khz: number): TscScale {
  if (!(khz > 0)) throw new RangeError(`bad TSC frequency ${khz} kHz`);
  const target = 1_000_000_000; // ns per second
  // ns = delta * 2^shift * mul / 2^32, so mul = target * 2^32 / (tps * 2^shift).
  // Bring tps * 2^shift into (target, 2 * target] so mul lies in [2^31, 2^32).
  let scaled = khz * 1000;
  let shift = 0;
  while (scaled > 2 * target) { scaled /= 2; shift--; }
  while (scaled <= target) { scaled *= 2; shift++; }
  const mul = Math.floor((target * 2 ** 32) / scaled);
  return { mul: mul >>> 0, shift };
}

/** Converts a TSC delta to ns with a scale, exactly as a guest does (for tests and checks). */
export function scaleDelta(delta: bigint, s: TscScale): bigint {
  const d = s.shift >= 0 ? delta << BigInt(s.shift) : delta >> BigInt(-s.shift);
  return (d * BigInt(s.mul)) >> 32n;
}
