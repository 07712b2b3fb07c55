// Debian's chromium, driven by playwright-core. Never downloads a browser.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

/** The browser binary; override with CHROMIUM_BIN. */
export const CHROMIUM_BIN = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";

/** The flags every test browser runs with: headless, and no connection to anywhere but the tests' servers. */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-quic",
  "--no-first-run",
  "--disable-component-update",
  "--disable-sync",
];

/**
 * Starts chromium with a fresh profile. Returns the context and a close()
 * that also deletes the profile; call it in a finally block or t.after().
 */
export async function launchBrowser({ colorScheme = "dark", viewport = { width: 1100, height: 650 } } = {}) {
  const userDataDir = await mkdtemp(join(tmpdir(), "rendezvous-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM_BIN,
      headless: true,
      args: CHROMIUM_ARGS,
      colorScheme,
      viewport,
    });
  } catch (err) {
    await rm(userDataDir, { recursive: true, force: true });
    throw err;
  }
  const close = async () => {
    await context.close().catch(() => {});
    await rm(userDataDir, { recursive: true, force: true });
  };
  return { context, close };
}

/** A new page that echoes the page's console errors into the test log. */
export async function newPage(context) {
  const page = await context.newPage();
  page.on("console", (msg) => {
    if (msg.type() === "error" || msg.type() === "warning") console.log(`[page ${msg.type()}] ${msg.text()}`);
  });
  page.on("pageerror", (err) => console.log(`[page exception] ${err.message}`));
  return page;
}
