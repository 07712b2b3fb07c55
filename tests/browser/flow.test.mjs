// Flow control: under a flood the page keeps answering, nothing is dropped,
// and the flood's last line arrives.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { newPage } from "./lib/browser.mjs";
import { useDemoAndBrowser } from "./lib/fixture.mjs";
import { linesMatching, typeLine, waitForLine, waitForStatus } from "./lib/terminal.mjs";

/** Milliseconds the 50 MB flood may take to render in this machine's headless chromium. */
const FLOOD_DEADLINE_MS = 240_000;

/** Slowest acceptable answer to page.evaluate during the flood, in milliseconds. */
const RESPONSIVE_MS = 1_000;

/**
 * Most output the host may write for a page that renders nothing, in bytes
 * (8 MiB): the page's acknowledged window (4 MiB) plus what the server and
 * the host's PTY buffer before backpressure pauses the host.
 */
const STALLED_OUTPUT_LIMIT_BYTES = 8 * 1024 * 1024;

describe("flow control under a flood", () => {
  const fx = useDemoAndBrowser();

  test("`yes | head -c 50M`: the page answers, typed input runs after it, the last line arrives", async (t) => {
    const page = await newPage(fx.browser.context);
    t.after(() => page.close().catch(() => {}));
    const warnings = [];
    page.on("console", (msg) => {
      if (msg.type() === "warning" || msg.type() === "error") warnings.push(msg.text());
    });
    await page.goto(fx.demo.url);
    await waitForStatus(page, "connected");

    const started = Date.now();
    await typeLine(page, "yes | head -c 50000000; echo FLOOD-''DONE");
    // The flood is on once the screen fills with y.
    await page.waitForFunction(
      () => {
        const b = window.rendezvousTerm.buffer.active;
        return b.getLine(b.baseY + b.cursorY - 1)?.translateToString(true) === "y";
      },
      null,
      { timeout: 20_000, polling: 50 },
    );

    // While it floods: the page answers quickly, and keys still go out.
    const answers = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const lines = await page.evaluate(() => window.rendezvousTerm.buffer.active.length);
      answers.push(performance.now() - t0);
      assert.ok(lines > 0);
    }
    // Typed ahead, the command line is echoed by the PTY during the flood, so
    // its output may follow the next prompt on the same line (dash, zsh). The
    // quotes keep the echoed command itself from matching.
    await typeLine(page, "echo typed-during-''flood");
    const floodStillOn = !(await linesMatching(page, /^FLOOD-DONE$/)).length;
    assert.ok(floodStillOn, "the flood was still running when the probes ran");
    const worst = Math.max(...answers);
    assert.ok(worst < RESPONSIVE_MS, `page.evaluate took ${worst.toFixed(0)} ms during the flood`);

    await waitForLine(page, "FLOOD-DONE", FLOOD_DEADLINE_MS);
    await waitForLine(page, /(^|[$#%>] )typed-during-flood$/, 30_000);
    console.log(`# 50 MB flood rendered in ${((Date.now() - started) / 1000).toFixed(1)} s; slowest evaluate ${worst.toFixed(0)} ms`);

    // Nothing was dropped: no gap marker, and xterm.js never discarded data.
    assert.deepEqual(await linesMatching(page, /bytes of output were lost/), []);
    assert.deepEqual(warnings.filter((w) => /discard|flow control/i.test(w)), []);
  });

  test("a page that stops rendering stops pulling at its watermark, the host stops within its window, and nothing is lost", async (t) => {
    const page = await newPage(fx.browser.context);
    t.after(() => page.close().catch(() => {}));
    await page.goto(fx.demo.url);
    await waitForStatus(page, "connected");

    // From now on the terminal parses nothing: writes are held, callbacks never run.
    await page.evaluate(() => {
      const term = window.rendezvousTerm;
      window.__held = [];
      window.__heldBytes = 0;
      window.__write = term.write;
      term.write = (data, callback) => {
        window.__held.push([data, callback]);
        window.__heldBytes += data.length;
      };
    });
    await page.locator("#terminal").click();
    await page.keyboard.type("yes | head -c 200000000");
    await page.keyboard.press("Enter");

    // The session's output offset (ListSessions) grows, then stops: wait until
    // two readings half a second apart agree.
    const plateau = await page.evaluate(async () => {
      const offset = async () => {
        const hosts = await window.rendezvousHandle.listSessions();
        const id = window.rendezvousHandle.status.sessionId;
        return hosts.flatMap((h) => h.sessions).find((s) => s.sessionId === id)?.outputBytes ?? 0;
      };
      const deadline = performance.now() + 30_000;
      let last = -1;
      for (;;) {
        const now = await offset();
        if (now === last && now > 0) return { offset: now, held: window.__heldBytes };
        if (performance.now() > deadline) throw new Error(`output never stopped growing (at ${now} bytes)`);
        last = now;
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    });
    console.log(`# stalled page: the host stopped at ${plateau.offset} bytes; the page holds ${plateau.held}`);
    // The page's high watermark (512 KiB) plus the one output message that
    // crossed it (the server's largest is 256 KiB).
    assert.ok(plateau.held <= 512 * 1024 + 256 * 1024, `the page pulled ${plateau.held} bytes past what it rendered`);
    // The page stops pulling at its watermark; Chromium would keep reading
    // the HTTP response below the page (about 64 MiB over HTTP/1.1), but the
    // server sends nothing past the page's last Ack plus its 4 MiB window,
    // and the guest at its window holds the host back.
    assert.ok(
      plateau.offset < STALLED_OUTPUT_LIMIT_BYTES,
      `the host wrote ${plateau.offset} bytes for a page that renders nothing (limit ${STALLED_OUTPUT_LIMIT_BYTES})`,
    );

    // Rendering again: everything held goes in, in order; then stop the flood.
    await page.evaluate(() => {
      const term = window.rendezvousTerm;
      term.write = window.__write;
      for (const [data, callback] of window.__held) term.write(data, callback);
      window.__held = [];
    });
    // The page acknowledges what it renders, so the window opens and the host
    // goes on well past where it stopped.
    const resumedAt = await page.evaluate(async (past) => {
      const deadline = performance.now() + 60_000;
      for (;;) {
        const hosts = await window.rendezvousHandle.listSessions();
        const id = window.rendezvousHandle.status.sessionId;
        const now = hosts.flatMap((h) => h.sessions).find((s) => s.sessionId === id)?.outputBytes ?? 0;
        if (now > past) return now;
        if (performance.now() > deadline) throw new Error(`output stayed at ${now} bytes after rendering resumed`);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }, plateau.offset + STALLED_OUTPUT_LIMIT_BYTES);
    console.log(`# rendering again: the host went on to ${resumedAt} bytes`);
    await page.keyboard.press("Control+C");
    await typeLine(page, "echo STALL-DONE");
    await waitForLine(page, "STALL-DONE", FLOOD_DEADLINE_MS);
    assert.deepEqual(await linesMatching(page, /bytes of output were lost/), []);
  });
});
