// The embeddable guest on another origin: web-guest/examples/embed.html,
// served by a small static server on another 127.0.0.1 port, imports
// /assets/lib/rendezvous-guest.js from the real server and mounts a
// terminal. Allowed with --allowed-origin; refused otherwise.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { join } from "node:path";
import { launchBrowser, newPage } from "./lib/browser.mjs";
import { REPO_ROOT, startDemo } from "./lib/proc.mjs";
import { startStatic } from "./lib/static.mjs";
import { DEADLINE_MS, typeLine, waitForLine, waitForStatusText } from "./lib/terminal.mjs";

const EXAMPLE = join(REPO_ROOT, "web-guest/examples/embed.html");
const LIB = join(REPO_ROOT, "web-guest/dist/assets/lib");

describe("embedding the guest in a page on another origin", () => {
  let allowed; // a static server whose origin the rendezvous server allows
  let other; // one whose origin it does not
  let demo;
  let browser;

  before(async () => {
    const routes = {
      "/embed.html": EXAMPLE,
      // A copy of the module hosted by the embedding site itself.
      "/lib/rendezvous-guest.js": join(LIB, "rendezvous-guest.js"),
      "/lib/rendezvous-guest.css": join(LIB, "rendezvous-guest.css"),
    };
    allowed = await startStatic(routes);
    other = await startStatic(routes);
    demo = await startDemo({ allowedOrigins: [allowed.origin] });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await demo?.stop();
    await allowed?.close();
    await other?.close();
  });

  const exampleUrl = (site, extra = "") =>
    `${site.origin}/embed.html?server=${encodeURIComponent(demo.server)}${extra}#task=demo&secret=${encodeURIComponent(demo.secret)}`;

  async function open(url, t) {
    const page = await newPage(browser.context);
    t.after(() => page.close().catch(() => {}));
    await page.goto(url);
    return page;
  }

  test("an allowed origin imports the module from the server and gets a working terminal", async (t) => {
    const page = await open(exampleUrl(allowed), t);
    assert.equal(new URL(page.url()).origin, allowed.origin);
    assert.notEqual(allowed.origin, demo.server);
    await waitForStatusText(page, /^Connected to \w+ on default$/, DEADLINE_MS, ".rendezvous-guest-status");
    const word = `embedded-${randomBytes(5).toString("hex")}`;
    await typeLine(page, `echo ${word}`);
    await waitForLine(page, word);
    // The module added its stylesheet, from the server too, and it applies.
    const sheet = await page.evaluate(() => [...document.styleSheets].map((s) => s.href));
    assert.ok(sheet.includes(`${new URL(page.url()).searchParams.get("server")}/assets/lib/rendezvous-guest.css`), `stylesheets: ${sheet}`);
    assert.equal(await page.evaluate(() => getComputedStyle(document.querySelector(".rendezvous-guest")).display), "flex");
    assert.equal(await page.locator("#error").isHidden(), true);
  });

  test("an origin that is not allowed cannot even load the module from the server", async (t) => {
    const page = await open(exampleUrl(other), t);
    const error = page.locator("#error");
    await error.waitFor({ state: "visible", timeout: DEADLINE_MS });
    assert.match(await error.textContent(), new RegExp(`^Could not load the terminal from ${demo.server.replace(/\./g, "\\.")} .*--allowed-origin ${other.origin.replace(/\./g, "\\.")}`));
    assert.equal(await page.locator(".rendezvous-guest").count(), 0, "no terminal was mounted");
  });

  test("an origin that is not allowed, with its own copy of the module, is refused by gRPC-Web", async (t) => {
    const page = await open(exampleUrl(other, `&module=${encodeURIComponent("/lib/rendezvous-guest.js")}`), t);
    const text = await waitForStatusText(page, /^Cannot reach the server/, DEADLINE_MS, ".rendezvous-guest-status");
    assert.match(
      text,
      new RegExp(`^Cannot reach the server at ${demo.server.replace(/\./g, "\\.")} \\(or it does not allow pages on ${other.origin.replace(/\./g, "\\.")}: its operator can add --allowed-origin ${other.origin.replace(/\./g, "\\.")}\\); retrying in \\d+ s`),
    );
    await waitForLine(page, /^\[rendezvous\] Cannot reach the server at/);
    assert.ok(!(await page.evaluate(() => window.rendezvousHandle.status.state === "connected")));
  });
});
