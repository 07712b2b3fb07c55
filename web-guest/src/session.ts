// One guest attachment to one session, kept alive across broken connections.
//
// An Attachment attaches (Attach stream), writes the session's output into
// the terminal under flow control, sends input and resizes, and when the
// stream breaks it reconnects with backoff and resumes at the next offset
// it expects, so no byte is lost or shown twice. It ends when the session
// ends, on a failure retrying cannot fix, or on close().
//
// Each guest attaches with an acknowledged window (ACK_WINDOW_BYTES): the
// server sends nothing past the last offset this page acknowledged (Ack)
// plus the window, so a page that stops rendering holds the host back after
// at most a window, however much the browser reads ahead of the page.

import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { GuestService, Role, type Attached, type ExitStatus, type HostInfo } from "./gen/rendezvous/v1/rendezvous_pb";
import { Backoff, sleep } from "./backoff";
import {
  HOST_GONE_MESSAGE,
  describeError,
  describeFailure,
  isCanceled,
  isNetworkFailure,
  isTransient,
  unreachableMessage,
  type Action,
} from "./errors";
import type { WriteFlow } from "./flow";
import { InputQueue } from "./input";
import type { AttachedInfo, ErrorInfo, ExitInfo, GuestRole, Status } from "./lib/api";

/** A generated GuestService client. */
export type GuestClient = Client<typeof GuestService>;

/** What authenticates a guest: a secret or a token (the other is empty). */
export interface Credentials {
  taskId: string;
  secret: string;
  token: string;
}

/** Which session to attach to. */
export interface AttachTarget {
  /** Empty: the host owning `sessionId`, else `default`, else the task's first host. */
  hostName: string;
  /** Empty means "open a new shell". */
  sessionId: string;
}

/** Terminal size in character cells. */
export interface Size {
  cols: number;
  rows: number;
}

/** What an Attachment reports. */
export interface AttachmentEvents {
  status(status: Status): void;
  attached(info: AttachedInfo): void;
  exit(info: ExitInfo): void;
  error(info: ErrorInfo): void;
}

/** Everything an Attachment needs. */
export interface AttachmentOptions {
  client: GuestClient;
  /** The server's base URL, for messages. */
  server: string;
  credentials: Credentials;
  target: AttachTarget;
  /** Output goes here, under flow control. */
  flow: WriteFlow;
  /** The terminal's current size. */
  size: () => Size;
  /** Watch only: send no input and no resizes. */
  readOnly: boolean;
  events: AttachmentEvents;
}

/** The host name the server uses when a host gives none. */
export const DEFAULT_HOST_NAME = "default";

/** Wait after the last resize before telling the server, in milliseconds. */
export const RESIZE_DEBOUNCE_MS = 150;

/** Deadline for one SendInput or Resize call, in milliseconds; a timed-out input request is retried. */
const UNARY_TIMEOUT_MS = 10_000;

/**
 * The acknowledged window each guest asks for, in bytes (4 MiB): the server
 * sends no output byte at or past the last acknowledged offset plus this.
 * It must cover the terminal's backlog (HIGH_WATERMARK_BYTES), one ack step
 * and what arrives while an ack travels, or the stream stalls: with 1 MiB,
 * 20 MB took 1.6 s to render instead of 1.2 s.
 */
export const ACK_WINDOW_BYTES = 4 * 1024 * 1024;

/**
 * Acknowledge once this many more bytes have been parsed since the last
 * acknowledgement, in bytes (1 MiB). Well under the window, so the server
 * has sent more than this whenever the page waits for output, and the page
 * acknowledges before the window closes: acks cannot deadlock. Each ack is
 * a fetch, which costs the page's main thread about a millisecond and the
 * browser's other processes more: with 256 KiB steps (80 acks for 20 MB)
 * a flood rendered about 8 % slower.
 */
export const ACK_STEP_BYTES = 1024 * 1024;

/**
 * Most Ack calls on their way at once (2). The page does not wait for one
 * answer before the next ack: answers are handled on the main thread only
 * between xterm.js's parse slices, so one ack at a time would pace the
 * stream by the main thread's business rather than the network's. Few,
 * because over HTTP/1.1 each call in flight takes one of the browser's 6
 * connections to the server, and the Attach stream, input and resizes
 * need theirs.
 */
export const MAX_ACKS_IN_FLIGHT = 2;

/** After a failed Ack, try again this soon even if nothing more is parsed, in milliseconds. */
const ACK_RETRY_MS = 1_000;

/** How often to look again for a host while the task has none, in milliseconds. */
const WAIT_FOR_HOST_POLL_MS = 3_000;

/** Why a connection attempt ended without ending the attachment. */
type Broken = { reason: "network" | "lost" };

/**
 * A guest as its unary calls name it: its ID and token, and the task and
 * host of its session, with which any replica can route the call to the
 * one that holds the host.
 */
interface GuestRef {
  guestId: string;
  guestToken: string;
  taskId: string;
  hostName: string;
}

/** The acknowledgements of one guest (one Attach stream). */
interface AckState {
  guest: GuestRef;
  /** The offset the server counts from: the stream's first output offset, then the last acknowledged. Null before any output. */
  acked: bigint | null;
  /** Acknowledge once the parsed offset reaches this. */
  due: bigint | null;
  /** The stream has ended: this guest gets no more acks. */
  ended: boolean;
}

/** One guest attached to one session, reconnecting as needed. */
export class Attachment {
  /** Cancels everything: the stream, calls, waits. */
  private readonly abort = new AbortController();
  /** Keystrokes waiting to be sent; kept across reconnects. */
  private readonly input: InputQueue;
  private readonly backoff = new Backoff();
  private readonly target: AttachTarget;
  /** The current guest, while attached. */
  private guest: GuestRef | null = null;
  /** The last guest attached, resumed on the next attach to its session. */
  private lastGuest: GuestRef | null = null;
  private role: GuestRole = "read-write";
  /** Offset of the next output byte expected; a resume starts there. Null before any output. */
  private nextOffset: bigint | null = null;
  /** Set by the first Attached: later attaches join this session. */
  private sessionId = "";
  /** The size the server last heard from this guest. */
  private sentSize: Size = { cols: 0, rows: 0 };
  private resizeTimer: ReturnType<typeof setTimeout> | undefined;
  /** Wakes a reconnect wait early (the browser came back online). */
  private wake = new AbortController();
  /** True once something was written into the terminal, or a message was. */
  private wroteSomething = false;
  private current: Status = { state: "connecting", text: "Connecting…" };
  /** One past the last output byte the terminal has parsed (a session offset). Null before any. */
  private parsedOffset: bigint | null = null;
  /** The current guest's acknowledgements. */
  private acks: AckState | null = null;
  /** Ack calls on their way (at most MAX_ACKS_IN_FLIGHT). */
  private acksInFlight = 0;
  private ackRetryTimer: ReturnType<typeof setTimeout> | undefined;
  /** The server does not know Ack (an older server): send none. */
  private ackUnsupported = false;
  private readonly onOnline = (): void => this.wake.abort();

  constructor(private readonly options: AttachmentOptions) {
    this.target = { ...options.target };
    this.input = new InputQueue({
      onError: (err, retrying) =>
        this.warn(
          retrying
            ? `Input is not getting through; retrying. ${describeError(err, "input")}`
            : `Some input was refused: ${describeError(err, "input")}`,
        ),
      onRecovered: () => this.warn(null),
    });
    window.addEventListener("online", this.onOnline);
  }

  /** The attachment's current status. */
  get status(): Status {
    return this.current;
  }

  /** Attaches, and re-attaches after breaks, until the session ends, a failure is final, or close(). */
  async run(): Promise<void> {
    this.setStatus({ state: "connecting", text: "Connecting…" });
    try {
      while (!this.closed) {
        let broken: Broken;
        try {
          if (this.target.hostName === "" && !(await this.resolveHost())) continue;
          if (this.closed) return;
          const ended = await this.attachOnce();
          if (ended) return;
          broken = { reason: "lost" };
        } catch (err) {
          if (this.closed || isCanceled(err)) return;
          if (!isTransient(err)) {
            this.fail(describeFailure(err, this.action(), this.options.credentials.token !== ""));
            return;
          }
          broken = { reason: isNetworkFailure(err) ? "network" : "lost" };
          if (!isNetworkFailure(err)) console.warn("rendezvous: connection lost:", err);
        }
        await this.waitToRetry(broken);
      }
    } finally {
      this.stop();
    }
  }

  /** Sends input bytes to the session; queued while reconnecting. Ignored when read-only or ended. */
  sendInput(data: Uint8Array): void {
    if (!this.writable) return;
    if (!this.input.push(data)) {
      this.warn("Too much input is waiting to be sent (over 1 MiB); the rest of it was dropped.");
    }
  }

  /** The terminal changed size: tell the server shortly after the last change. */
  resize(): void {
    clearTimeout(this.resizeTimer);
    this.resizeTimer = setTimeout(() => void this.flushResize(), RESIZE_DEBOUNCE_MS);
  }

  /** Detaches: cancels the stream and drops queued input. */
  close(): void {
    this.abort.abort();
    this.wake.abort();
    this.stop();
  }

  private get closed(): boolean {
    return this.abort.signal.aborted;
  }

  /** True when this guest may send input: not read-only, and not ended. */
  private get writable(): boolean {
    if (this.options.readOnly || this.role === "read-only") return false;
    return !["ended", "failed"].includes(this.current.state) && !this.closed;
  }

  /** What a failure interrupted, for its message. */
  private action(): Action {
    if (this.listing) return "list";
    if (this.sessionId !== "") return "resume";
    return this.target.sessionId !== "" ? "join" : "new-shell";
  }

  /** True while resolveHost() is waiting on ListSessions (errors then mean "list"). */
  private listing = false;

  /**
   * Picks the host when none was named: the one owning the session, else
   * `default`, else the first. False (after waiting a while) when the task
   * has no host yet.
   */
  private async resolveHost(): Promise<boolean> {
    this.listing = true;
    let hosts: HostInfo[];
    try {
      ({ hosts } = await this.options.client.listSessions(
        { ...this.options.credentials },
        { signal: this.abort.signal, timeoutMs: UNARY_TIMEOUT_MS },
      ));
    } finally {
      this.listing = false;
    }
    const { sessionId } = this.target;
    const host =
      (sessionId && hosts.find((h) => h.sessions.some((s) => s.sessionId === sessionId))) ||
      hosts.find((h) => h.hostName === DEFAULT_HOST_NAME) ||
      hosts[0];
    if (host !== undefined) {
      this.target.hostName = host.hostName;
      return true;
    }
    this.setStatus({ state: "waiting", text: "No host is connected for this task yet; waiting for one…" });
    await sleep(WAIT_FOR_HOST_POLL_MS, this.abort.signal);
    return false;
  }

  /** One Attach stream. True when the session ended; false when the stream ended without saying why. */
  private async attachOnce(): Promise<boolean> {
    const { client, credentials } = this.options;
    const size = this.options.size();
    const events = client.attach(
      {
        ...credentials,
        hostName: this.target.hostName,
        sessionId: this.sessionId || this.target.sessionId,
        cols: size.cols,
        rows: size.rows,
        resumeOffset: this.nextOffset ?? undefined,
        windowBytes: ACK_WINDOW_BYTES,
        // The same guest carries on, so input in flight is applied once.
        resumeGuestId: this.sessionId !== "" ? (this.lastGuest?.guestId ?? "") : "",
        resumeGuestToken: this.sessionId !== "" ? (this.lastGuest?.guestToken ?? "") : "",
        // For a server that restarted and no longer knows this guest: the
        // oldest batch still held; the server goes on there or where the
        // host has this guest's input, and says which (next_input_seq).
        resumeInputSeq: this.sessionId !== "" ? this.input.resumeSeq : undefined,
      },
      { signal: this.abort.signal },
    );
    const resumed = this.sessionId !== "";
    try {
      for await (const { event } of events) {
        switch (event.case) {
          case "attached":
            this.onAttached(event.value, size, resumed);
            break;
          case "output": {
            if (this.closed) return true;
            const acks = this.acks;
            if (acks !== null && acks.acked === null) {
              // The server's window counts from where this stream starts.
              acks.acked = event.value.offset;
              acks.due = event.value.offset + BigInt(ACK_STEP_BYTES);
            }
            const wait = this.onOutput(event.value.offset, event.value.data);
            if (wait !== null) await wait; // Pull no faster than the terminal renders.
            break;
          }
          case "lagged":
            this.write(`\r\n[rendezvous: ${event.value.missedBytes} bytes of output were lost: they are older than the server keeps]\r\n`);
            this.nextOffset = null; // The next output's offset says where the stream goes on.
            break;
          case "size":
            if (this.current.state === "connected") {
              this.setStatus({ ...this.current, ptySize: { cols: event.value.cols, rows: event.value.rows } });
            }
            break;
          case "hostState":
            // The host lost its server and is expected back: the page stays
            // attached, and its input waits in the server's queue.
            this.write(event.value.reconnecting ? `\r\n[rendezvous: ${event.value.message}]\r\n` : "\r\n[rendezvous: the host is back]\r\n");
            this.warn(event.value.reconnecting ? `Host reconnecting: ${event.value.message}` : null);
            break;
          case "exit":
            this.onExit(event.value);
            return true;
          default:
            break; // An event this page does not know yet.
        }
      }
      return false;
    } finally {
      this.guest = null;
      if (this.acks !== null) this.acks.ended = true;
      this.input.unbind();
    }
  }

  private onAttached(
    { sessionId, hostName, role, guestId, guestToken, resumed: sameGuest, nextInputSeq }: Attached,
    size: Size,
    resumed: boolean,
  ): void {
    this.guest = { guestId, guestToken, taskId: this.options.credentials.taskId, hostName };
    this.lastGuest = this.guest;
    // A new guest has a new window; acknowledgements go to it from now on.
    this.acks = { guest: this.guest, acked: null, due: null, ended: false };
    this.sessionId = sessionId;
    this.target.hostName = hostName || this.target.hostName;
    this.role = role === Role.READ_ONLY ? "read-only" : "read-write";
    this.sentSize = size;
    this.backoff.reset();
    this.setStatus(this.connectedStatus(null));
    this.options.events.attached({ sessionId, hostName: this.target.hostName, role: this.role, resumed, sameGuest });
    if (this.role === "read-only" || this.options.readOnly) return;
    const guest = this.guest;
    this.input.bind(async (seq, data, signal) => {
      await this.options.client.sendInput({ ...guest, seq, data }, { signal, timeoutMs: UNARY_TIMEOUT_MS });
    }, sameGuest, nextInputSeq);
    // The terminal may have changed size while the attach was on its way.
    this.resize();
  }

  /** Writes output that continues exactly at nextOffset; returns a promise to await when the terminal is behind. */
  private onOutput(offset: bigint, data: Uint8Array): Promise<void> | null {
    const expected = this.nextOffset;
    if (expected !== null && offset !== expected) {
      if (offset < expected) {
        // Bytes already shown: write only the new part (never twice).
        const skip = expected - offset;
        if (skip >= BigInt(data.length)) return null;
        data = data.subarray(Number(skip));
        offset = expected;
      } else {
        // A gap the server did not announce: say so rather than hide it.
        this.write(`\r\n[rendezvous: ${offset - expected} bytes of output were lost]\r\n`);
      }
    }
    const end = offset + BigInt(data.length);
    this.nextOffset = end;
    if (data.length === 0) return null;
    this.wroteSomething = true;
    return this.options.flow.write(data, () => this.onParsed(end));
  }

  /** The terminal has parsed output up to `end`: acknowledge it when due. */
  private onParsed(end: bigint): void {
    if (this.closed) return;
    if (this.parsedOffset === null || end > this.parsedOffset) this.parsedOffset = end;
    this.maybeAck();
  }

  /**
   * Sends an Ack for everything parsed, when at least ACK_STEP_BYTES were
   * parsed since the last one sent. Up to MAX_ACKS_IN_FLIGHT calls at a
   * time; the server keeps the highest offset, so their order does not
   * matter.
   */
  private maybeAck(): void {
    const acks = this.acks;
    const offset = this.parsedOffset;
    if (this.closed || this.acksInFlight >= MAX_ACKS_IN_FLIGHT || this.ackUnsupported) return;
    if (acks === null || acks.ended || acks.due === null || offset === null || offset < acks.due) return;
    clearTimeout(this.ackRetryTimer);
    this.acksInFlight += 1;
    // The next ack is due one step on, whether or not this one is answered.
    acks.due = offset + BigInt(ACK_STEP_BYTES);
    this.options.client
      .ack({ ...acks.guest, offset }, { signal: this.abort.signal, timeoutMs: UNARY_TIMEOUT_MS })
      .then(
        () => {
          if (acks.acked === null || offset > acks.acked) acks.acked = offset;
        },
        (err: unknown) => {
          if (this.closed || isCanceled(err)) return;
          const code = ConnectError.from(err).code;
          if (code === Code.Unimplemented) {
            // An older server: it ignores the window too, so nothing waits on acks.
            this.ackUnsupported = true;
            return;
          }
          if (acks.ended) {
            // The guest has gone with its stream (the server then answers
            // UNAUTHENTICATED or FAILED_PRECONDITION); the next guest starts afresh.
            if (code !== Code.Unauthenticated && code !== Code.FailedPrecondition) {
              console.warn("rendezvous: acknowledging output failed:", describeError(err, "input"));
            }
            return;
          }
          console.warn("rendezvous: acknowledging output failed:", describeError(err, "input"));
          // Again at the next ack point (already due one step on), or
          // shortly if nothing more is parsed (the server may be waiting for
          // this very ack).
          this.ackRetryTimer = setTimeout(() => {
            if (acks.acked !== null) acks.due = acks.acked + BigInt(ACK_STEP_BYTES);
            this.maybeAck();
          }, ACK_RETRY_MS);
        },
      )
      .finally(() => {
        this.acksInFlight -= 1;
        this.maybeAck();
      });
  }

  private onExit(exit: ExitStatus): void {
    const info: ExitInfo = {
      sessionId: this.sessionId || this.target.sessionId,
      detail: exit.message,
      // The server's words when the host went away without reporting an exit.
      hostGone: exit.status.case === undefined && /the host (disconnected|closed the session)/i.test(exit.message),
    };
    if (exit.status.case === "code") info.code = exit.status.value;
    if (exit.status.case === "signal") info.signal = exit.status.value;
    const { line, text } = describeExit(info);
    this.write(`\r\n[rendezvous: ${line}]\r\n`);
    this.setStatus({ state: "ended", text, exit: info });
    this.options.events.exit(info);
  }

  /** Waits before the next attempt, counting down in the status line each second. */
  private async waitToRetry(broken: Broken): Promise<void> {
    const wasConnected = this.current.state === "connected";
    const delay = this.backoff.next();
    const attempt = this.backoff.attempts;
    const deadline = performance.now() + delay;
    const unreachable = unreachableMessage(this.options.server);
    let announced = false;
    this.wake = new AbortController();
    while (!this.closed && !this.wake.signal.aborted) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      const seconds = Math.ceil(left / 1000);
      const text =
        broken.reason === "network" && !wasConnected
          ? `${unreachable}; retrying in ${seconds} s. Check your network connection.`
          : `Connection lost; reconnecting in ${seconds} s…`;
      this.setStatus({ state: "reconnecting", text, retryInSeconds: seconds, attempt });
      if (!announced && !this.wroteSomething) {
        // Nothing on screen yet: say it there too, once, so the terminal is not blank.
        this.write(`\r\n[rendezvous] ${unreachable}. Retrying…\r\n`);
        announced = true;
      }
      await sleep(left - (seconds - 1) * 1000, this.wake.signal);
    }
    if (!this.closed) this.setStatus({ state: "connecting", text: "Reconnecting…" });
  }

  private async flushResize(): Promise<void> {
    const guest = this.guest;
    if (guest === null || !this.writable) return;
    const size = this.options.size();
    if (size.cols === this.sentSize.cols && size.rows === this.sentSize.rows) return;
    this.sentSize = size;
    try {
      await this.options.client.resize(
        { ...guest, cols: size.cols, rows: size.rows },
        { signal: this.abort.signal, timeoutMs: UNARY_TIMEOUT_MS },
      );
    } catch (err) {
      if (this.closed || isCanceled(err)) return;
      // The next resize, or the next attach, tells the server again.
      this.sentSize = { cols: 0, rows: 0 };
      console.warn("rendezvous: resize failed:", describeError(err, "input"));
    }
  }

  /** A final failure: say it in the status line and in the terminal. */
  private fail(error: ErrorInfo): void {
    this.write(`\r\n[rendezvous] ${error.text}\r\n`);
    this.setStatus({ state: "failed", text: error.text, error });
    this.options.events.error(error);
  }

  private write(text: string): void {
    if (this.closed) return; // Detached: the terminal belongs to another attachment now.
    this.wroteSomething = true;
    void this.options.flow.write(text);
  }

  private connectedStatus(warning: string | null, ptySize: Size | null = null): Status {
    const readOnly = this.role === "read-only" || this.options.readOnly;
    const where = `${this.sessionId.slice(0, 8)} on ${this.target.hostName || DEFAULT_HOST_NAME}`;
    const text = warning ?? `Connected to ${where}${readOnly ? " (read-only)" : ""}`;
    return {
      state: "connected",
      text,
      sessionId: this.sessionId,
      hostName: this.target.hostName,
      role: readOnly ? "read-only" : "read-write",
      ptySize,
    };
  }

  private warn(warning: string | null): void {
    if (this.current.state === "connected") this.setStatus(this.connectedStatus(warning, this.current.ptySize));
  }

  private stop(): void {
    clearTimeout(this.resizeTimer);
    clearTimeout(this.ackRetryTimer);
    this.input.close();
    window.removeEventListener("online", this.onOnline);
  }

  private setStatus(status: Status): void {
    if (this.closed && status.state !== "ended" && status.state !== "failed") return;
    this.current = status;
    this.options.events.status(status);
  }
}

/** The terminal's last line and the status line's text for an ended session. */
export function describeExit(exit: ExitInfo): { line: string; text: string } {
  if (exit.hostGone) return { line: "the host disconnected; the session ended", text: HOST_GONE_MESSAGE };
  let line: string;
  if (exit.code !== undefined) line = `session ended with exit code ${exit.code}`;
  else if (exit.signal !== undefined) line = `session ended by signal ${exit.signal}`;
  else line = "session ended";
  if (exit.detail) line += `: ${exit.detail}`;
  const text = `${line[0]!.toUpperCase()}${line.slice(1)}. Open a new shell to continue.`;
  return { line, text };
}
