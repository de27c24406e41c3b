// Test support: bounded waits. Every wait in a test ends, and when it ends
// without the thing it waited for, the error says what never happened.

/** Generous on a loaded 2-core machine; a wait that needs longer is a bug or says so. */
export const DEFAULT_WAIT_MS = 20_000;

/** Polls `f` until it returns a truthy value; rejects naming `what` after `timeoutMs`. */
export async function until<T>(what: string, f: () => Promise<T> | T, timeoutMs = DEFAULT_WAIT_MS, intervalMs = 10): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await f();
      if (v) return v as NonNullable<T>;
    } catch (e) { last = e; }
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms${last ? ` (last error: ${String(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** `p`, or a rejection naming `what` if it has not settled after `timeoutMs`. */
export function within<T>(what: string, p: Promise<T>, timeoutMs = DEFAULT_WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
