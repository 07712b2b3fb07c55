// Runs `rendezvous demo`: a real server and host on loopback.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

/** The binary under test; override with RENDEZVOUS_BIN. */
export const RENDEZVOUS_BIN = process.env.RENDEZVOUS_BIN ?? join(REPO_ROOT, "target/debug/rendezvous");

/** Milliseconds to wait for the demo to print its URL. */
const STARTUP_DEADLINE_MS = 30_000;

/** Milliseconds to wait for the demo to exit after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 3_000;

/** True when the binary exists (it is built by `cargo build`). */
export function demoBinaryExists() {
  return existsSync(RENDEZVOUS_BIN);
}

/**
 * Starts `rendezvous demo --listen 127.0.0.1:0` and waits for the URL it
 * prints (http://127.0.0.1:PORT/t/demo#secret=...). Returns { url, stop }.
 * stop() ends the process; it is safe to call more than once.
 */
export async function startDemo() {
  const child = spawn(RENDEZVOUS_BIN, ["demo", "--listen", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" },
  });
  let output = "";
  const exited = new Promise((resolveExit) => child.once("exit", (code, signal) => resolveExit({ code, signal })));
  let running = true;
  exited.then(() => (running = false));

  const stop = async () => {
    if (!running) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => running && child.kill("SIGKILL"), STOP_GRACE_MS);
    await exited;
    clearTimeout(timer);
  };

  try {
    const url = await new Promise((resolveUrl, reject) => {
      let stdout = "";
      const deadline = setTimeout(
        () => reject(new Error(`demo printed no URL within ${STARTUP_DEADLINE_MS} ms; output:\n${output}`)),
        STARTUP_DEADLINE_MS,
      );
      child.stdout.setEncoding("utf8");
      child.stderr.setEncoding("utf8");
      child.stdout.on("data", (chunk) => {
        stdout += chunk;
        output += chunk;
        // Only whole lines, so a URL split across chunks is not cut short.
        const match = /http:\/\/\S+/.exec(stdout.slice(0, stdout.lastIndexOf("\n") + 1));
        if (match) {
          clearTimeout(deadline);
          resolveUrl(match[0]);
        }
      });
      child.stderr.on("data", (chunk) => {
        output += chunk;
      });
      child.once("error", (err) => {
        clearTimeout(deadline);
        reject(err);
      });
      exited.then(({ code, signal }) => {
        clearTimeout(deadline);
        reject(new Error(`demo exited (code ${code}, signal ${signal}) before printing a URL; output:\n${output}`));
      });
    });
    return { url, stop, output: () => output };
  } catch (err) {
    await stop();
    throw err;
  }
}
