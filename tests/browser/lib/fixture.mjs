// The browser tests' one set-up: a real `rendezvous demo` (server and host
// on loopback) and Debian's chromium for a describe block, pages that
// close with their test, and fresh secrets and words.

import { randomBytes } from "node:crypto";
import { after, before } from "node:test";
import { launchBrowser, newPage } from "./browser.mjs";
import { startDemo } from "./proc.mjs";

/** A secret as hosts generate them: 144 random bits, base64url. */
export const newSecret = () => randomBytes(18).toString("base64url");

/** A word no earlier output can contain. */
export const fresh = (prefix) => `${prefix}-${randomBytes(6).toString("hex")}`;

/**
 * Starts `rendezvous demo` and a browser (launched with `launchOptions`,
 * see launchBrowser) before the enclosing describe's tests, then runs
 * `ready(fixture)`; stops both after the tests. The fields of what it
 * returns are set once the `before` hook has run: `demo` (see startDemo),
 * `browser`, and `open(url, t)`, a new page on `url` that closes when test
 * `t` ends.
 */
export function useDemoAndBrowser(launchOptions = {}, ready = async () => {}) {
  const fixture = {
    demo: undefined,
    browser: undefined,
    async open(url, t) {
      const page = await newPage(fixture.browser.context);
      t.after(() => page.close().catch(() => {}));
      await page.goto(url);
      return page;
    },
  };
  before(async () => {
    fixture.demo = await startDemo();
    fixture.browser = await launchBrowser(launchOptions);
    await ready(fixture);
  });
  after(async () => {
    await fixture.browser?.close();
    await fixture.demo?.stop();
    // Once a file's tests are done its process must exit. Once it hung
    // with nothing left to run; should that happen again, say what holds
    // the event loop and fail, instead of hanging the whole suite. The
    // timer is unref'd: it never keeps a healthy process alive.
    setTimeout(() => {
      console.log(`# the test process did not exit; still open: ${process.getActiveResourcesInfo().join(", ")}`);
      process.exit(1);
    }, 30_000).unref();
  });
  return fixture;
}
