// Turns RPC failures into sentences a person can act on.

import { Code, ConnectError } from "@connectrpc/connect";

/** What the page was doing when a call failed; some codes mean different things per action. */
export type Action = "list" | "new-shell" | "join" | "input";

/** Message for an unknown task or a wrong secret: deliberately one message for both. */
export const WRONG_SECRET_MESSAGE = "Unknown task or wrong secret. Check the link you were given.";

/** True when the failure is ours (we aborted the call), so nothing should be shown. */
export function isCanceled(err: unknown): boolean {
  return ConnectError.from(err).code === Code.Canceled;
}

/**
 * True when the call failed for a reason that may go away by itself:
 * the network, a proxy, or a busy server.
 */
export function isTransient(err: unknown): boolean {
  const e = ConnectError.from(err);
  return isNetworkFailure(e) || e.code === Code.Unavailable || e.code === Code.DeadlineExceeded;
}

/** A plain-words description of a failed call. */
export function describeError(err: unknown, action: Action): string {
  const e = ConnectError.from(err);
  if (isNetworkFailure(e)) {
    return `Cannot reach the server (${e.rawMessage || "network error"}). Check your connection, then reload the page.`;
  }
  switch (e.code) {
    case Code.PermissionDenied:
      // The page lists sessions (checking the secret) before it opens a
      // shell, so a refused new shell means a read-only link.
      if (action === "new-shell") {
        return "This link is read-only: it can watch sessions but not open a new shell. Join one from the list.";
      }
      if (action === "input") return "This link is read-only: you can watch, not type.";
      return WRONG_SECRET_MESSAGE;
    case Code.NotFound:
      return "The host or session is gone.";
    case Code.Unauthenticated:
      return "The server no longer knows this terminal. Reload the page to attach again.";
    case Code.FailedPrecondition:
      return "The session has ended.";
    case Code.InvalidArgument:
      return `The link is malformed: ${e.rawMessage}`;
    case Code.ResourceExhausted:
      return `The server refused: ${e.rawMessage}`;
    case Code.Unavailable:
      return action === "new-shell"
        ? `The host could not start a shell: ${e.rawMessage}`
        : `The server is unavailable: ${e.rawMessage}`;
    case Code.DeadlineExceeded:
      return "The server did not answer in time. Reload the page to try again.";
    case Code.Unimplemented:
      return `This server does not speak the Rendezvous protocol (${e.rawMessage}).`;
    default:
      return `Error (${Code[e.code]}): ${e.rawMessage}`;
  }
}

// fetch() rejects with a TypeError when the network fails, and a proxy in
// front of a stopped server answers with a bare HTTP error status.
function isNetworkFailure(e: ConnectError): boolean {
  if (e.cause instanceof TypeError) return true;
  return /^HTTP 5\d\d$/.test(e.rawMessage);
}
