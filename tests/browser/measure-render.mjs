// Measures, in one page, the time to render 20 MB through the relay against
// terminal.write of the same 20 MB locally, and prints both and the ratios.
// Two local baselines: one terminal.write of all 20 MB (xterm.js parses it in
// one go and renders no frame until it is done: the page is frozen
// meanwhile), and the same bytes as 64 KiB writes queued at once (xterm.js
// then yields every few milliseconds and renders frames in between, as a
// live terminal must).
//
//   cd tests/browser && node measure-render.mjs [--runs N] [--mb M]
//
// The real binary (`target/debug/rendezvous demo`, or RENDEZVOUS_BIN) and
// Debian's chromium. The same bytes both ways: a generated text file with
// CRLF line endings, `cat` with `stty -opost` so the PTY passes it unchanged.

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { launchBrowser, newPage } from "./lib/browser.mjs";
import { startDemo } from "./lib/proc.mjs";
import { waitForStatus } from "./lib/terminal.mjs";

const { values } = parseArgs({ options: { runs: { type: "string", default: "3" }, mb: { type: "string", default: "20" } } });
const RUNS = Number(values.runs);
const BYTES = Number(values.mb) * 1_000_000;
const DEADLINE_MS = 300_000;

/** Deterministic text: numbered lines of about 80 columns, CRLF endings, some colour. Runs in node and in the page. */
function generate(bytes) {
  const words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore";
  const parts = [];
  let size = 0;
  for (let i = 0; size < bytes; i++) {
    const line = i % 8 === 0 ? `\x1b[32m${String(i).padStart(8, "0")}\x1b[0m ${words.slice(0, 64)}\r\n` : `${String(i).padStart(8, "0")} ${words.slice(i % 17, (i % 17) + 64)}\r\n`;
    parts.push(line);
    size += line.length;
  }
  return parts.join("");
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const dir = await mkdtemp(join(tmpdir(), "rendezvous-measure-"));
const file = join(dir, "text");
const content = generate(BYTES);
await writeFile(file, content);
const demo = await startDemo();
const browser = await launchBrowser();
try {
  const page = await newPage(browser.context);
  await page.goto(demo.url);
  await waitForStatus(page, "connected");
  await page.evaluate(`window.__generate = ${generate.toString()}`);

  const relay = [];
  const local = [];
  const chunked = [];
  for (let run = 0; run < RUNS; run++) {
    // Through the relay: from Enter to the parse of the line after the file.
    await page.evaluate(() => window.rendezvousTerm.reset());
    const marker = `MEASURE-END-${run}`;
    await page.locator("#terminal").click();
    await page.keyboard.type(`stty -opost; cat ${file}; stty opost; echo ${marker}`);
    await page.evaluate((marker) => {
      const term = window.rendezvousTerm;
      window.__done = new Promise((resolve) => {
        const sub = term.onWriteParsed(() => {
          const b = term.buffer.active;
          for (let y = b.baseY + b.cursorY; y >= Math.max(0, b.baseY + b.cursorY - 3); y--) {
            if (b.getLine(y)?.translateToString(true).trim() === marker) {
              sub.dispose();
              resolve(performance.now());
              return;
            }
          }
        });
      });
      window.__t0 = performance.now();
    }, marker);
    await page.keyboard.press("Enter");
    // Awaited in the page, not polled: a poll that scans the scrollback
    // would cost the page time the local runs do not pay.
    relay.push(
      await page.evaluate(async (deadline) => {
        const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("the marker never came")), deadline));
        return (await Promise.race([window.__done, timeout])) - window.__t0;
      }, DEADLINE_MS),
    );

    // Locally: the same bytes, one terminal.write, until its callback.
    local.push(
      await page.evaluate(async (bytes) => {
        const term = window.rendezvousTerm;
        term.reset();
        const data = new TextEncoder().encode(window.__generate(bytes));
        const t0 = performance.now();
        await new Promise((resolve) => term.write(data, resolve));
        return performance.now() - t0;
      }, BYTES),
    );
    chunked.push(
      await page.evaluate(async (bytes) => {
        const term = window.rendezvousTerm;
        term.reset();
        const data = new TextEncoder().encode(window.__generate(bytes));
        const CHUNK = 64 * 1024;
        const t0 = performance.now();
        // All queued at once, so xterm.js is never idle waiting for data.
        let last;
        for (let off = 0; off < data.length; off += CHUNK) {
          last = new Promise((resolve) => term.write(data.subarray(off, off + CHUNK), resolve));
        }
        await last;
        return performance.now() - t0;
      }, BYTES),
    );
    console.log(`run ${run + 1}: relay ${(relay.at(-1) / 1000).toFixed(2)} s, local one write ${(local.at(-1) / 1000).toFixed(2)} s, local 64 KiB writes ${(chunked.at(-1) / 1000).toFixed(2)} s`);
  }
  const r = median(relay);
  const l = median(local);
  const c = median(chunked);
  const rate = (ms) => `${(ms / 1000).toFixed(2)} s (${(content.length / ms / 1000).toFixed(1)} MB/s)`;
  console.log(`${(content.length / 1e6).toFixed(1)} MB, median of ${RUNS}:`);
  console.log(`  through the relay         ${rate(r)}`);
  console.log(`  local, one terminal.write ${rate(l)}  relay/local = ${(r / l).toFixed(2)}x`);
  console.log(`  local, 64 KiB writes      ${rate(c)}  relay/local = ${(r / c).toFixed(2)}x`);
} finally {
  await browser.close();
  await demo.stop();
  await rm(dir, { recursive: true, force: true });
}
