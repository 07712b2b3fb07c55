// One guest attachment: the Attach stream, its input queue and its resizes.
//
// An Attachment owns exactly one Attach stream and the state that belongs to
// it (guest credentials, role, next output offset). Resuming after a dropped
// stream will live here: a new Attach with resumeOffset = nextOffset.

import type { Client } from "@connectrpc/connect";
import { GuestService, Role, type Attached, type ExitStatus } from "./gen/rendezvous/v1/rendezvous_pb";
import { describeError, isCanceled, isTransient } from "./errors";
import { InputQueue } from "./input";

/** A generated GuestService client. */
export type GuestClient = Client<typeof GuestService>;

/** Which session to attach to. */
export interface AttachTarget {
  taskId: string;
  secret: string;
  /** Empty means the server's default host. */
  hostName: string;
  /** Empty means "open a new shell". */
  sessionId: string;
}

/** Terminal size in character cells. */
export interface Size {
  cols: number;
  rows: number;
}

/** Where output goes: the xterm.js Terminal, in the page. */
export interface OutputSink {
  write(data: Uint8Array | string): void;
}

/** Where an attachment stands; the page renders this. */
export type AttachmentState =
  | { phase: "connecting" }
  | {
      phase: "connected";
      sessionId: string;
      hostName: string;
      role: Role;
      /** The PTY's effective size, once the server has said. */
      ptySize: Size | null;
      /** A problem that does not end the attachment (e.g. input retrying). */
      warning: string | null;
    }
  | { phase: "ended"; sessionId: string; message: string }
  | { phase: "failed"; message: string };

/** Wait after the last resize before telling the server, in milliseconds. */
const RESIZE_DEBOUNCE_MS = 100;

/** Deadline for one SendInput or Resize call, in milliseconds; a timed-out input request is retried. */
const UNARY_TIMEOUT_MS = 10_000;

/** One guest attached to one session. */
export class Attachment {
  /** Cancels the Attach stream and every call made for it. */
  private readonly abort = new AbortController();
  /** Keystrokes waiting to be sent; starts sending once attached. */
  private readonly input: InputQueue;
  /** From the Attached event; null before it. */
  private guest: { guestId: string; guestToken: string } | null = null;
  /** Offset of the next output byte expected; where a resume would start. */
  private nextOffset: bigint | null = null;
  /** The guest terminal's current size, as last reported by resize(). */
  private size: Size;
  /** The size the server last heard from us. */
  private sentSize: Size;
  private resizeTimer: ReturnType<typeof setTimeout> | undefined;
  private current: AttachmentState = { phase: "connecting" };

  constructor(
    private readonly client: GuestClient,
    private readonly target: AttachTarget,
    private readonly sink: OutputSink,
    private readonly onState: (state: AttachmentState) => void,
    initialSize: Size,
  ) {
    this.size = initialSize;
    this.sentSize = initialSize;
    this.input = new InputQueue({
      onError: (err, retrying) =>
        this.warn(
          retrying
            ? `Input is not getting through; retrying. ${describeError(err, "input")}`
            : `Input stopped: ${describeError(err, "input")}`,
        ),
      onRecovered: () => this.warn(null),
    });
  }

  /** The attachment's current state. */
  get state(): AttachmentState {
    return this.current;
  }

  /** Offset of the next output byte, or null before any output. */
  get offset(): bigint | null {
    return this.nextOffset;
  }

  /** Attaches and streams output into the sink until the session ends, the stream fails, or close(). */
  async run(): Promise<void> {
    this.setState({ phase: "connecting" });
    try {
      const events = this.client.attach(
        { ...this.target, cols: this.size.cols, rows: this.size.rows },
        { signal: this.abort.signal },
      );
      for await (const { event } of events) {
        switch (event.case) {
          case "attached":
            this.onAttached(event.value);
            break;
          case "output":
            this.sink.write(event.value.data);
            this.nextOffset = event.value.offset + BigInt(event.value.data.length);
            break;
          case "lagged":
            this.sink.write(`\r\n[rendezvous: ${event.value.missedBytes} bytes skipped]\r\n`);
            break;
          case "size":
            if (this.current.phase === "connected") {
              this.setState({ ...this.current, ptySize: { cols: event.value.cols, rows: event.value.rows } });
            }
            break;
          case "exit":
            this.onExit(event.value);
            return;
          default:
            break; // An event this page does not know yet.
        }
      }
      if (!this.closed) {
        this.setState({ phase: "failed", message: "The server ended the connection. Reload the page to attach again." });
      }
    } catch (err) {
      if (this.closed || isCanceled(err)) return;
      const message =
        this.current.phase === "connected" && isTransient(err)
          ? "Lost the connection to the server. Reload the page to attach again."
          : describeError(err, this.target.sessionId ? "join" : "new-shell");
      this.setState({ phase: "failed", message });
    } finally {
      this.stop();
    }
  }

  /** Sends input bytes to the session (ignored when read-only or no longer attached). */
  sendInput(data: Uint8Array): void {
    if (!this.writable) return;
    if (!this.input.push(data)) this.warn("Too much input at once; some of it was dropped.");
  }

  /** Records the terminal's new size and tells the server shortly after the last change. */
  resize(size: Size): void {
    this.size = size;
    clearTimeout(this.resizeTimer);
    this.resizeTimer = setTimeout(() => void this.flushResize(), RESIZE_DEBOUNCE_MS);
  }

  /** Detaches: cancels the stream and drops queued input. */
  close(): void {
    this.abort.abort();
    this.stop();
  }

  private get closed(): boolean {
    return this.abort.signal.aborted;
  }

  /** True when this guest may send input and resizes right now. */
  private get writable(): boolean {
    return this.current.phase === "connecting" || (this.current.phase === "connected" && this.current.role !== Role.READ_ONLY);
  }

  private onAttached({ sessionId, hostName, role, guestId, guestToken }: Attached): void {
    this.guest = { guestId, guestToken };
    this.setState({ phase: "connected", sessionId, hostName: hostName || this.target.hostName, role, ptySize: null, warning: null });
    if (role === Role.READ_ONLY) {
      this.input.close();
      return;
    }
    const guest = this.guest;
    this.input.start(async (seq, data) => {
      await this.client.sendInput(
        { ...guest, seq, data },
        { signal: this.abort.signal, timeoutMs: UNARY_TIMEOUT_MS },
      );
    });
    // The terminal may have changed size while the attach was on its way.
    if (!sameSize(this.size, this.sentSize)) this.resize(this.size);
  }

  private onExit(exit: ExitStatus): void {
    const message = describeExit(exit);
    this.sink.write(`\r\n[rendezvous: ${message.toLowerCase()}]\r\n`);
    const sessionId = this.current.phase === "connected" ? this.current.sessionId : this.target.sessionId;
    this.setState({ phase: "ended", sessionId, message });
  }

  private async flushResize(): Promise<void> {
    const guest = this.guest;
    if (guest === null || !this.writable || this.closed) return;
    const size = this.size;
    if (sameSize(size, this.sentSize)) return;
    this.sentSize = size;
    try {
      await this.client.resize(
        { ...guest, cols: size.cols, rows: size.rows },
        { signal: this.abort.signal, timeoutMs: UNARY_TIMEOUT_MS },
      );
    } catch (err) {
      if (this.closed || isCanceled(err)) return;
      // The next resize tries again; the output still flows meanwhile.
      this.sentSize = { cols: 0, rows: 0 };
      console.warn("rendezvous: resize failed:", describeError(err, "input"));
    }
  }

  private stop(): void {
    clearTimeout(this.resizeTimer);
    this.input.close();
  }

  private warn(warning: string | null): void {
    if (this.current.phase === "connected" && this.current.warning !== warning) {
      this.setState({ ...this.current, warning });
    }
  }

  private setState(state: AttachmentState): void {
    this.current = state;
    this.onState(state);
  }
}

/** "Session ended with exit code N", and the host's detail if any. */
export function describeExit(exit: ExitStatus): string {
  let text: string;
  switch (exit.status.case) {
    case "code":
      text = `Session ended with exit code ${exit.status.value}`;
      break;
    case "signal":
      text = `Session ended by signal ${exit.status.value}`;
      break;
    default:
      text = "Session ended";
  }
  return exit.message ? `${text}: ${exit.message}` : text;
}

function sameSize(a: Size, b: Size): boolean {
  return a.cols === b.cols && a.rows === b.rows;
}
