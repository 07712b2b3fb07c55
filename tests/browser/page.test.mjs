// The task page with several tabs against one real `rendezvous demo`:
// joining a session by its URL, the ended state, the sessions sidebar, and
// the output a late joiner sees.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { newPage } from "./lib/browser.mjs";
import { fresh, useDemoAndBrowser } from "./lib/fixture.mjs";
import { DEADLINE_MS, fragmentSession, typeLine, waitForLine, waitForSession, waitForStatus } from "./lib/terminal.mjs";

describe("task page: sessions shared between tabs", () => {
  const fx = useDemoAndBrowser();

  /** A page on `url`, connected; returns it and the session ID its fragment names. */
  async function openAttached(url, t) {
    const page = await newPage(fx.browser.context);
    t.after(() => page.close().catch(() => {}));
    await page.goto(url);
    await waitForStatus(page, "connected");
    const sessionId = await waitForSession(page);
    return { page, sessionId };
  }

  /** Waits until the page's sidebar lists every session in `ids` (by full ID). */
  async function waitForListed(page, ids) {
    await page.waitForFunction(
      (ids) => {
        const listed = [...document.querySelectorAll("#sessions li.session code")].map((c) => c.title);
        return ids.every((id) => listed.includes(id));
      },
      ids,
      { timeout: DEADLINE_MS, polling: 100 },
    );
  }

  test("a second page with the first page's URL joins the same session", async (t) => {
    const a = await openAttached(fx.demo.url, t);
    assert.match(a.page.url(), /#secret=[^&]+&session=/);

    const b = await openAttached(a.page.url(), t);
    assert.equal(b.sessionId, a.sessionId, "page B must join A's session, not open a new shell");

    const fromA = fresh("joined");
    await typeLine(a.page, `echo ${fromA}`);
    await waitForLine(a.page, fromA);
    await waitForLine(b.page, fromA);

    const fromB = fresh("joined");
    await typeLine(b.page, `echo ${fromB}`);
    await waitForLine(b.page, fromB);
    await waitForLine(a.page, fromB);
  });

  test("`exit 7` shows the ended state with the exit code on every joined page", async (t) => {
    const a = await openAttached(fx.demo.url, t);
    const b = await openAttached(a.page.url(), t);
    assert.equal(b.sessionId, a.sessionId);

    await typeLine(a.page, "exit 7");
    for (const { page } of [a, b]) {
      const text = await waitForStatus(page, "ended");
      assert.match(text ?? "", /exit code 7\b/);
      await waitForLine(page, /\[rendezvous: session ended with exit code 7\]/);
      // Reloading an ended page should open a new shell, not try to join the dead one.
      assert.equal(await fragmentSession(page), "");
      assert.equal(
        await page.evaluate(() => window.rendezvousTerm.options.disableStdin),
        true,
        "an ended session's terminal must not take input",
      );
    }
  });

  test("the sidebar lists the sessions and opens new shells", async (t) => {
    // Two shells, opened from one page: the second with "New shell".
    const a = await openAttached(fx.demo.url, t);
    const newShell = a.page.locator("#new-shell");
    await newShell.waitFor({ state: "visible" });
    await a.page.waitForFunction(() => !document.getElementById("new-shell").disabled, null, { timeout: DEADLINE_MS });
    await newShell.click();
    const second = await waitForSession(a.page, a.sessionId);
    assert.notEqual(second, a.sessionId, "New shell must open a different session");
    await waitForStatus(a.page, "connected");
    await waitForListed(a.page, [a.sessionId, second]);
    const current = a.page.locator("#sessions li.session.current code");
    assert.equal(await current.getAttribute("title"), second, "the attached session is marked current");

    // A third page opens a third shell; both earlier ones are join entries in its list.
    const c = await openAttached(fx.demo.url, t);
    assert.ok(![a.sessionId, second].includes(c.sessionId), "a link without a session opens a new shell");
    await waitForListed(c.page, [a.sessionId, second, c.sessionId]);
    const joins = c.page.locator("#sessions li.session:not(.current) button", { hasText: /^join$/ });
    assert.ok((await joins.count()) >= 2, `expected at least two join entries, found ${await joins.count()}`);

    // Joining from the list switches the page (and its fragment) to that session.
    const mark = fresh("listed");
    await typeLine(a.page, `echo ${mark}`);
    await waitForLine(a.page, mark);
    await c.page.locator("#sessions li.session", { has: c.page.locator(`code[title="${second}"]`) }).getByRole("button", { name: "join" }).click();
    assert.equal(await waitForSession(c.page, c.sessionId), second);
    await waitForStatus(c.page, "connected");
    await waitForLine(c.page, mark);
  });

  test("a late joiner sees the output from before it joined", async (t) => {
    const a = await openAttached(fx.demo.url, t);
    const early = fresh("early");
    await typeLine(a.page, `echo ${early}`);
    await waitForLine(a.page, early);

    // Nothing is typed after this: B can only see the word from retained output.
    const b = await openAttached(a.page.url(), t);
    assert.equal(b.sessionId, a.sessionId);
    await waitForLine(b.page, early);
  });
});
