// The embeddable guest's public API: every type a page that calls
// `mountTerminal` sees. This file imports nothing, so its declarations
// (dist/assets/lib/rendezvous-guest.d.ts) stand alone.

/** Options of {@link MountTerminal}. Give `secret` or `token`. */
export interface MountOptions {
  /**
   * Base URL of the Rendezvous server, e.g. `https://rendezvous.example.com`.
   * Default: the origin this module was loaded from.
   */
  server?: string;
  /** The task to attach to. */
  taskId: string;
  /** The task secret (read-write or read-only). */
  secret?: string;
  /** A signed guest token (JWT), instead of a secret. */
  token?: string;
  /** Host name within the task. Default: the host owning `session`, else `default`, else the first host. */
  host?: string;
  /** Session to join. Default: open a new shell (read-write credentials only). */
  session?: string;
  /**
   * Watch only: no keystrokes and no size reports leave this page, whatever
   * the credential allows. (The server enforces read-only only for guests
   * attached with a read-only secret.)
   */
  readOnly?: boolean;
  /** Attach as soon as mounted (default true). With false, call {@link TerminalHandle.attach}. */
  autoAttach?: boolean;
  /** Show the built-in status line above the terminal (default true). */
  statusLine?: boolean;
  /** Colors: follow the system (`auto`, the default, also on live changes) or force one. */
  theme?: "auto" | "light" | "dark";
  /** Font size in CSS pixels (default 14). */
  fontSize?: number;
  /** CSS font-family list for the terminal (default: the system's monospace fonts). */
  fontFamily?: string;
  /** Copy selected text to the clipboard as soon as it is selected (default true). */
  copyOnSelect?: boolean;
  /**
   * Right-click pastes the clipboard, as in PuTTY and Windows Terminal
   * (default true), where the browser lets the page read it (a secure
   * context and the viewer's permission); otherwise, and with Shift held,
   * the browser's own menu opens.
   */
  rightClickPaste?: boolean;
  /**
   * Let programs in the session write the clipboard with OSC 52 escape
   * sequences. Off by default: anyone who can write to the session could
   * otherwise put text on the viewer's clipboard.
   */
  osc52Clipboard?: boolean;
  /** Add the module's stylesheet (`rendezvous-guest.css` beside it) to the document if absent (default true). */
  injectStylesheet?: boolean;
}

/** A guest's role, as the server granted it. */
export type GuestRole = "read-write" | "read-only";

/** Where the terminal stands. Every state carries `text`: a plain-words sentence for people. */
export type Status =
  | { state: "connecting"; text: string }
  | { state: "waiting"; text: string }
  | {
      state: "connected";
      text: string;
      sessionId: string;
      hostName: string;
      role: GuestRole;
      /** The PTY's effective size (the smallest read-write guest's), once the server has said. */
      ptySize: { cols: number; rows: number } | null;
    }
  | {
      state: "reconnecting";
      text: string;
      /** Whole seconds until the next attempt. */
      retryInSeconds: number;
      /** Attempts so far since the last successful attach. */
      attempt: number;
    }
  | { state: "ended"; text: string; exit: ExitInfo }
  | { state: "failed"; text: string; error: ErrorInfo };

/** The kind of a status, e.g. for a CSS class or `data-state`. */
export type StatusState = Status["state"];

/** Emitted once per successful attach (and again after each reconnect). */
export interface AttachedInfo {
  sessionId: string;
  hostName: string;
  role: GuestRole;
  /** True when this attach resumed an earlier stream of the same session. */
  resumed: boolean;
  /**
   * True when the server also kept the guest itself (its ID and input
   * sequence), so input that was in flight at the break is applied exactly
   * once. False on a resume after the server forgot the guest (10 minutes).
   */
  sameGuest: boolean;
}

/** How a session ended. */
export interface ExitInfo {
  sessionId: string;
  /** The process's exit code, when it exited by itself. */
  code?: number;
  /** The signal that killed it, if one did. */
  signal?: number;
  /** The server's or host's detail, e.g. "the host disconnected"; empty for a plain exit. */
  detail: string;
  /** True when the session ended because its host went away. */
  hostGone: boolean;
}

/** A failure the terminal does not retry. */
export interface ErrorInfo {
  /**
   * What went wrong: `denied` (unknown task or wrong secret, or a read-only
   * credential asking for a shell), `not-found` (no such host or session),
   * `refused` (the server refused: a limit or a malformed request), or
   * `other`.
   */
  kind: "denied" | "not-found" | "refused" | "other";
  /** The gRPC status code name, e.g. `PermissionDenied`. */
  code: string;
  /** A plain-words sentence that names the next step. */
  text: string;
}

/** One session of a host, as {@link TerminalHandle.listSessions} reports it. */
export interface SessionSummary {
  sessionId: string;
  cols: number;
  rows: number;
  startedAt: Date;
  guestCount: number;
  /** Bytes of output so far. */
  outputBytes: number;
}

/** One host of a task. */
export interface HostSummary {
  hostName: string;
  labels: Record<string, string>;
  connectedAt: Date;
  sessions: SessionSummary[];
}

/** What {@link TerminalHandle.attach} attaches to. */
export interface AttachTo {
  /** Host name; default as in {@link MountOptions.host}. */
  host?: string;
  /** Session to join; empty or absent opens a new shell. */
  session?: string;
}

/** Events of a {@link TerminalHandle}, by name. */
export interface TerminalEvents {
  /** Every change of {@link Status}, including each second of a reconnect countdown. */
  status: Status;
  /** Attached (first time or after a reconnect). */
  attached: AttachedInfo;
  /** The session ended; nothing more will arrive. */
  exit: ExitInfo;
  /** A failure that is not retried; the terminal stops. */
  error: ErrorInfo;
}

/** The xterm.js `Terminal` behind a handle, typed here only by the members most pages need. */
export interface XtermTerminal {
  readonly cols: number;
  readonly rows: number;
  focus(): void;
  blur(): void;
  getSelection(): string;
  clearSelection(): void;
  scrollToBottom(): void;
}

/** A mounted terminal. */
export interface TerminalHandle {
  /** The current status. */
  readonly status: Status;
  /** The xterm.js Terminal (its full API is there at run time). */
  readonly terminal: XtermTerminal;
  /** Subscribes to an event; returns a function that unsubscribes. */
  on<K extends keyof TerminalEvents>(type: K, listener: (event: TerminalEvents[K]) => void): () => void;
  /** Detaches from the current session (if any) and attaches to another, or opens a new shell. */
  attach(to?: AttachTo): void;
  /** The task's hosts and their sessions. */
  listSessions(): Promise<HostSummary[]>;
  /** Refits the terminal to its element (it also refits by itself when the element resizes). */
  fit(): void;
  /** Moves keyboard focus to the terminal. */
  focus(): void;
  /** Detaches, stops every timer and observer, and removes the terminal from the element. */
  dispose(): void;
}

/** The module's entry point. */
export type MountTerminal = (element: HTMLElement, options: MountOptions) => TerminalHandle;
