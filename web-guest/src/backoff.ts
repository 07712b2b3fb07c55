// Reconnect delays: exponential backoff with jitter, as the host uses.

/** The first step of the backoff, in milliseconds. */
export const FIRST_RETRY_STEP_MS = 500;

/** The longest step, in milliseconds. */
export const MAX_RETRY_STEP_MS = 30_000;

/**
 * Delays between attempts: steps of 0.5 s doubling up to 30 s. Each delay is
 * drawn uniformly from the upper half of its step (`step/2..step`), so pages
 * that lost the server at the same moment do not all come back at once.
 */
export class Backoff {
  private step = FIRST_RETRY_STEP_MS;
  /** Attempts since the last reset. */
  attempts = 0;

  /** The delay before the next attempt, in milliseconds; later calls return longer delays. */
  next(): number {
    const step = this.step;
    this.step = Math.min(step * 2, MAX_RETRY_STEP_MS);
    this.attempts += 1;
    return step / 2 + (Math.random() * step) / 2;
  }

  /** Starts over at the first step (after a success). */
  reset(): void {
    this.step = FIRST_RETRY_STEP_MS;
    this.attempts = 0;
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
