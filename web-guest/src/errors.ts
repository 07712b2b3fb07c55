// Turns RPC failures into sentences a person can act on, and decides which
// failures are worth retrying.

import { Code, ConnectError } from "@connectrpc/connect";
import type { ErrorInfo } from "./lib/api";

/** What the page was doing when a call failed; some codes mean different things per action. */
export type Action = "list" | "new-shell" | "join" | "resume" | "input";

/** Message for an unknown task or a wrong secret: deliberately one message for both. */
export const WRONG_SECRET_MESSAGE =
  "Unknown task or wrong secret. Check that you opened the whole link you were given, including the part after #secret=.";

/** Message for a refused guest token. */
export const BAD_TOKEN_MESSAGE = "The server refused this link's token (it may have expired). Ask for a new link.";

/** The session or its host went away while the page was away (NOT_FOUND on resume). */
export const GONE_ON_RESUME_MESSAGE =
  "The host has gone, or the session ended while this page was disconnected. Open a new shell or join another session from the list.";

/**
 * On a resume, the task has no host any more: NOT_FOUND "no host is
 * connected" (the server keeps a task 10 minutes after its last host
 * left), or PERMISSION_DENIED after that (the credentials worked a moment
 * ago, so the task itself has gone).
 */
export const TASK_GONE_ON_RESUME_MESSAGE =
  "The host has gone: this task has no host any more (the CI job may have finished). Reload the page to wait for it to come back.";

/** The task has no host at all right now (its last one left). */
export const NO_HOST_MESSAGE =
  "No host is connected to this task right now (the CI job may be between steps, or finished). Reload the page to wait for one.";

/** The session's host disconnected (the server ended the session for that reason). */
export const HOST_GONE_MESSAGE =
  "The host has gone: it disconnected, so this session ended (the CI job may have finished). Reload the page when the host is back, or pick another host.";

/** True when the failure is ours (we aborted the call), so nothing should be shown. */
export function isCanceled(err: unknown): boolean {
  return ConnectError.from(err).code === Code.Canceled;
}

/**
 * True when the call failed for a reason that may go away by itself:
 * the network, a proxy, a restarting or busy server.
 */
export function isTransient(err: unknown): boolean {
  const e = ConnectError.from(err);
  return isNetworkFailure(e) || e.code === Code.Unavailable || e.code === Code.DeadlineExceeded;
}

/**
 * True when the request never got an answer from the server: fetch failed
 * (network down, connection cut, or a cross-origin request the browser
 * blocked: the two look alike to a page), the response body broke off, or
 * a proxy in front of a stopped server answered with a bare 5xx.
 */
export function isNetworkFailure(err: unknown): boolean {
  const e = ConnectError.from(err);
  if (e.cause instanceof TypeError) return true;
  if (e.code === Code.Unknown && /^(missing trailer|network error|Failed to fetch)/i.test(e.rawMessage)) return true;
  return /^HTTP 5\d\d$/.test(e.rawMessage);
}

/** "Cannot reach the server at …": a network failure, with a hint when the page is on another origin. */
export function unreachableMessage(server: string): string {
  let text = `Cannot reach the server at ${server}`;
  if (typeof window !== "undefined" && new URL(server).origin !== window.location.origin) {
    // A browser hides why a cross-origin request failed, so say both.
    text += ` (or it does not allow pages on ${window.location.origin}: its operator can add --allowed-origin ${window.location.origin})`;
  }
  return text;
}

/** A failure the caller will not retry, described for people. */
export function describeFailure(err: unknown, action: Action, usesToken = false): ErrorInfo {
  const e = ConnectError.from(err);
  const code = Code[e.code] ?? String(e.code);
  switch (e.code) {
    case Code.PermissionDenied:
      // The origin check answers PERMISSION_DENIED too, naming the flag.
      if (/--allowed-origin/.test(e.rawMessage)) return { kind: "denied", code, text: `The server refused this page: ${e.rawMessage}.` };
      if (action === "new-shell" && /read-only/.test(e.rawMessage)) {
        return { kind: "denied", code, text: "This link is read-only: it can watch sessions but not open a shell. Join a session from the list." };
      }
      if (action === "input") return { kind: "denied", code, text: "This link is read-only: you can watch, not type." };
      if (action === "resume") return { kind: "not-found", code, text: TASK_GONE_ON_RESUME_MESSAGE };
      return { kind: "denied", code, text: usesToken ? BAD_TOKEN_MESSAGE : WRONG_SECRET_MESSAGE };
    case Code.NotFound:
      // The task is known, but its last host has left (the server keeps it a while).
      if (/no host is connected/.test(e.rawMessage)) {
        if (action === "resume") return { kind: "not-found", code, text: TASK_GONE_ON_RESUME_MESSAGE };
        return { kind: "not-found", code, text: NO_HOST_MESSAGE };
      }
      if (action === "resume") return { kind: "not-found", code, text: GONE_ON_RESUME_MESSAGE };
      if (action === "join") {
        return { kind: "not-found", code, text: "This session no longer exists: it ended, or its host has gone. Open a new shell or join another session." };
      }
      return { kind: "not-found", code, text: "That host is not connected to this task (it may have gone). Pick another host, or reload when it is back." };
    case Code.Unauthenticated:
      return { kind: "other", code, text: "The server no longer knows this terminal. Reload the page to attach again." };
    case Code.FailedPrecondition:
      return { kind: "other", code, text: "The session has ended. Open a new shell to continue." };
    case Code.InvalidArgument:
      return { kind: "refused", code, text: `The link is malformed: ${e.rawMessage}. Check the link you were given.` };
    case Code.ResourceExhausted:
      return { kind: "refused", code, text: `The server refused: ${e.rawMessage}.` };
    case Code.Unavailable:
      return action === "new-shell"
        ? { kind: "other", code, text: `The host went away while opening a shell: ${e.rawMessage}. Try again, or join an existing session.` }
        : { kind: "other", code, text: `The server is unavailable: ${e.rawMessage}. Try again shortly.` };
    case Code.Unimplemented:
      return { kind: "other", code, text: `This server does not speak the Rendezvous protocol (${e.rawMessage}). Check the server address.` };
    default:
      return { kind: "other", code, text: `Error (${code}): ${e.rawMessage}. Reload the page to try again.` };
  }
}

/** A plain-words description of a failed call (for warnings that do not stop anything). */
export function describeError(err: unknown, action: Action): string {
  return isNetworkFailure(err) ? "The network failed." : describeFailure(err, action).text;
}
