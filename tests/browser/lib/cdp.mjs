// Debian's chromium with nothing watching the page but Runtime.evaluate, for
// measurements.
//
// playwright enables DevTools' Network domain on every page, and with it the
// renderer keeps books on every chunk of every response (an event per chunk,
// and a copy of the body for getResponseBody) on the page's main thread.
// That is work a user's browser does not do, and it falls on the relay path
// only: the local terminal.write baseline has no network. So the render
// measurement drives chromium itself over --remote-debugging-pipe and
// enables no domain at all.

import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CHROMIUM_ARGS, CHROMIUM_BIN } from "./browser.mjs";

/**
 * Flags playwright also passes that bear on speed, so that the page runs as
 * in the other browser tests: no throttled timers or backgrounded renderer.
 */
const AS_PLAYWRIGHT_ARGS = [
  "--disable-background-timer-throttling",
  "--disable-backgrounding-occluded-windows",
  "--disable-renderer-backgrounding",
  "--disable-ipc-flooding-protection",
  "--disable-dev-shm-usage",
  "--disable-extensions",
  "--hide-scrollbars",
];

/** Milliseconds to wait for chromium to show its first page. */
const STARTUP_DEADLINE_MS = 30_000;

/**
 * Starts chromium on `url` with a fresh profile and a window of `width` ×
 * `height` CSS pixels. Returns { evaluate, close }: evaluate(expression)
 * runs it in the page, awaits a promise it returns and gives its value
 * (JSON-serializable); close() kills chromium and deletes the profile.
 */
export async function launchBare(url, { width = 1100, height = 650 } = {}) {
  const userDataDir = await mkdtemp(join(tmpdir(), "rendezvous-chromium-"));
  const child = spawn(
    CHROMIUM_BIN,
    [...CHROMIUM_ARGS, ...AS_PLAYWRIGHT_ARGS, "--remote-debugging-pipe", `--user-data-dir=${userDataDir}`, `--window-size=${width},${height}`, url],
    // fd 3: commands to chromium; fd 4: its answers (NUL-separated JSON).
    { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] },
  );
  child.stderr.resume();
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const pending = new Map();
  let nextId = 1;
  let received = "";
  child.stdio[4].setEncoding("utf8").on("data", (chunk) => {
    received += chunk;
    for (let end = received.indexOf("\0"); end >= 0; end = received.indexOf("\0")) {
      const message = JSON.parse(received.slice(0, end));
      received = received.slice(end + 1);
      const call = pending.get(message.id);
      if (call === undefined) continue; // an event: none is enabled, but some come anyway
      pending.delete(message.id);
      if (message.error) call.reject(new Error(`${call.method}: ${message.error.message}`));
      else call.resolve(message.result);
    }
  });
  exited.then(() => {
    for (const call of pending.values()) call.reject(new Error(`chromium exited during ${call.method}`));
    pending.clear();
  });
  const send = (method, params = {}, sessionId = undefined) =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { method, resolve, reject });
      child.stdio[3].write(`${JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) })}\0`);
    });
  const close = async () => {
    child.kill("SIGKILL");
    await exited;
    // Chromium's other processes may still be writing the profile for a moment.
    await rm(userDataDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  };

  try {
    const deadline = Date.now() + STARTUP_DEADLINE_MS;
    let page;
    while (page === undefined) {
      page = (await send("Target.getTargets")).targetInfos.find((t) => t.type === "page");
      if (page === undefined) {
        if (Date.now() > deadline) throw new Error(`chromium opened no page within ${STARTUP_DEADLINE_MS} ms`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    const { sessionId } = await send("Target.attachToTarget", { targetId: page.targetId, flatten: true });
    // The same viewport as playwright's `viewport` option (a headless
    // window's size includes a frame around it).
    await send("Emulation.setDeviceMetricsOverride", { width, height, deviceScaleFactor: 1, mobile: false }, sessionId);
    const evaluate = async (expression) => {
      const { result, exceptionDetails } = await send("Runtime.evaluate", { expression, awaitPromise: true, returnByValue: true }, sessionId);
      if (exceptionDetails) throw new Error(`in the page: ${exceptionDetails.exception?.description ?? exceptionDetails.text}`);
      return result.value;
    };
    return { evaluate, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Evaluates `expression` every 50 ms until it is truthy; throws after `deadlineMs`. */
export async function waitUntil(browser, expression, deadlineMs) {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    if (await browser.evaluate(expression)) return;
    if (Date.now() > deadline) throw new Error(`still false after ${deadlineMs} ms: ${expression}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
