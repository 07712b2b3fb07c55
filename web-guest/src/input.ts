// Ordered delivery of keystrokes over unary SendInput calls, across reconnects.
//
// Browsers cannot stream requests, so each batch of input is one unary call
// carrying a per-guest sequence number. The server applies a guest's
// requests in seq order and ignores a repeated seq, so a failed request is
// retried with the same seq and the same bytes. One request is in flight at
// a time; keys typed meanwhile are coalesced into the next request.
//
// The queue outlives one guest: when the Attach stream breaks, the queue is
// unbound and keeps what is typed meanwhile (bounded); after the reconnect
// it is bound again. A resumed guest (same guest ID) goes on at the seq the
// server gives (Attached.next_input_seq): batches from it on are sent
// again, those before it were applied, so each is applied exactly once.
// The queue keeps its last acknowledged batches too (at most
// MAX_RESEND_REQUESTS, MAX_RESEND_BYTES), since a server that crashed may
// have acknowledged a batch it never passed on to the host: the restarted
// server asks for it again, from where the host has this guest's input. A
// new guest starts again at seq 0; then the batch in flight at the break
// may be applied twice (only after the server lost the guest and cannot
// check its token: a restart with a new state key).

import { Code, ConnectError } from "@connectrpc/connect";
import { sleep } from "./backoff";
import { isCanceled, isTransient } from "./errors";

/** Most bytes sent in one SendInput request (the server's default limit, 64 KiB). */
export const MAX_REQUEST_BYTES = 64 * 1024;

/**
 * Most bytes typed and not yet handed to a request, also while disconnected
 * (1 MiB); input beyond this is refused. Batches already made (at most one
 * request's worth, plus up to MAX_RESEND_BYTES acknowledged batches a
 * restarted server asks for again) do not count: a resend never stops typing.
 */
export const MAX_PENDING_BYTES = 1024 * 1024;

/** Most acknowledged batches kept to send again after a server restart (4096, as `rendezvous attach`). */
export const MAX_RESEND_REQUESTS = 4096;

/** Most bytes of acknowledged batches kept to send again (1 MiB, as `rendezvous attach`). */
export const MAX_RESEND_BYTES = 1024 * 1024;

/** First wait before retrying a failed request, in milliseconds; doubles per failure. */
const FIRST_RETRY_DELAY_MS = 250;

/** Longest wait between retries of one request, in milliseconds. */
const MAX_RETRY_DELAY_MS = 5_000;

/** Sends one request for the bound guest; rejects on failure. `signal` aborts when another guest is bound or the queue closes. */
export type SendFn = (seq: bigint, data: Uint8Array, signal: AbortSignal) => Promise<void>;

/** What the queue tells its owner. */
export interface InputQueueEvents {
  /** A request failed; `retrying` says whether it will be tried again. */
  onError(err: unknown, retrying: boolean): void;
  /** A request went through after earlier failures. */
  onRecovered(): void;
}

/** A guest's input sequence, shared by its attachments when it resumes. */
interface Sequence {
  /** Seq of the next request; starts at 0. */
  next: bigint;
  /**
   * Bumped each time the server says where input goes on (a resume). An
   * answer to a request sent before the latest resume says nothing about
   * what the server has now (it may be a server that has since crashed),
   * so it is ignored: the server that answered the resume counts.
   */
  resumes: number;
}

/** One attachment of a guest the queue sends for. */
interface BoundGuest {
  send: SendFn;
  seq: Sequence;
  /** Aborted when the queue is unbound from this guest: ends a retry's wait. */
  abort: AbortController;
  /**
   * Aborted when another guest is bound or the queue closes: ends a request
   * in flight. Not on unbind: a request in flight when the stream breaks
   * goes on to its answer, so that what it did is known (applied, or not)
   * before a server that restarted is told where input goes on.
   */
  requests: AbortController;
}

/** A queue of input bytes for one attachment, sent in order. */
export class InputQueue {
  /** Bytes not yet handed to a request, oldest first. */
  private pending: Uint8Array[] = [];
  /** Total length of `pending`, bounded by MAX_PENDING_BYTES. */
  private pendingBytes = 0;
  /** Batches made and not yet acknowledged, in order; the first has seq `lastSeq.next` and is the one sent (or being sent). */
  private outbox: Uint8Array[] = [];
  /** Total length of `outbox`. */
  private outboxBytes = 0;
  /** The last acknowledged batches, oldest first; the last has seq `lastSeq.next - 1`. */
  private sent: Uint8Array[] = [];
  /** Total length of `sent`, at most MAX_RESEND_BYTES. */
  private sentBytes = 0;
  private guest: BoundGuest | null = null;
  /** The sequence of the last guest bound, for a resume. */
  private lastSeq: Sequence | null = null;
  /** True while the pump loop runs (at most one request in flight). */
  private pumping = false;
  /** Set by close(); nothing is sent afterwards. */
  private closed = false;

  constructor(private readonly events: InputQueueEvents) {}

  /**
   * Sends for a guest from now on. When `resumed`, the last guest bound
   * carries on, its input going on at `nextInputSeq` (Attached.next_input_seq):
   * what it holds before that was applied, the rest goes again. Otherwise
   * a new guest, with seq starting at 0.
   */
  bind(send: SendFn, resumed = false, nextInputSeq?: bigint): void {
    this.guest?.abort.abort();
    this.guest?.requests.abort();
    let seq: Sequence;
    if (resumed && this.lastSeq !== null) {
      seq = this.lastSeq;
      if (nextInputSeq !== undefined) this.goOnAt(seq, nextInputSeq);
    } else {
      // A new guest cannot say what the old one applied: only what was
      // never acknowledged goes.
      seq = { next: 0n, resumes: 0 };
      this.sent = [];
      this.sentBytes = 0;
    }
    this.lastSeq = seq;
    this.guest = { send, seq, abort: new AbortController(), requests: new AbortController() };
    void this.pump();
  }

  /** Stops sending (the guest is gone); queued input is kept for the next bind(). */
  unbind(): void {
    this.guest?.abort.abort();
    this.guest = null;
  }

  /** Queues bytes; returns false when they were refused (queue full or closed). */
  push(data: Uint8Array): boolean {
    if (this.closed) return false;
    if (data.length === 0) return true;
    if (this.pendingBytes + data.length > MAX_PENDING_BYTES) return false;
    this.pending.push(data);
    this.pendingBytes += data.length;
    void this.pump();
    return true;
  }

  /** Stops sending for good and drops whatever is queued. */
  close(): void {
    this.closed = true;
    this.guest?.requests.abort();
    this.unbind();
    this.pending = [];
    this.pendingBytes = 0;
    this.outbox = [];
    this.outboxBytes = 0;
    this.sent = [];
    this.sentBytes = 0;
  }

  /**
   * The seq of the oldest batch the last guest still holds, acknowledged
   * or not (its next seq when it holds none): AttachRequest.resume_input_seq.
   */
  get resumeSeq(): bigint | undefined {
    if (this.lastSeq === null) return undefined;
    return this.lastSeq.next - BigInt(this.sent.length);
  }

  /** Bytes queued and not yet acknowledged. */
  get queuedBytes(): number {
    return this.pendingBytes + this.outboxBytes;
  }

  /**
   * The server goes on at `next`: held batches from it on are sent again,
   * numbered from `next`; those before it stay held, acknowledged, for a
   * later restart (a server that crashes may have taken input it never
   * passed on). When the server asks for a batch no longer held, what is
   * missing is lost and the held batches go again from `next`.
   */
  private goOnAt(seq: Sequence, next: bigint): void {
    seq.resumes += 1;
    const held = [...this.sent, ...this.outbox];
    const first = seq.next - BigInt(this.sent.length);
    const end = first + BigInt(held.length);
    let applied = 0;
    if (next > end) {
      // Ahead of all sent (the server's bookkeeping, not ours): nothing
      // held goes again, and numbering goes on from there.
      this.sent = [];
      this.sentBytes = 0;
      this.outbox = [];
      this.outboxBytes = 0;
      seq.next = next;
      return;
    }
    if (next >= first) applied = Number(next - first);
    this.sent = held.slice(0, applied);
    this.sentBytes = this.sent.reduce((n, b) => n + b.length, 0);
    while (this.sent.length > MAX_RESEND_REQUESTS || this.sentBytes > MAX_RESEND_BYTES) {
      this.sentBytes -= this.sent.shift()!.length;
    }
    this.outbox = held.slice(applied);
    this.outboxBytes = this.outbox.reduce((n, b) => n + b.length, 0);
    seq.next = next;
  }

  /** Keeps an acknowledged batch for a resend, within the bounds. */
  private keepSent(batch: Uint8Array): void {
    this.sent.push(batch);
    this.sentBytes += batch.length;
    while (this.sent.length > MAX_RESEND_REQUESTS || this.sentBytes > MAX_RESEND_BYTES) {
      this.sentBytes -= this.sent.shift()!.length;
    }
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    let delay = FIRST_RETRY_DELAY_MS;
    let failing = false;
    try {
      while (!this.closed) {
        const guest = this.guest;
        if (guest === null) return;
        if (this.outbox.length === 0) {
          if (this.pendingBytes === 0) return;
          const batch = this.take(MAX_REQUEST_BYTES);
          this.outbox.push(batch);
          this.outboxBytes += batch.length;
        }
        const batch = this.outbox[0]!;
        const at = guest.seq.next;
        const resumes = guest.seq.resumes;
        try {
          await guest.send(at, batch, guest.requests.signal);
          if (guest.seq !== this.lastSeq) {
            // Rebound as a new guest meanwhile: the old one took the batch.
            if (this.outbox[0] === batch) {
              this.outbox.shift();
              this.outboxBytes -= batch.length;
            }
            continue;
          }
          // Resumed meanwhile: the server that answered the resume said
          // where input goes on, and this answer may come from one that
          // crashed since. The batch goes again if that server asked for
          // it (a repeat of an applied seq is ignored).
          if (guest.seq.resumes !== resumes) continue;
          // Applied (by this guest, even if it was unbound meanwhile).
          guest.seq.next += 1n;
          this.outbox.shift();
          this.outboxBytes -= batch.length;
          this.keepSent(batch);
          delay = FIRST_RETRY_DELAY_MS;
          if (failing) this.events.onRecovered();
          failing = false;
        } catch (err) {
          if (this.closed) return;
          // Unbound or rebound meanwhile: the batch goes to the next guest.
          if (guest !== this.guest || isCanceled(err)) continue;
          const code = ConnectError.from(err).code;
          if (code === Code.Unauthenticated || code === Code.FailedPrecondition) {
            // The server forgot this guest or the session ended: the Attach
            // stream ends too, and a reconnect binds a new guest.
            return;
          }
          const retrying = isTransient(err);
          this.events.onError(err, retrying);
          failing = true;
          if (!retrying) {
            // Refused for good (e.g. too large); the rest may still go.
            if (this.outbox[0] === batch) {
              this.outbox.shift();
              this.outboxBytes -= batch.length;
            }
            continue;
          }
          await sleep(delay, guest.abort.signal);
          delay = Math.min(delay * 2, MAX_RETRY_DELAY_MS);
        }
      }
    } finally {
      this.pumping = false;
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
