// The task page's controller: reads the link, picks what to attach to, and
// connects the terminal, the sidebar and the current Attachment.

import type { Terminal } from "@xterm/xterm";
import type { HostInfo } from "./gen/rendezvous/v1/rendezvous_pb";
import { Role } from "./gen/rendezvous/v1/rendezvous_pb";
import { describeError, isCanceled } from "./errors";
import { parseLink, replaceFragment, type Link } from "./link";
import { Attachment, type AttachmentState, type AttachTarget, type GuestClient } from "./session";
import { Sidebar, StatusLine, askForSecret, showTask } from "./ui";

/** How often the session list refreshes while the page is visible, in milliseconds. */
const LIST_REFRESH_MS = 5_000;

/** The host name the server uses when a host gives none. */
const DEFAULT_HOST_NAME = "default";

export class App {
  private readonly status = new StatusLine();
  private readonly sidebar: Sidebar;
  private readonly encoder = new TextEncoder();
  /** What the address bar says; the secret is kept here and in the fragment only. */
  private link: Link;
  /** The one attachment this page shows; null until the page attaches. */
  private attachment: Attachment | null = null;
  /** The latest ListSessions answer. */
  private hosts: HostInfo[] = [];
  /** Bumped on every start(), so answers meant for an older link are dropped. */
  private generation = 0;
  private refreshTimer: ReturnType<typeof setInterval> | undefined;
  /** The phase of the current attachment last rendered. */
  private shownPhase: AttachmentState["phase"] | null = null;
  /** Set when the task had no host yet: the next refresh that finds one attaches. */
  private waitingForHost = false;

  constructor(
    private readonly client: GuestClient,
    private readonly term: Terminal,
    refit: () => void,
  ) {
    this.link = parseLink(window.location);
    this.sidebar = new Sidebar(
      {
        onJoin: (hostName, sessionId) => this.attach({ ...this.credentials, hostName, sessionId }),
        onNewShell: (hostName) => this.attach({ ...this.credentials, hostName, sessionId: "" }),
      },
      refit,
    );
    term.onData((data) => this.attachment?.sendInput(this.encoder.encode(data)));
    term.onBinary((data) => this.attachment?.sendInput(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
    term.onResize(({ cols, rows }) => this.attachment?.resize({ cols, rows }));
    // A link pasted into the address bar of an open page.
    window.addEventListener("hashchange", () => void this.start(parseLink(window.location)));
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") void this.refresh();
    });
  }

  /** Opens the page's link: list the task, then join or open a shell. */
  async start(link: Link = this.link): Promise<void> {
    const generation = ++this.generation;
    this.link = link;
    this.detach();
    clearInterval(this.refreshTimer);
    this.waitingForHost = false;
    showTask(link.taskId);

    if (link.taskId === "") {
      this.fail("This page needs a task link, like /t/TASK#secret=SECRET.");
      return;
    }
    if (link.secret === "") {
      this.status.set("waiting", "Waiting for the task secret");
      const secret = await askForSecret();
      if (generation !== this.generation) return;
      this.link = { ...link, secret };
      replaceFragment(this.link);
    }

    this.status.set("connecting", "Connecting…");
    const hosts = await this.listHosts(generation);
    if (hosts === null) return;
    this.refreshTimer = setInterval(() => void this.refresh(), LIST_REFRESH_MS);
    if (hosts.length === 0) {
      this.status.set("waiting", "No host is connected for this task yet; waiting for one…");
      this.waitingForHost = true; // refresh() attaches when a host shows up.
      return;
    }
    this.attachFirst();
  }

  private get credentials(): Pick<AttachTarget, "taskId" | "secret"> {
    return { taskId: this.link.taskId, secret: this.link.secret };
  }

  /** Attaches to what the link names: its session, else a new shell on its host or the first host. */
  private attachFirst(): void {
    const { sessionId, hostName } = this.link;
    const owner = this.hosts.find((h) => h.sessions.some((s) => s.sessionId === sessionId));
    const named = this.hosts.find((h) => h.hostName === hostName);
    const host = (sessionId && owner) || named || this.hosts[0];
    this.attach({ ...this.credentials, hostName: hostName || host?.hostName || "", sessionId });
  }

  /** Replaces the current attachment with a new one. */
  private attach(target: AttachTarget): void {
    this.detach();
    this.term.reset();
    this.term.options.disableStdin = false;
    this.sidebar.select(target.hostName);
    const attachment = new Attachment(
      this.client,
      target,
      this.term,
      (state) => {
        if (attachment !== this.attachment) return;
        const first = state.phase === "connected" && this.shownPhase !== "connected";
        this.shownPhase = state.phase;
        this.render(state, first);
      },
      { cols: this.term.cols, rows: this.term.rows },
    );
    this.attachment = attachment;
    this.shownPhase = null;
    void attachment.run();
    this.term.focus();
  }

  private detach(): void {
    this.attachment?.close();
    this.attachment = null;
    this.sidebar.setCurrent("");
  }

  /** Shows an attachment's state in the status line, sidebar, terminal and address bar. */
  private render(state: AttachmentState, justConnected: boolean): void {
    switch (state.phase) {
      case "connecting":
        this.status.set("connecting", "Connecting…");
        break;
      case "connected": {
        const readOnly = state.role === Role.READ_ONLY;
        this.term.options.disableStdin = readOnly;
        this.sidebar.setCurrent(state.sessionId);
        this.sidebar.setCanOpenShell(!readOnly);
        const where = `${state.sessionId.slice(0, 8)} on ${state.hostName || DEFAULT_HOST_NAME}`;
        const size = state.ptySize ? ` · ${state.ptySize.cols}×${state.ptySize.rows}` : "";
        const text = state.warning ?? `Connected to ${where}${readOnly ? " (read-only)" : ""}${size}`;
        this.status.set("connected", text);
        if (justConnected) {
          // The address now joins this session, so it can be shared.
          const hostName = state.hostName === DEFAULT_HOST_NAME ? "" : state.hostName;
          this.link = { ...this.link, sessionId: state.sessionId, hostName };
          replaceFragment(this.link);
          void this.refresh();
        }
        break;
      }
      case "ended":
        this.term.options.disableStdin = true;
        this.status.set("ended", state.message);
        this.sidebar.setCurrent("");
        // Reloading the page should open a new shell, not fail to join this one.
        this.link = { ...this.link, sessionId: "" };
        replaceFragment(this.link);
        void this.refresh();
        break;
      case "failed":
        this.term.options.disableStdin = true;
        this.sidebar.setCurrent("");
        this.fail(state.message);
        void this.refresh();
        break;
    }
  }

  /** Shows an error in the status line and in the terminal, so the page is never blank. */
  private fail(message: string): void {
    this.status.set("error", message);
    this.term.write(`\r\n\x1b[2m[rendezvous]\x1b[0m ${message}\r\n`);
  }

  /** ListSessions; null (after showing why) when the task cannot be listed. */
  private async listHosts(generation: number): Promise<HostInfo[] | null> {
    try {
      const { hosts } = await this.client.listSessions(this.credentials);
      if (generation !== this.generation) return null;
      this.hosts = hosts;
      this.sidebar.update(hosts);
      return hosts;
    } catch (err) {
      if (generation !== this.generation || isCanceled(err)) return null;
      this.fail(describeError(err, "list"));
      return null;
    }
  }

  /** Refreshes the sidebar; attaches if the page was waiting for a host. */
  private async refresh(): Promise<void> {
    if (document.visibilityState !== "visible" || this.link.secret === "") return;
    const generation = this.generation;
    try {
      const { hosts } = await this.client.listSessions(this.credentials);
      if (generation !== this.generation) return;
      this.hosts = hosts;
      this.sidebar.update(hosts);
      if (this.waitingForHost && hosts.length > 0) {
        this.waitingForHost = false;
        this.attachFirst();
      }
    } catch (err) {
      // The attachment's own status says more; a failed refresh only keeps the old list.
      if (!isCanceled(err)) console.warn("rendezvous: listing sessions failed:", describeError(err, "list"));
    }
  }
}
