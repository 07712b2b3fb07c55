// End to end: the real binary (`rendezvous demo`: server + host on loopback)
// and the embedded web guest in Debian's chromium.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import { newPage } from "./lib/browser.mjs";
import { useDemoAndBrowser } from "./lib/fixture.mjs";
import { DEADLINE_MS, waitForLine, waitForStatus } from "./lib/terminal.mjs";

describe("web guest against `rendezvous demo`", () => {
  const fx = useDemoAndBrowser();

  test("typed input reaches the shell and its output comes back", async () => {
    const page = await newPage(fx.browser.context);
    await page.goto(fx.demo.url);
    await waitForStatus(page, "connected");

    const word = `hello-${randomBytes(6).toString("hex")}`;
    await page.locator("#terminal").click();
    await page.keyboard.type(`echo ${word}`);
    await page.keyboard.press("Enter");
    await waitForLine(page, word);

    // The address now names the session, so it can be shared to join it.
    const url = new URL(page.url());
    assert.match(url.hash, /(^#|&)secret=/);
    assert.match(url.hash, /&session=[^&]+/);
    assert.equal(url.search, "", "the secret must stay out of the query string");
    await page.close();
  });

  test("a wrong secret shows one plain message", async () => {
    const page = await newPage(fx.browser.context);
    const url = new URL(fx.demo.url);
    url.hash = `secret=${"x".repeat(32)}`;
    await page.goto(url.href);
    const text = await waitForStatus(page, "failed", DEADLINE_MS);
    assert.match(text ?? "", /Unknown task or wrong secret/);
    await waitForLine(page, /Unknown task or wrong secret/);
    await page.close();
  });
});
