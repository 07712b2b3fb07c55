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

// A marker typed at the end of a long command line can wrap onto a row of
// its own and match here before the command has printed anything. Type it
// with quotes inside (`echo DO''NE` prints DONE), so only the output
// matches.
/** Waits until some terminal line, trimmed, equals `expected` (a string) or matches it (a RegExp). */
export async function waitForLine(page, expected, timeout = DEADLINE_MS) {
  const pattern = expected instanceof RegExp ? { source: expected.source, flags: expected.flags } : null;
  const text = expected instanceof RegExp ? null : expected;
  const waiting = page.waitForFunction(
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
  try {
    await waiting;
  } catch (err) {
    // Say what the terminal showed instead, so that a failure in CI can be
    // told apart: output that never came, or input that never ran.
    const lines = (await terminalLines(page).catch(() => [])).filter((l) => l.trim() !== "");
    const status = await page.locator("#status").textContent().catch(() => "");
    err.message += `\nwaiting for ${expected}; status: ${status}\nlast terminal lines:\n${lines.slice(-12).join("\n")}`;
    throw err;
  }
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

/** Waits until the status line's text matches `pattern`; returns the text. */
export async function waitForStatusText(page, pattern, timeout = DEADLINE_MS, selector = "#status") {
  const handle = await page.waitForFunction(
    ({ source, flags, selector }) => {
      const text = document.querySelector(selector)?.textContent ?? "";
      return new RegExp(source, flags).test(text) ? text : false;
    },
    { source: pattern.source, flags: pattern.flags, selector },
    { timeout, polling: 50 },
  );
  return handle.jsonValue();
}

/** The terminal lines (trimmed) that match `pattern`. */
export async function linesMatching(page, pattern) {
  return (await terminalLines(page)).map((l) => l.trim()).filter((l) => pattern.test(l));
}

/**
 * Starts recording, in the page, every status and attached event of the
 * page's terminal handle (window.rendezvousHandle) into window.__events.
 */
export async function recordEvents(page) {
  await page.waitForFunction(() => window.rendezvousHandle !== undefined, null, { timeout: DEADLINE_MS });
  await page.evaluate(() => {
    window.__events = [];
    const h = window.rendezvousHandle;
    h.on("status", (s) => window.__events.push({ type: "status", state: s.state, text: s.text }));
    h.on("attached", (a) => window.__events.push({ type: "attached", ...a }));
  });
}

/** The events recorded since recordEvents(). */
export async function recordedEvents(page) {
  return page.evaluate(() => window.__events ?? []);
}

/** Writes `data` into the page's terminal locally and waits until it is parsed. */
export async function writeLocally(page, data) {
  await page.evaluate((data) => new Promise((resolve) => window.rendezvousTerm.write(data, resolve)), data);
}
