// Real processes of the binary under test: `rendezvous demo`, `serve` and `host`.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

/** The binary under test; override with RENDEZVOUS_BIN. */
export const RENDEZVOUS_BIN = process.env.RENDEZVOUS_BIN ?? join(REPO_ROOT, "target/debug/rendezvous");

/** Milliseconds to wait for a process to print the line it is waited on for. */
const STARTUP_DEADLINE_MS = 30_000;

/** Milliseconds to wait for a process to exit after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 3_000;

/** True when the binary exists (it is built by `cargo build`). */
export function binaryExists() {
  return existsSync(RENDEZVOUS_BIN);
}

/**
 * Runs the binary with `args` until it prints a line (stdout or stderr)
 * matching `pattern`. Returns { match, stop, kill, exited, output }.
 * stop() sends SIGTERM (then SIGKILL) and waits; kill(signal) only signals.
 */
export async function spawnUntil(args, pattern, { env = {} } = {}) {
  const child = spawn(RENDEZVOUS_BIN, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info", ...env },
  });
  let output = "";
  let running = true;
  const exited = new Promise((resolveExit) =>
    child.once("exit", (code, signal) => {
      running = false;
      resolveExit({ code, signal });
    }),
  );
  const stop = async () => {
    if (!running) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => running && child.kill("SIGKILL"), STOP_GRACE_MS);
    await exited;
    clearTimeout(timer);
  };
  const kill = (signal = "SIGKILL") => {
    if (running) child.kill(signal);
    return exited;
  };
  try {
    const match = await new Promise((resolveMatch, reject) => {
      const deadline = setTimeout(
        () => reject(new Error(`rendezvous ${args[0]} printed no ${pattern} within ${STARTUP_DEADLINE_MS} ms; output:\n${output}`)),
        STARTUP_DEADLINE_MS,
      );
      let complete = "";
      const onData = (chunk) => {
        output += chunk;
        // Only whole lines, so a URL split across chunks is not cut short.
        complete = output.slice(0, output.lastIndexOf("\n") + 1);
        const m = pattern.exec(complete);
        if (m) {
          clearTimeout(deadline);
          resolveMatch(m);
        }
      };
      child.stdout.setEncoding("utf8").on("data", onData);
      child.stderr.setEncoding("utf8").on("data", onData);
      child.once("error", (err) => {
        clearTimeout(deadline);
        reject(err);
      });
      exited.then(({ code, signal }) => {
        clearTimeout(deadline);
        reject(new Error(`rendezvous ${args[0]} exited (code ${code}, signal ${signal}); output:\n${output}`));
      });
    });
    return { match, stop, kill, exited, output: () => output };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** `rendezvous demo`: a server and a host (task `demo`). Returns { url, secret, server, stop }. */
export async function startDemo({ allowedOrigins = [], command = [], env = {} } = {}) {
  const args = ["demo", "--listen", "127.0.0.1:0", ...allowedOrigins.flatMap((o) => ["--allowed-origin", o])];
  if (command.length > 0) args.push("--", ...command);
  const proc = await spawnUntil(args, /http:\/\/\S+/, { env });
  const url = proc.match[0];
  const parsed = new URL(url);
  const secret = decodeURIComponent(/secret=([^&]+)/.exec(parsed.hash)?.[1] ?? "");
  return { ...proc, url, secret, server: parsed.origin };
}

/**
 * `rendezvous serve` on `listen` (a free loopback port by default), with
 * `extraArgs` (e.g. ["--session-idle-timeout", "2s"]). Returns { server, stop }.
 */
export async function startServe({ allowedOrigins = [], extraArgs = [], listen = "127.0.0.1:0" } = {}) {
  // No drain delay: the tests stop their servers with SIGTERM.
  const args = ["serve", "--listen", listen, "--drain-delay", "0s", ...allowedOrigins.flatMap((o) => ["--allowed-origin", o]), ...extraArgs];
  const proc = await spawnUntil(args, /listening on (http:\/\/\S+)/);
  return { ...proc, server: proc.match[1].replace(/\/+$/, "") };
}

/**
 * `rendezvous host`, registered with `server`. Returns { url, stop, kill }:
 * url is the task page link it printed.
 */
// gracePeriod: how long the host keeps its shells after losing the server
// ("0" by default here, so that a killed host ends its sessions at once).
export async function startHost({ server, taskId, secret, name, readOnlySecret, labels = {}, command = ["bash", "--norc", "--noprofile"], gracePeriod = "0" }) {
  const args = ["host", "--server", server, "--task-id", taskId, "--grace-period", gracePeriod];
  if (name) args.push("--name", name);
  for (const [k, v] of Object.entries(labels)) args.push("--label", `${k}=${v}`);
  args.push("--", ...command);
  const env = { RENDEZVOUS_SECRET: secret };
  if (readOnlySecret) env.RENDEZVOUS_READ_ONLY_SECRET = readOnlySecret;
  const proc = await spawnUntil(args, /Open (http:\/\/\S+)/, { env });
  return { ...proc, url: proc.match[1] };
}
