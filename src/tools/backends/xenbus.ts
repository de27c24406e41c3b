// The xenbus side of split drivers: the state each end publishes in its
// xenstore directory (io/xenbus.h) and the device numbers of virtual block
// devices (xen-vbd-interface(7)), which name a vbd's directory on both ends.

/** enum xenbus_state (io/xenbus.h) */
export const XenbusState = {
  Unknown: 0,
  Initialising: 1,
  /** the backend waits for the frontend's details (ring, event channel) */
  InitWait: 2,
  /** the frontend has published them */
  Initialised: 3,
  Connected: 4,
  Closing: 5,
  Closed: 6,
  Reconfiguring: 7,
  Reconfigured: 8,
} as const;
export type XenbusStateValue = (typeof XenbusState)[keyof typeof XenbusState];

export const XENBUS_STATE_NAMES = ['Unknown', 'Initialising', 'InitWait', 'Initialised', 'Connected', 'Closing', 'Closed', 'Reconfiguring', 'Reconfigured'];

/** A state node's value: a number 0..8, else null (a frontend may write anything there). */
export function parseXenbusState(v: string | undefined): XenbusStateValue | null {
  if (v === undefined || !/^[0-8]$/.test(v.trim())) return null;
  return Number(v.trim()) as XenbusStateValue;
}

/** xvd letters as a disk number: a..z = 0..25, aa = 26, ... (bijective base 26) */
function diskOfLetters(s: string): number {
  let n = 0;
  for (const c of s) n = n * 26 + (c.charCodeAt(0) - 96);
  return n - 1;
}

/**
 * The vbd device number of a virtual device name (xen-vbd-interface(7)), or
 * null when the name has none: xvd with disk < 16 and partition < 16 in the
 * 202 major, larger ones in the extended form (1 << 28); hd in majors 3 and
 * 22, sd in major 8; d<disk>p<partition> always extended.
 */
export function vbdDevid(vdev: string): number | null {
  let m = /^xvd([a-z]{1,4})([0-9]{0,3})$/.exec(vdev);
  if (m) {
    const disk = diskOfLetters(m[1]!), part = m[2] ? Number(m[2]) : 0;
    if (m[2]?.startsWith('0') || part > 255 || disk >= 1 << 20) return null;
    return disk < 16 && part < 16 ? (202 << 8) | (disk << 4) | part : (1 << 28) | (disk << 8) | part;
  }
  m = /^hd([a-d])([0-9]{0,2})$/.exec(vdev);
  if (m) {
    const disk = m[1]!.charCodeAt(0) - 97, part = m[2] ? Number(m[2]) : 0;
    if (m[2]?.startsWith('0') || part > 63) return null;
    return ((disk < 2 ? 3 : 22) << 8) | ((disk % 2) * 64 + part);
  }
  m = /^sd([a-p])([0-9]{0,2})$/.exec(vdev);
  if (m) {
    const disk = m[1]!.charCodeAt(0) - 97, part = m[2] ? Number(m[2]) : 0;
    if (m[2]?.startsWith('0') || part > 15) return null;
    return (8 << 8) | (disk << 4) | part;
  }
  m = /^d([0-9]{1,6})(?:p([0-9]{1,3}))?$/.exec(vdev);
  if (m) {
    const disk = Number(m[1]), part = m[2] ? Number(m[2]) : 0;
    if (disk >= 1 << 20 || part > 255) return null;
    return (1 << 28) | (disk << 8) | part;
  }
  return null;
}
