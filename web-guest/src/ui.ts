// The page's chrome: status line, hosts-and-sessions sidebar, secret form.
//
// Pure DOM rendering; what the buttons do is decided by the caller (app.ts).

import type { HostInfo, SessionInfo } from "./gen/rendezvous/v1/rendezvous_pb";

/** What the status line shows; also exposed as `data-state` for tests and styling. */
export type StatusKind = "connecting" | "connected" | "waiting" | "ended" | "error";

/** What the sidebar's buttons ask for. */
export interface SidebarActions {
  onJoin(hostName: string, sessionId: string): void;
  onNewShell(hostName: string): void;
}

/** Characters of a session ID shown in the list; the full ID is in the tooltip. */
const SHORT_ID_CHARS = 8;

function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`page is missing #${id}`);
  return el as T;
}

/** The one-line status in the header. */
export class StatusLine {
  private readonly el = byId<HTMLElement>("status");

  set(kind: StatusKind, text: string): void {
    this.el.dataset["state"] = kind;
    this.el.textContent = text;
    this.el.title = text;
  }
}

/** Shows the task ID in the header and the window title. */
export function showTask(taskId: string): void {
  byId<HTMLElement>("task").textContent = taskId;
  document.title = taskId ? `${taskId} · Rendezvous` : "Rendezvous";
}

/** The list of the task's hosts and their sessions. */
export class Sidebar {
  private readonly root = byId<HTMLElement>("sidebar");
  private readonly toggle = byId<HTMLButtonElement>("toggle-sidebar");
  private readonly pickerLabel = byId<HTMLElement>("host-picker-label");
  private readonly picker = byId<HTMLSelectElement>("host-picker");
  private readonly single = byId<HTMLElement>("host-single");
  private readonly newShell = byId<HTMLButtonElement>("new-shell");
  private readonly list = byId<HTMLUListElement>("sessions");
  private readonly empty = byId<HTMLElement>("sessions-empty");
  private hosts: HostInfo[] = [];
  private selected = "";
  private current = "";
  private canOpenShell = true;

  constructor(private readonly actions: SidebarActions, onToggle: () => void) {
    this.picker.addEventListener("change", () => {
      this.selected = this.picker.value;
      this.render();
    });
    this.newShell.addEventListener("click", () => this.actions.onNewShell(this.selected));
    this.toggle.addEventListener("click", () => {
      const hidden = this.root.toggleAttribute("hidden");
      this.toggle.setAttribute("aria-expanded", String(!hidden));
      onToggle();
    });
    if (window.matchMedia("(max-width: 720px)").matches) {
      this.root.hidden = true;
      this.toggle.setAttribute("aria-expanded", "false");
    }
  }

  /** The host whose sessions are shown. */
  get selectedHost(): string {
    return this.selected;
  }

  /** Replaces the list; keeps the selected host if it is still there. */
  update(hosts: HostInfo[]): void {
    this.hosts = hosts;
    if (!hosts.some((h) => h.hostName === this.selected)) this.selected = hosts[0]?.hostName ?? "";
    this.render();
  }

  /** Selects a host (e.g. the one just attached to). */
  select(hostName: string): void {
    this.selected = hostName;
    this.render();
  }

  /** Marks the session this page is attached to (empty for none). */
  setCurrent(sessionId: string): void {
    this.current = sessionId;
    this.render();
  }

  /** Enables or disables "New shell" (read-only links cannot open one). */
  setCanOpenShell(can: boolean): void {
    this.canOpenShell = can;
    this.render();
  }

  private render(): void {
    const several = this.hosts.length > 1;
    this.pickerLabel.hidden = !several;
    this.single.hidden = several || this.hosts.length === 0;
    if (several) {
      this.picker.replaceChildren(
        ...this.hosts.map((h) => {
          const option = new Option(hostLabel(h), h.hostName);
          option.selected = h.hostName === this.selected;
          return option;
        }),
      );
    } else {
      this.single.textContent = this.hosts[0] ? `Host: ${hostLabel(this.hosts[0])}` : "";
    }
    const host = this.hosts.find((h) => h.hostName === this.selected);
    this.newShell.disabled = host === undefined || !this.canOpenShell;
    const sessions = host?.sessions ?? [];
    this.list.replaceChildren(...sessions.map((s) => this.row(host!.hostName, s)));
    this.empty.hidden = sessions.length > 0;
    this.empty.textContent = this.hosts.length === 0 ? "No host is connected yet." : "No sessions yet.";
  }

  private row(hostName: string, session: SessionInfo): HTMLLIElement {
    const li = document.createElement("li");
    li.className = "session";
    const isCurrent = session.sessionId === this.current;
    li.classList.toggle("current", isCurrent);

    const id = document.createElement("code");
    id.textContent = session.sessionId.slice(0, SHORT_ID_CHARS);
    id.title = session.sessionId;

    const meta = document.createElement("span");
    meta.className = "meta";
    const guests = session.guestCount === 1 ? "1 guest" : `${session.guestCount} guests`;
    meta.textContent = `${session.cols}×${session.rows} · ${guests}`;

    const join = document.createElement("button");
    join.type = "button";
    join.className = "small";
    join.textContent = isCurrent ? "attached" : "join";
    join.disabled = isCurrent;
    join.addEventListener("click", () => this.actions.onJoin(hostName, session.sessionId));

    li.append(id, meta, join);
    return li;
  }
}

function hostLabel(host: HostInfo): string {
  const name = host.hostName || "default";
  const job = host.labels["job"];
  return job ? `${name} (${job})` : name;
}

/** Asks for the secret when the link has none; resolves with what was typed. */
export function askForSecret(): Promise<string> {
  const dialog = byId<HTMLElement>("secret-dialog");
  const form = byId<HTMLFormElement>("secret-form");
  const input = byId<HTMLInputElement>("secret-input");
  dialog.hidden = false;
  input.focus();
  return new Promise((resolve) => {
    const submit = (ev: SubmitEvent): void => {
      ev.preventDefault();
      const secret = input.value.trim();
      if (secret === "") return;
      form.removeEventListener("submit", submit);
      input.value = "";
      dialog.hidden = true;
      resolve(secret);
    };
    form.addEventListener("submit", submit);
  });
}
