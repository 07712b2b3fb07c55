// Flow control between the Attach stream and xterm.js.
//
// xterm.js parses and renders asynchronously: `write` only queues. If the
// page pulled the stream as fast as the network delivers, a flood would
// queue without bound in the page (xterm.js drops data past 50 MB) and the
// page would stop answering. Instead every write registers a callback, and
// the stream is pulled only while the bytes written but not yet parsed stay
// under a watermark. Nothing is dropped.
//
// Below the page, though, the browser keeps reading the HTTP response it is
// not asked for (over HTTP/1.1, tens of MiB) before TCP backpressure would
// reach the server. So the Attachment also acknowledges what was parsed
// (`write`'s `parsed` callback → GuestService.Ack), and the server sends no
// more than a window past the last acknowledgement: the pause reaches the
// host's PTY after at most that window.

/** Above this many bytes written but not yet parsed, stop pulling the stream (512 KiB). */
export const HIGH_WATERMARK_BYTES = 512 * 1024;

/** Resume pulling once the backlog falls to this many bytes (128 KiB). */
export const LOW_WATERMARK_BYTES = 128 * 1024;

/** The part of xterm.js's Terminal this needs. */
export interface WriteTarget {
  write(data: Uint8Array | string, callback?: () => void): void;
}

/** Writes into a terminal and says when the writer should wait. */
export class WriteFlow {
  /** Bytes handed to the terminal whose callback has not run yet. */
  private backlog = 0;
  private waiters: Array<() => void> = [];

  constructor(private readonly target: WriteTarget) {}

  /** Bytes written and not yet parsed. */
  get backlogBytes(): number {
    return this.backlog;
  }

  /**
   * Writes `data`. Returns null while the backlog is under the high
   * watermark; otherwise a promise that resolves once it has drained to the
   * low watermark: await it before pulling more. `parsed` runs once the
   * terminal has parsed `data` (its write callback).
   */
  write(data: Uint8Array | string, parsed?: () => void): Promise<void> | null {
    const size = data.length;
    this.backlog += size;
    this.target.write(data, () => {
      this.backlog -= size;
      if (this.backlog <= LOW_WATERMARK_BYTES) this.release();
      parsed?.();
    });
    if (this.backlog <= HIGH_WATERMARK_BYTES) return null;
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Lets every waiter go (the terminal is going away and will call no more callbacks). */
  release(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }
}
