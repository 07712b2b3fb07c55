// Reading the web guest's terminal and status line from a test.

/** Milliseconds to wait for the page to connect or for output to appear. */
export const DEADLINE_MS = 20_000;

/** Waits until the status line says `state` (connected, error, ended, ...); returns its text. */
export async function waitForStatus(page, state, timeout = DEADLINE_MS) {
  const status = page.locator(`#status[data-state="${state}"]`);
  await status.waitFor({ timeout });
  return status.textContent();
}

/** The terminal's lines (scrollback and screen), trailing spaces removed. */
export async function terminalLines(page) {
  return page.evaluate(() => {
    const term = window.rendezvousTerm;
    if (!term) return [];
    const buffer = term.buffer.active;
    const lines = [];
    for (let i = 0; i < buffer.length; i++) {
      lines.push(buffer.getLine(i)?.translateToString(true) ?? "");
    }
    return lines;
  });
}

/** Waits until some terminal line, trimmed, equals `expected` (a string) or matches it (a RegExp). */
export async function waitForLine(page, expected, timeout = DEADLINE_MS) {
  const pattern = expected instanceof RegExp ? { source: expected.source, flags: expected.flags } : null;
  const text = expected instanceof RegExp ? null : expected;
  await page.waitForFunction(
    ({ pattern, text }) => {
      const term = window.rendezvousTerm;
      if (!term) return false;
      const re = pattern ? new RegExp(pattern.source, pattern.flags) : null;
      const buffer = term.buffer.active;
      for (let i = 0; i < buffer.length; i++) {
        const line = (buffer.getLine(i)?.translateToString(true) ?? "").trim();
        if (re ? re.test(line) : line === text) return true;
      }
      return false;
    },
    { pattern, text },
    { timeout, polling: 100 },
  );
}

/** Focuses the page's terminal by clicking it, types `text` and presses Enter. */
export async function typeLine(page, text) {
  await page.locator("#terminal").click();
  await page.keyboard.type(text);
  await page.keyboard.press("Enter");
}

/** The `session=` value of the page's URL fragment; empty when it has none. */
export async function fragmentSession(page) {
  return page.evaluate(() => {
    const part = window.location.hash.slice(1).split("&").find((p) => p.startsWith("session="));
    return part ? decodeURIComponent(part.slice("session=".length)) : "";
  });
}

/**
 * Waits until the page's URL fragment names a session other than `previous`
 * (the page writes it once attached); returns that session ID.
 */
export async function waitForSession(page, previous = "", timeout = DEADLINE_MS) {
  await page.waitForFunction(
    (previous) => {
      const part = window.location.hash.slice(1).split("&").find((p) => p.startsWith("session="));
      const id = part ? decodeURIComponent(part.slice("session=".length)) : "";
      return id !== "" && id !== previous;
    },
    previous,
    { timeout, polling: 100 },
  );
  return fragmentSession(page);
}
