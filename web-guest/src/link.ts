// The task page's address: `/t/{task_id}#secret=S&session=ID&host=NAME`
// (or `#token=JWT` instead of `secret=`).
//
// The secret lives only in the fragment, which browsers never send to a
// server; this module is the one place that reads or writes it (or a token).

/** What the page's address says to open. */
export interface Link {
  /** The task ID from the path. Empty when the path has none. */
  taskId: string;
  /** The task secret from the fragment. Empty when missing. */
  secret: string;
  /** A signed guest token from the fragment (`#token=`), instead of a secret. Empty when missing. */
  token: string;
  /** Session to join; empty means "open a new shell". */
  sessionId: string;
  /** Host to use; empty means "the first host". */
  hostName: string;
}

/** Path prefix of task pages, as served by the server. */
const TASK_PATH_PREFIX = "/t/";

/** Reads the link from a location (normally `window.location`). */
export function parseLink(location: { pathname: string; hash: string }): Link {
  const fragment = parseFragment(location.hash);
  return {
    taskId: taskIdFromPath(location.pathname),
    secret: fragment.get("secret") ?? "",
    token: fragment.get("token") ?? "",
    sessionId: fragment.get("session") ?? "",
    hostName: fragment.get("host") ?? "",
  };
}

/** The fragment (with its leading `#`) that encodes a link's secret, session and host. */
export function formatFragment(link: Pick<Link, "secret" | "token" | "sessionId" | "hostName">): string {
  const parts: string[] = [];
  const add = (key: string, value: string): void => {
    if (value !== "") parts.push(`${key}=${encodeURIComponent(value)}`);
  };
  add("secret", link.secret);
  add("token", link.token);
  add("session", link.sessionId);
  add("host", link.hostName);
  return parts.length === 0 ? "" : `#${parts.join("&")}`;
}

/** Replaces the address bar's fragment without adding a history entry or firing `hashchange`. */
export function replaceFragment(link: Pick<Link, "secret" | "token" | "sessionId" | "hostName">): void {
  const url = `${window.location.pathname}${window.location.search}${formatFragment(link)}`;
  window.history.replaceState(window.history.state, "", url);
}

function taskIdFromPath(pathname: string): string {
  if (!pathname.startsWith(TASK_PATH_PREFIX)) return "";
  const rest = pathname.slice(TASK_PATH_PREFIX.length).replace(/\/+$/, "");
  try {
    return decodeURIComponent(rest);
  } catch {
    return rest;
  }
}

// URLSearchParams would turn "+" into a space, which breaks base64 secrets;
// this parser only percent-decodes.
function parseFragment(hash: string): Map<string, string> {
  const result = new Map<string, string>();
  const body = hash.startsWith("#") ? hash.slice(1) : hash;
  for (const part of body.split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const key = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? "" : part.slice(eq + 1);
    result.set(safeDecode(key), safeDecode(value));
  }
  return result;
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}
