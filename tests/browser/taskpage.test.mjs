// The task page /t/{task_id}: several hosts and the host picker, the
// read-only badge, and the terminal's behaviour: unicode 11 widths, a theme
// that follows the system, copy on select, paste, OSC 52 off by default,
// clickable links, and every asset from the server itself.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { launchBrowser, newPage } from "./lib/browser.mjs";
import { fresh, newSecret, useDemoAndBrowser } from "./lib/fixture.mjs";
import { startHost, startServe } from "./lib/proc.mjs";
import { DEADLINE_MS, fragmentSession, typeLine, waitForLine, waitForSession, waitForStatus } from "./lib/terminal.mjs";

/** Waits until the clipboard holds `expected`; returns what it holds. */
async function waitForClipboard(page, expected) {
  const handle = await page.waitForFunction(
    async (expected) => {
      const text = await navigator.clipboard.readText();
      return text === expected ? text : false;
    },
    expected,
    { timeout: DEADLINE_MS, polling: 100 },
  );
  return handle.jsonValue();
}

/** Buffer row (absolute) of the first line whose trimmed text is `text`, or -1. */
function rowOf(page, text) {
  return page.evaluate((text) => {
    const b = window.rendezvousTerm.buffer.active;
    for (let i = 0; i < b.length; i++) if (b.getLine(i)?.translateToString(true).trim() === text) return i;
    return -1;
  }, text);
}

describe("task page with several hosts and a read-only secret", () => {
  let serve;
  let hosts = [];
  let browser;
  const secret = newSecret();
  const readOnlySecret = newSecret();
  const taskId = "build-42";

  before(async () => {
    serve = await startServe();
    for (const name of ["web", "db"]) {
      hosts.push(await startHost({ server: serve.server, taskId, secret, readOnlySecret, name, labels: { job: `test-${name}` } }));
    }
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    for (const h of hosts) await h.stop();
    await serve?.stop();
  });

  async function open(url, t) {
    const page = await newPage(browser.context);
    t.after(() => page.close().catch(() => {}));
    await page.goto(url);
    return page;
  }

  test("the host picker lists both hosts; New shell opens a shell on the picked one", async (t) => {
    const page = await open(`${serve.server}/t/${taskId}#secret=${secret}`, t);
    await waitForStatus(page, "connected");
    const picker = page.locator("#host-picker");
    await picker.waitFor({ state: "visible", timeout: DEADLINE_MS });
    await page.waitForFunction(() => document.querySelectorAll("#host-picker option").length === 2, null, { timeout: DEADLINE_MS });
    const options = await picker.locator("option").allTextContents();
    assert.deepEqual([...options].sort(), ["db (test-db)", "web (test-web)"]);

    const first = await fragmentSession(page);
    const current = new URL(page.url()).hash.includes("host=db") ? "db" : "web";
    const target = current === "db" ? "web" : "db";
    await picker.selectOption(target);
    await page.locator("#new-shell").click();
    const second = await waitForSession(page, first);
    assert.notEqual(second, first);
    assert.match(await waitForStatus(page, "connected"), new RegExp(` on ${target}$`));
    assert.match(new URL(page.url()).hash, new RegExp(`&host=${target}`));
    const word = fresh("picked");
    await typeLine(page, `echo ${word}`);
    await waitForLine(page, word);
  });

  test("a read-only link shows the badge, cannot type or open shells, and watches a session", async (t) => {
    const writer = await open(`${serve.server}/t/${taskId}#secret=${secret}&host=web`, t);
    await waitForStatus(writer, "connected");
    const sessionId = await waitForSession(writer);

    const reader = await open(`${serve.server}/t/${taskId}#secret=${readOnlySecret}&session=${sessionId}`, t);
    assert.match(await waitForStatus(reader, "connected"), /\(read-only\)$/);
    assert.equal(await reader.locator("#read-only-badge").isVisible(), true, "the read-only badge shows");
    assert.equal(await reader.locator("#new-shell").isDisabled(), true, "New shell is disabled");
    assert.equal(await reader.evaluate(() => window.rendezvousTerm.options.disableStdin), true);
    assert.equal(await writer.locator("#read-only-badge").isVisible(), false);

    const word = fresh("watched");
    await typeLine(writer, `echo ${word}`);
    await waitForLine(reader, word);

    // Without a session to join, a read-only link is told how to go on.
    const lost = await open(`${serve.server}/t/${taskId}#secret=${readOnlySecret}`, t);
    assert.equal(
      await waitForStatus(lost, "failed"),
      "This link is read-only: it can watch sessions but not open a shell. Join a session from the list.",
    );
  });
});

describe("task page terminal behaviour", () => {
  const fx = useDemoAndBrowser({ colorScheme: "dark" }, (fx) =>
    fx.browser.context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: fx.demo.server }),
  );

  async function openDemo(t) {
    const page = await newPage(fx.browser.context);
    t.after(() => page.close().catch(() => {}));
    const requests = [];
    page.on("request", (r) => requests.push(r.url()));
    await page.goto(fx.demo.url);
    await waitForStatus(page, "connected");
    return { page, requests };
  }

  test("every asset comes from the server itself", async (t) => {
    const { requests } = await openDemo(t);
    assert.ok(requests.some((u) => u.endsWith("/assets/lib/rendezvous-guest.js")));
    const foreign = requests.filter((u) => !u.startsWith(`${fx.demo.server}/`) && !u.startsWith("data:"));
    assert.deepEqual(foreign, []);
  });

  test("wide characters take two cells (unicode 11)", async (t) => {
    const { page } = await openDemo(t);
    assert.equal(await page.evaluate(() => window.rendezvousTerm.unicode.activeVersion), "11");
    await typeLine(page, "printf '\\360\\237\\230\\200|wide\\n'");
    await waitForLine(page, "😀|wide");
    const row = await rowOf(page, "😀|wide");
    const cells = await page.evaluate((row) => {
      const line = window.rendezvousTerm.buffer.active.getLine(row);
      return [0, 2].map((x) => ({ chars: line.getCell(x).getChars(), width: line.getCell(x).getWidth() }));
    }, row);
    assert.deepEqual(cells, [{ chars: "😀", width: 2 }, { chars: "|", width: 1 }]);
  });

  test("the theme follows the system's light or dark setting, live", async (t) => {
    const { page } = await openDemo(t);
    const background = () => page.evaluate(() => window.rendezvousTerm.options.theme.background);
    assert.equal(await background(), "#16181d");
    await page.emulateMedia({ colorScheme: "light" });
    await page.waitForFunction(() => window.rendezvousTerm.options.theme.background === "#fbfbf9", null, { timeout: DEADLINE_MS });
    await page.emulateMedia({ colorScheme: "dark" });
    await page.waitForFunction(() => window.rendezvousTerm.options.theme.background === "#16181d", null, { timeout: DEADLINE_MS });
  });

  test("copy on select, Ctrl+V and right-click paste, and OSC 52 cannot write the clipboard", async (t) => {
    const { page } = await openDemo(t);
    const word = fresh("copy-me");
    await typeLine(page, `echo ${word}`);
    await waitForLine(page, word);
    const row = await rowOf(page, word);
    await page.evaluate(({ row, length }) => window.rendezvousTerm.select(0, row, length), { row, length: word.length });
    await waitForClipboard(page, word);

    const pasted = fresh("pasted");
    await page.evaluate((text) => navigator.clipboard.writeText(text), `echo ${pasted}`);
    await page.locator("#terminal").click();
    await page.keyboard.press("Control+V");
    await page.keyboard.press("Enter");
    await waitForLine(page, pasted);

    // Right-click pastes too, as in PuTTY.
    const rightClicked = fresh("right-clicked");
    await page.evaluate((text) => navigator.clipboard.writeText(text), `echo ${rightClicked}`);
    await page.locator("#terminal").click({ button: "right" });
    // The clipboard is read asynchronously: Enter once the line shows it.
    await waitForLine(page, new RegExp(`echo ${rightClicked}$`));
    await page.keyboard.press("Enter");
    await waitForLine(page, rightClicked);

    // A program in the session tries to set the clipboard with OSC 52.
    const sentinel = fresh("sentinel");
    await page.evaluate((text) => navigator.clipboard.writeText(text), sentinel);
    await typeLine(page, `printf '\\033]52;c;%s\\a' "$(printf osc52-was-here | base64)"; echo osc52-''sent`);
    await waitForLine(page, "osc52-sent");
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), sentinel, "OSC 52 is off by default");

    // The explicit option turns it on (a second terminal from the same module).
    await page.evaluate(async ({ secret }) => {
      const { mountTerminal } = await import("/assets/lib/rendezvous-guest.js");
      const el = document.createElement("div");
      el.style.cssText = "position:fixed;left:0;top:0;width:600px;height:300px";
      document.body.append(el);
      window.osc52Handle = mountTerminal(el, { taskId: "demo", secret, osc52Clipboard: true });
    }, { secret: fx.demo.secret });
    await page.waitForFunction(() => window.osc52Handle.status.state === "connected", null, { timeout: DEADLINE_MS });
    await page.evaluate(() => window.osc52Handle.focus());
    await page.keyboard.type(`printf '\\033]52;c;%s\\a' "$(printf osc52-opted-in | base64)"`);
    await page.keyboard.press("Enter");
    await waitForClipboard(page, "osc52-opted-in");
    await page.evaluate(() => window.osc52Handle.dispose());
  });

  test("links are clickable and open in a new tab", async (t) => {
    const { page } = await openDemo(t);
    const link = `${fx.demo.server}/healthz?from=${fresh("link")}`;
    await typeLine(page, `echo ${link}`);
    await waitForLine(page, link);
    const row = await rowOf(page, link);
    const box = await page.evaluate((row) => {
      const term = window.rendezvousTerm;
      const rect = term.element.querySelector(".xterm-screen").getBoundingClientRect();
      const y = row - term.buffer.active.viewportY;
      return { x: rect.left + (rect.width / term.cols) * 3.5, y: rect.top + (rect.height / term.rows) * (y + 0.5) };
    }, row);
    const popup = fx.browser.context.waitForEvent("page", { timeout: DEADLINE_MS });
    await page.mouse.move(box.x, box.y);
    await page.mouse.move(box.x + 2, box.y);
    await page.waitForFunction(() => getComputedStyle(window.rendezvousTerm.element.querySelector(".xterm-screen")).cursor === "pointer" || document.querySelector(".xterm-cursor-pointer") !== null, null, { timeout: DEADLINE_MS });
    await page.mouse.click(box.x + 2, box.y);
    const opened = await popup;
    await opened.waitForURL(link, { timeout: DEADLINE_MS });
    assert.equal(opened.url(), link);
    await opened.close();
  });
});
