// Resize: the terminal fits its container (ResizeObserver + addon-fit), and
// the debounced size report reaches the PTY: `stty size` changes.

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { newPage } from "./lib/browser.mjs";
import { useDemoAndBrowser } from "./lib/fixture.mjs";
import { DEADLINE_MS, linesMatching, typeLine, waitForStatus } from "./lib/terminal.mjs";

describe("resize", () => {
  const fx = useDemoAndBrowser({ viewport: { width: 1100, height: 650 } });

  /** The terminal's size in cells. */
  const termSize = (page) => page.evaluate(() => ({ cols: window.rendezvousTerm.cols, rows: window.rendezvousTerm.rows }));

  /** Waits until the server reports the PTY at the terminal's size (the size event). */
  async function waitForPtySize(page, size) {
    await page.waitForFunction(
      ({ cols, rows }) => {
        const s = window.rendezvousHandle.status;
        return s.state === "connected" && s.ptySize?.cols === cols && s.ptySize?.rows === rows;
      },
      size,
      { timeout: DEADLINE_MS, polling: 50 },
    );
  }

  /** Runs `stty size` and returns what it printed, as {rows, cols}. */
  async function sttySize(page, mark) {
    await typeLine(page, `stty size; echo ${mark}`);
    await page.waitForFunction(
      (mark) => {
        const b = window.rendezvousTerm.buffer.active;
        for (let i = 0; i < b.length; i++) if (b.getLine(i)?.translateToString(true).trim() === mark) return true;
        return false;
      },
      mark,
      { timeout: DEADLINE_MS, polling: 50 },
    );
    const sizes = await linesMatching(page, /^\d+ \d+$/);
    const [rows, cols] = sizes.at(-1).split(" ").map(Number);
    return { rows, cols };
  }

  test("changing the viewport changes `stty size` in the shell", async (t) => {
    const page = await newPage(fx.browser.context);
    t.after(() => page.close().catch(() => {}));
    await page.goto(fx.demo.url);
    await waitForStatus(page, "connected");

    const first = await termSize(page);
    await waitForPtySize(page, first);
    assert.deepEqual(await sttySize(page, "size-1"), first);

    await page.setViewportSize({ width: 760, height: 420 });
    await page.waitForFunction(({ cols, rows }) => window.rendezvousTerm.cols < cols && window.rendezvousTerm.rows < rows, first, {
      timeout: DEADLINE_MS,
      polling: 50,
    });
    const second = await termSize(page);
    await waitForPtySize(page, second);
    assert.deepEqual(await sttySize(page, "size-2"), second, "stty size follows the smaller viewport");

    await page.setViewportSize({ width: 1200, height: 700 });
    await page.waitForFunction(({ cols }) => window.rendezvousTerm.cols > cols, second, { timeout: DEADLINE_MS, polling: 50 });
    const third = await termSize(page);
    await waitForPtySize(page, third);
    assert.deepEqual(await sttySize(page, "size-3"), third, "stty size follows the larger viewport");
  });
});
