// Measures, in one page, the time to render 20 MB through the relay against
// terminal.write of the same 20 MB locally, and prints both and the ratios.
// Three local baselines: one terminal.write of all 20 MB (xterm.js parses it
// in one go and renders no frame until it is done: the page is frozen
// meanwhile), and the same bytes as 64 KiB and as 256 KiB writes queued at
// once (xterm.js then yields every few milliseconds and renders frames in
// between, as a live terminal must). The target (at most 1.3x) compares the
// relay, run by run, with the faster of the two chunked ones.
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
import { launchBare, waitUntil } from "./lib/cdp.mjs";
import { startDemo } from "./lib/proc.mjs";
import { DEADLINE_MS as STEP_DEADLINE_MS } from "./lib/terminal.mjs";

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

const seconds = (ms) => `${(ms / 1000).toFixed(2)} s`;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const dir = await mkdtemp(join(tmpdir(), "rendezvous-measure-"));
const file = join(dir, "text");
const content = generate(BYTES);
await writeFile(file, content);
const demo = await startDemo();
// Not playwright: see lib/cdp.mjs for why.
const browser = await launchBare(demo.url);
try {
  await waitUntil(browser, `document.querySelector("#status")?.dataset.state === "connected"`, STEP_DEADLINE_MS);
  await browser.evaluate(`window.__generate = ${generate.toString()}; window.__data = new TextEncoder().encode(window.__generate(${BYTES})); true`);

  const relay = [];
  const local = [];
  const chunked64 = [];
  const chunked256 = [];
  for (let run = 0; run < RUNS; run++) {
    // Through the relay: from Enter to the parse of the line after the
    // file. The command is typed (term.input is what a keystroke does)
    // and echoed first, so the clock starts at Enter.
    const marker = `MEASURE-END-${run}`;
    const command = `stty -opost; cat ${file}; stty opost; echo ${marker}`;
    await browser.evaluate(`window.rendezvousTerm.reset(); window.rendezvousTerm.input(${JSON.stringify(command)}); true`);
    await waitUntil(
      browser,
      // The echoed command may wrap: join the rows up to the cursor.
      `(() => { const b = window.rendezvousTerm.buffer.active; let text = ""; for (let y = 0; y <= b.baseY + b.cursorY; y++) text += b.getLine(y)?.translateToString(false) ?? ""; return text.includes(${JSON.stringify(marker)}); })()`,
      STEP_DEADLINE_MS,
    );
    relay.push(
      await browser.evaluate(`(async () => {
        const term = window.rendezvousTerm;
        const marker = ${JSON.stringify(marker)};
        // Awaited in the page, not polled: a poll that scans the scrollback
        // would cost the page time the local runs do not pay.
        const done = new Promise((resolve) => {
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
        const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("the marker never came")), ${DEADLINE_MS}));
        const t0 = performance.now();
        term.input("\\r");
        return (await Promise.race([done, timeout])) - t0;
      })()`),
    );

    // Locally: the same bytes, one terminal.write, until its callback.
    local.push(
      await browser.evaluate(`(async () => {
        const term = window.rendezvousTerm;
        term.reset();
        const t0 = performance.now();
        await new Promise((resolve) => term.write(window.__data, resolve));
        return performance.now() - t0;
      })()`),
    );
    // And as writes of 64 KiB and of 256 KiB (the server's largest output
    // message), all queued at once, so xterm.js is never idle waiting for
    // data. xterm.js costs something per write, so larger writes are faster.
    for (const [size, times] of [[64 * 1024, chunked64], [256 * 1024, chunked256]]) {
      times.push(
        await browser.evaluate(`(async () => {
          const term = window.rendezvousTerm;
          const data = window.__data;
          term.reset();
          const t0 = performance.now();
          let last;
          for (let off = 0; off < data.length; off += ${size}) {
            last = new Promise((resolve) => term.write(data.subarray(off, off + ${size}), resolve));
          }
          await last;
          return performance.now() - t0;
        })()`),
      );
    }
    const best = Math.min(chunked64.at(-1), chunked256.at(-1));
    console.log(
      `run ${run + 1}: relay ${seconds(relay.at(-1))}, local: one write ${seconds(local.at(-1))}, ` +
        `64 KiB writes ${seconds(chunked64.at(-1))}, 256 KiB writes ${seconds(chunked256.at(-1))}; relay/best chunked ${(relay.at(-1) / best).toFixed(2)}x`,
    );
  }
  const r = median(relay);
  const rate = (ms) => `${seconds(ms)} (${(content.length / ms / 1000).toFixed(1)} MB/s)`;
  console.log(`${(content.length / 1e6).toFixed(1)} MB, median of ${RUNS}:`);
  console.log(`  through the relay           ${rate(r)}`);
  for (const [name, times] of [["one terminal.write", local], ["64 KiB writes", chunked64], ["256 KiB writes", chunked256]]) {
    console.log(`  local, ${name.padEnd(19)} ${rate(median(times))}  relay/local = ${(r / median(times)).toFixed(2)}x`);
  }
  // The target compares with the faster of the chunked local runs, run by run.
  const ratios = relay.map((ms, i) => ms / Math.min(chunked64[i], chunked256[i]));
  console.log(`  relay / the faster chunked local run, median of the runs' ratios: ${median(ratios).toFixed(2)}x (target: at most 1.3x)`);
} finally {
  await browser.close();
  await demo.stop();
  await rm(dir, { recursive: true, force: true });
}
