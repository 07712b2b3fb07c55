// mountTerminal: a terminal attached to a Rendezvous session, in any element.
// The task page (/t/{task_id}) is built on this too.

import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { Terminal } from "@xterm/xterm";
import { GuestService } from "../gen/rendezvous/v1/rendezvous_pb";
import { WriteFlow } from "../flow";
import { Attachment, type Credentials, type GuestClient } from "../session";
import { DEFAULT_FONT_FAMILY, createTerminal, type MountedTerminal } from "../terminal";
import type {
  AttachTo,
  HostSummary,
  MountOptions,
  MountTerminal,
  Status,
  TerminalEvents,
  TerminalHandle,
} from "./api";

/** The stylesheet published beside this module. */
const STYLESHEET_NAME = "rendezvous-guest.css";

/** Default font size in CSS pixels. */
const DEFAULT_FONT_SIZE = 14;

/** Mounts a terminal in `element`; see {@link MountOptions}. */
export const mountTerminal: MountTerminal = (element, options) => new MountedHandle(element, options);

type Listeners = { [K in keyof TerminalEvents]: Set<(event: TerminalEvents[K]) => void> };

class MountedHandle implements TerminalHandle {
  private readonly root: HTMLElement;
  private readonly statusEl: HTMLElement | null;
  private readonly mounted: MountedTerminal;
  private readonly flow: WriteFlow;
  private readonly client: GuestClient;
  private readonly server: string;
  private readonly credentials: Credentials;
  private readonly encoder = new TextEncoder();
  private readonly listeners: Listeners = { status: new Set(), attached: new Set(), exit: new Set(), error: new Set() };
  private attachment: Attachment | null = null;
  private current: Status = { state: "connecting", text: "Connecting…" };
  private attachedOnce = false;
  private disposed = false;

  constructor(element: HTMLElement, private readonly options: MountOptions) {
    this.server = (options.server ?? new URL(import.meta.url).origin).replace(/\/+$/, "");
    this.credentials = { taskId: options.taskId, secret: options.secret ?? "", token: options.token ?? "" };
    if (options.injectStylesheet !== false) injectStylesheet();

    this.root = document.createElement("div");
    this.root.className = "rendezvous-guest";
    this.statusEl = options.statusLine === false ? null : document.createElement("div");
    if (this.statusEl !== null) {
      this.statusEl.className = "rendezvous-guest-status";
      this.statusEl.setAttribute("role", "status");
      this.statusEl.setAttribute("aria-live", "polite");
      this.root.append(this.statusEl);
    }
    const termEl = document.createElement("div");
    termEl.className = "rendezvous-guest-xterm";
    this.root.append(termEl);
    element.append(this.root);

    this.mounted = createTerminal(termEl, {
      theme: options.theme ?? "auto",
      fontSize: options.fontSize ?? DEFAULT_FONT_SIZE,
      fontFamily: options.fontFamily ?? DEFAULT_FONT_FAMILY,
      copyOnSelect: options.copyOnSelect ?? true,
      rightClickPaste: options.rightClickPaste ?? true,
      osc52Clipboard: options.osc52Clipboard ?? false,
    });
    const term = this.mounted.term;
    this.flow = new WriteFlow(term);
    this.client = createClient(GuestService, createGrpcWebTransport({ baseUrl: this.server }));

    term.onData((data) => this.attachment?.sendInput(this.encoder.encode(data)));
    term.onBinary((data) => this.attachment?.sendInput(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
    term.onResize(() => this.attachment?.resize());
    this.renderStatus();

    if (options.autoAttach !== false) this.attach();
  }

  get status(): Status {
    return this.current;
  }

  get terminal(): Terminal {
    return this.mounted.term;
  }

  on<K extends keyof TerminalEvents>(type: K, listener: (event: TerminalEvents[K]) => void): () => void {
    const set = this.listeners[type] as Set<(event: TerminalEvents[K]) => void>;
    set.add(listener);
    return () => set.delete(listener);
  }

  attach(to: AttachTo = { host: this.options.host ?? "", session: this.options.session ?? "" }): void {
    if (this.disposed) return;
    this.attachment?.close();
    this.attachment = null;
    const term = this.mounted.term;
    // A full reset (RIS) through the write queue, so output of the previous
    // session still queued in xterm.js lands before it, not after.
    if (this.attachedOnce) void this.flow.write("\x1bc");
    this.attachedOnce = true;
    if (this.credentials.taskId === "" || (this.credentials.secret === "" && this.credentials.token === "")) {
      const text = "This terminal needs a task ID and a task secret or token. Check the link you were given.";
      void this.flow.write(`[rendezvous] ${text}\r\n`);
      this.emitStatus({ state: "failed", text, error: { kind: "denied", code: "InvalidArgument", text } });
      return;
    }
    term.options.disableStdin = this.options.readOnly === true;
    const attachment: Attachment = new Attachment({
      client: this.client,
      server: this.server,
      credentials: this.credentials,
      target: { hostName: to.host ?? "", sessionId: to.session ?? "" },
      flow: this.flow,
      size: () => ({ cols: term.cols, rows: term.rows }),
      readOnly: this.options.readOnly === true,
      events: {
        status: (status) => attachment === this.attachment && this.emitStatus(status),
        attached: (info) => attachment === this.attachment && this.emit("attached", info),
        exit: (info) => attachment === this.attachment && this.emit("exit", info),
        error: (info) => attachment === this.attachment && this.emit("error", info),
      },
    });
    this.attachment = attachment;
    void attachment.run();
  }

  async listSessions(): Promise<HostSummary[]> {
    const { hosts } = await this.client.listSessions({ ...this.credentials });
    return hosts.map((h) => ({
      hostName: h.hostName,
      labels: { ...h.labels },
      connectedAt: new Date(Number(h.connectedAtUnixMs)),
      sessions: h.sessions.map((s) => ({
        sessionId: s.sessionId,
        cols: s.cols,
        rows: s.rows,
        startedAt: new Date(Number(s.startedAtUnixMs)),
        guestCount: s.guestCount,
        outputBytes: Number(s.outputOffset),
      })),
    }));
  }

  fit(): void {
    this.mounted.fit();
  }

  focus(): void {
    this.mounted.term.focus();
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.attachment?.close();
    this.attachment = null;
    this.flow.release();
    this.mounted.dispose();
    this.root.remove();
    for (const set of Object.values(this.listeners)) set.clear();
  }

  private emitStatus(status: Status): void {
    this.current = status;
    const term = this.mounted.term;
    if (status.state === "connected") term.options.disableStdin = status.role === "read-only";
    if (status.state === "ended" || status.state === "failed") term.options.disableStdin = true;
    this.renderStatus();
    this.emit("status", status);
  }

  private renderStatus(): void {
    if (this.statusEl === null) return;
    this.statusEl.dataset["state"] = this.current.state;
    this.statusEl.textContent = this.current.text;
    this.statusEl.title = this.current.text;
  }

  private emit<K extends keyof TerminalEvents>(type: K, event: TerminalEvents[K]): void {
    for (const listener of [...this.listeners[type]]) {
      try {
        listener(event);
      } catch (err) {
        console.error(`rendezvous: a "${type}" listener threw:`, err);
      }
    }
  }
}

/** Adds the stylesheet published beside this module, once per document. */
function injectStylesheet(): void {
  const href = new URL(STYLESHEET_NAME, import.meta.url).href;
  const present = [...document.querySelectorAll<HTMLLinkElement>('link[rel="stylesheet"]')].some((l) => l.href === href);
  if (present) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = href;
  document.head.append(link);
}
