// Ordered, exactly-once delivery of keystrokes over unary SendInput calls.
//
// Browsers cannot stream requests, so each batch of input is one unary call
// carrying a per-guest sequence number. The server applies requests in seq
// order and ignores a repeated seq, so a failed request is retried with the
// same seq and the same bytes. One request is in flight at a time; keys typed
// meanwhile are coalesced into the next request.

import { isCanceled, isTransient } from "./errors";

/** Most bytes sent in one SendInput request (the server's default limit). */
export const MAX_REQUEST_BYTES = 64 * 1024;

/** Most bytes waiting to be sent; input beyond this is dropped (a paste far larger than any shell needs). */
export const MAX_PENDING_BYTES = 1024 * 1024;

/** First wait before retrying a failed request, in milliseconds; doubles per failure. */
const FIRST_RETRY_DELAY_MS = 250;

/** Longest wait between retries, in milliseconds. */
const MAX_RETRY_DELAY_MS = 5_000;

/** Sends one request; rejects on failure. */
export type SendFn = (seq: bigint, data: Uint8Array) => Promise<void>;

/** What the queue tells its owner. */
export interface InputQueueEvents {
  /** A request failed; `retrying` says whether it will be tried again. */
  onError(err: unknown, retrying: boolean): void;
  /** A request went through after earlier failures. */
  onRecovered(): void;
}

/** A queue of input bytes for one guest, sent in order. */
export class InputQueue {
  /** Bytes not yet handed to a request, oldest first. */
  private pending: Uint8Array[] = [];
  /** Total length of `pending`, bounded by MAX_PENDING_BYTES. */
  private pendingBytes = 0;
  /** Seq of the next new request; starts at 0 and grows by one per request. */
  private nextSeq = 0n;
  /** Set by start() once the guest is known; null before. */
  private send: SendFn | null = null;
  /** True while the pump loop runs (at most one request in flight). */
  private pumping = false;
  /** Set by close(); nothing is sent afterwards. */
  private closed = false;

  constructor(private readonly events: InputQueueEvents) {}

  /** Starts sending, with input pushed so far going first. */
  start(send: SendFn): void {
    this.send = send;
    void this.pump();
  }

  /** Queues bytes; returns false when they were dropped (queue full or closed). */
  push(data: Uint8Array): boolean {
    if (this.closed) return false;
    if (data.length === 0) return true;
    if (this.pendingBytes + data.length > MAX_PENDING_BYTES) return false;
    this.pending.push(data);
    this.pendingBytes += data.length;
    void this.pump();
    return true;
  }

  /** Stops sending and drops whatever is queued. */
  close(): void {
    this.closed = true;
    this.pending = [];
    this.pendingBytes = 0;
  }

  /** Bytes queued and not yet sent. */
  get queuedBytes(): number {
    return this.pendingBytes;
  }

  private async pump(): Promise<void> {
    if (this.pumping || this.send === null) return;
    this.pumping = true;
    try {
      while (!this.closed && this.pendingBytes > 0) {
        const data = this.take(MAX_REQUEST_BYTES);
        const seq = this.nextSeq;
        this.nextSeq += 1n;
        if (!(await this.sendWithRetry(this.send, seq, data))) return;
      }
    } finally {
      this.pumping = false;
    }
  }

  /** Sends one request until it succeeds; false when the queue gave up. */
  private async sendWithRetry(send: SendFn, seq: bigint, data: Uint8Array): Promise<boolean> {
    let delay = FIRST_RETRY_DELAY_MS;
    let failed = false;
    for (;;) {
      try {
        await send(seq, data);
        if (failed) this.events.onRecovered();
        return true;
      } catch (err) {
        if (this.closed || isCanceled(err)) return false;
        const retrying = isTransient(err);
        this.events.onError(err, retrying);
        if (!retrying) {
          this.close();
          return false;
        }
        failed = true;
        await sleep(delay);
        delay = Math.min(delay * 2, MAX_RETRY_DELAY_MS);
        if (this.closed) return false;
      }
    }
  }

  /** Removes up to `max` bytes from the front of `pending`, as one array. */
  private take(max: number): Uint8Array {
    const size = Math.min(max, this.pendingBytes);
    const out = new Uint8Array(size);
    let filled = 0;
    while (filled < size) {
      const head = this.pending[0]!;
      const n = Math.min(head.length, size - filled);
      out.set(head.subarray(0, n), filled);
      filled += n;
      if (n === head.length) this.pending.shift();
      else this.pending[0] = head.subarray(n);
    }
    this.pendingBytes -= size;
    return out;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
