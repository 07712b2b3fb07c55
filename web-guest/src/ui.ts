// The task page's chrome: header (task, status, read-only badge), the
// hosts-and-sessions sidebar, and the secret form.
//
// Pure DOM rendering; what the buttons do is decided by the caller (app.ts).

import type { HostSummary, SessionSummary } from "./lib";

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

/** The header: task ID, the one-line status, the read-only badge. */
export class Header {
  private readonly status = byId<HTMLElement>("status");
  private readonly badge = byId<HTMLElement>("read-only-badge");

  /** Shows the task ID in the header and the window title. */
  showTask(taskId: string): void {
    byId<HTMLElement>("task").textContent = taskId;
    document.title = taskId ? `${taskId} · Rendezvous` : "Rendezvous";
    this.setReadOnly(false);
  }

  /** `state` is also exposed as `data-state` for tests and styling. */
  setStatus(state: string, text: string): void {
    this.status.dataset["state"] = state;
    this.status.textContent = text;
    this.status.title = text;
  }

  setReadOnly(readOnly: boolean): void {
    this.badge.hidden = !readOnly;
  }
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
  private hosts: HostSummary[] = [];
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

  /** Replaces the list; keeps the selected host if it is still there. */
  update(hosts: HostSummary[]): void {
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
    this.newShell.title = this.canOpenShell ? "Open a new shell on this host" : "This link is read-only: it cannot open shells";
    const sessions = host?.sessions ?? [];
    this.list.replaceChildren(...sessions.map((s) => this.row(host!.hostName, s)));
    this.empty.hidden = sessions.length > 0;
    this.empty.textContent = this.hosts.length === 0 ? "No host is connected yet." : "No sessions yet.";
  }

  private row(hostName: string, session: SessionSummary): HTMLLIElement {
    const li = document.createElement("li");
    li.className = "session";
    const isCurrent = session.sessionId === this.current;
    li.classList.toggle("current", isCurrent);

    const text = document.createElement("div");
    text.className = "session-text";
    const id = document.createElement("code");
    id.textContent = session.sessionId.slice(0, SHORT_ID_CHARS);
    id.title = session.sessionId;
    const meta = document.createElement("span");
    meta.className = "meta";
    const guests = session.guestCount === 1 ? "1 guest" : `${session.guestCount} guests`;
    meta.textContent = `${session.cols}×${session.rows} · ${guests} · ${clock(session.startedAt)}`;
    meta.title = `Started ${session.startedAt.toLocaleString()}; ${session.outputBytes} bytes of output`;
    text.append(id, meta);

    const join = document.createElement("button");
    join.type = "button";
    join.className = "small";
    join.textContent = isCurrent ? "attached" : "join";
    join.disabled = isCurrent;
    join.addEventListener("click", () => this.actions.onJoin(hostName, session.sessionId));

    li.append(text, join);
    return li;
  }
}

function hostLabel(host: HostSummary): string {
  const name = host.hostName || "default";
  const job = host.labels["job"];
  return job ? `${name} (${job})` : name;
}

/** "14:05" for a start time (24-hour clock, which stays short). */
function clock(date: Date): string {
  return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
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
