// The task page's controller: reads the link, mounts the terminal (the same
// module other sites embed), and keeps the header, sidebar and address bar
// in step with it.

import type { Terminal } from "@xterm/xterm";
import { mountTerminal, type HostSummary, type Status, type TerminalHandle } from "./lib";
import { parseLink, replaceFragment, type Link } from "./link";
import { Header, Sidebar, askForSecret } from "./ui";

/** How often the session list refreshes while the page is visible, in milliseconds. */
const LIST_REFRESH_MS = 5_000;

/** The host name the server uses when a host gives none. */
const DEFAULT_HOST_NAME = "default";

declare global {
  interface Window {
    /** The page's terminal, for browser tests. */
    rendezvousTerm?: Terminal;
    /** The page's terminal handle, for browser tests. */
    rendezvousHandle?: TerminalHandle;
  }
}

export class App {
  private readonly header = new Header();
  private readonly sidebar: Sidebar;
  /** What the address bar says; the secret is kept here and in the fragment only. */
  private link: Link;
  private handle: TerminalHandle | null = null;
  /** Bumped on every start(), so answers meant for an older link are dropped. */
  private generation = 0;
  private refreshTimer: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly container: HTMLElement) {
    this.link = parseLink(window.location);
    this.sidebar = new Sidebar(
      {
        onJoin: (hostName, sessionId) => this.handle?.attach({ host: hostName, session: sessionId }),
        onNewShell: (hostName) => this.handle?.attach({ host: hostName }),
      },
      () => this.handle?.fit(),
    );
    // A link pasted into the address bar of an open page.
    window.addEventListener("hashchange", () => void this.start(parseLink(window.location)));
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") void this.refresh();
    });
  }

  /** Opens the page's link: mount the terminal, then join or open a shell. */
  async start(link: Link = this.link): Promise<void> {
    const generation = ++this.generation;
    this.link = link;
    this.handle?.dispose();
    this.handle = null;
    clearInterval(this.refreshTimer);
    this.header.showTask(link.taskId);
    this.sidebar.update([]);

    if (link.taskId === "") {
      this.header.setStatus("failed", "This page needs a task link, like /t/TASK#secret=SECRET. Open the link the host printed.");
      return;
    }
    if (link.secret === "" && link.token === "") {
      this.header.setStatus("waiting", "Waiting for the task secret");
      const secret = await askForSecret();
      if (generation !== this.generation) return;
      this.link = { ...link, secret };
      replaceFragment(this.link);
    }

    const handle = mountTerminal(this.container, {
      server: window.location.origin,
      taskId: this.link.taskId,
      secret: this.link.secret,
      token: this.link.token,
      statusLine: false,
      autoAttach: false,
      injectStylesheet: false,
    });
    this.handle = handle;
    window.rendezvousHandle = handle;
    window.rendezvousTerm = handle.terminal as Terminal;
    handle.on("status", (status) => this.onStatus(status));
    handle.on("attached", ({ sessionId, hostName }) => {
      // The address now joins this session, so it can be shared.
      this.link = { ...this.link, sessionId, hostName: hostName === DEFAULT_HOST_NAME ? "" : hostName };
      replaceFragment(this.link);
      this.sidebar.select(hostName);
      this.sidebar.setCurrent(sessionId);
      void this.refresh();
    });
    handle.on("exit", () => {
      // Reloading the page should open a new shell, not fail to join this one.
      this.link = { ...this.link, sessionId: "" };
      replaceFragment(this.link);
      this.sidebar.setCurrent("");
      void this.refresh();
    });
    handle.attach({ host: this.link.hostName, session: this.link.sessionId });
    handle.focus();
    this.refreshTimer = setInterval(() => void this.refresh(), LIST_REFRESH_MS);
    void this.refresh();
  }

  private onStatus(status: Status): void {
    this.header.setStatus(status.state, status.text);
    if (status.state === "connected") {
      this.header.setReadOnly(status.role === "read-only");
      this.sidebar.setCanOpenShell(status.role === "read-write");
    }
    if (status.state === "failed") {
      this.sidebar.setCurrent("");
      void this.refresh();
    }
  }

  /** Refreshes the sidebar from ListSessions. */
  private async refresh(): Promise<void> {
    const handle = this.handle;
    if (handle === null || document.visibilityState !== "visible") return;
    let hosts: HostSummary[];
    try {
      hosts = await handle.listSessions();
    } catch (err) {
      // The status line says more; a failed refresh only keeps the old list.
      console.debug("rendezvous: listing sessions failed:", err);
      return;
    }
    if (handle === this.handle) this.sidebar.update(hosts);
  }
}
