// Reconnect and resume: a TCP proxy between the page and the real server
// cuts every connection mid-stream, or stops answering for a while; the
// page reconnects and resumes at the next offset it expects.

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { launchBrowser, newPage } from "./lib/browser.mjs";
import { startDemo } from "./lib/proc.mjs";
import { startProxy } from "./lib/proxy.mjs";
import {
  DEADLINE_MS,
  linesMatching,
  recordEvents,
  recordedEvents,
  typeLine,
  waitForLine,
  waitForStatus,
  waitForStatusText,
} from "./lib/terminal.mjs";

/** Milliseconds to wait for a stream that spans a reconnect to finish. */
const STREAM_DEADLINE_MS = 60_000;

/** Resolves once `predicate()` is true; rejects after `timeout` ms. */
async function until(predicate, what, timeout = DEADLINE_MS) {
  const deadline = Date.now() + timeout;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("reconnect and resume through a proxy", () => {
  let demo;
  let proxy;
  let browser;
  let scratch;

  before(async () => {
    demo = await startDemo();
    proxy = await startProxy(demo.server);
    browser = await launchBrowser();
    scratch = await mkdtemp(join(tmpdir(), "rendezvous-reconnect-"));
  });

  after(async () => {
    await browser?.close();
    await proxy?.stop();
    await demo?.stop();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  async function openThroughProxy(t) {
    const page = await newPage(browser.context);
    t.after(() => page.close().catch(() => {}));
    await page.goto(`${proxy.url}/t/demo#secret=${encodeURIComponent(demo.secret)}`);
    await waitForStatus(page, "connected");
    await recordEvents(page);
    return page;
  }

  test("a cut mid-stream loses and repeats nothing: every line exactly once, in order", async (t) => {
    const page = await openThroughProxy(t);
    const connectionsBefore = proxy.connections;
    await typeLine(page, "for i in $(seq 1 400); do echo line-$i; sleep 0.01; done; echo DO''NE");
    await waitForLine(page, "line-100");
    proxy.cut();
    const shownAtCut = (await linesMatching(page, /^line-\d+$/)).length;
    assert.ok(shownAtCut < 400, `the cut must land mid-stream (${shownAtCut} lines were shown)`);

    await waitForLine(page, "DONE", STREAM_DEADLINE_MS);
    const numbers = (await linesMatching(page, /^line-\d+$/)).map((l) => Number(l.slice("line-".length)));
    assert.deepEqual(numbers, Array.from({ length: 400 }, (_, i) => i + 1), "every line once, in order");

    const events = await recordedEvents(page);
    assert.ok(events.some((e) => e.type === "status" && e.state === "reconnecting"), "the status showed reconnecting");
    assert.ok(events.some((e) => e.type === "attached" && e.resumed), "the page re-attached with a resume");
    assert.ok(proxy.connections > connectionsBefore, "the page opened new connections");
    await waitForStatus(page, "connected");
  });

  test("input applied just before a cut, whose answer was lost, is not applied again after the resume", async (t) => {
    const page = await openThroughProxy(t);
    const ran = join(scratch, "in-flight");
    const sessionBefore = await page.evaluate(() => window.rendezvousHandle.status.sessionId);
    // The server gets the keystrokes and the shell runs them, but the page
    // never hears back: its SendInput is still waiting when the link breaks.
    proxy.mute();
    t.after(() => proxy.cut()); // Unmutes, should the test fail before its cut.
    // One batch: as if pasted, so that it is one SendInput request.
    await page.evaluate((line) => window.rendezvousTerm.input(line), `touch ${ran}; echo in-flight-''once\r`);
    await until(() => existsSync(ran), "the shell to run the command");
    proxy.cut();

    // The page resumes the same guest and sends the unanswered batch again,
    // with the same sequence number: the server knows it and drops it.
    await waitForLine(page, "in-flight-once", STREAM_DEADLINE_MS);
    await typeLine(page, "echo after-''resume");
    await waitForLine(page, "after-resume", STREAM_DEADLINE_MS);
    assert.equal((await linesMatching(page, /^in-flight-once$/)).length, 1, "the batch in flight ran once");
    const events = await recordedEvents(page);
    assert.ok(events.some((e) => e.type === "attached" && e.resumed && e.sameGuest), "the same guest resumed");
    assert.equal(await page.evaluate(() => window.rendezvousHandle.status.sessionId), sessionBefore);
  });

  test("output older than the retained output gives one marker; input typed meanwhile goes through once", async (t) => {
    const page = await openThroughProxy(t);
    const done = join(scratch, "lag-done");
    // 3 MB while the page is away: more than the 1 MiB the server retains.
    // Carriage returns, not newlines, so it all lands on one row and the
    // marker stays within the scrollback.
    const flood = `yes ${"z".repeat(60)} | tr '\\n' '\\r' | head -c 3000000`;
    await typeLine(page, `echo LAG-START; sleep 1; ${flood}; echo; echo LAG-END; touch ${done}`);
    await waitForLine(page, "LAG-START");
    await proxy.stop();
    const text = await waitForStatusText(page, /Cannot reach the server at http:\/\/127\.0\.0\.1:\d+; retrying in \d+ s/);
    assert.match(text, new RegExp(`Cannot reach the server at ${proxy.url.replace(/[.]/g, "\\.")}`));

    // Typed while unreachable: queued, sent after the reconnect.
    await typeLine(page, "echo typed-while-away");
    await until(() => existsSync(done), "the flood to finish on the host");
    await proxy.start();

    await waitForLine(page, "LAG-END", STREAM_DEADLINE_MS);
    await waitForLine(page, "typed-while-away", STREAM_DEADLINE_MS);
    const markers = await linesMatching(page, /^\[rendezvous: \d+ bytes of output were lost/);
    assert.equal(markers.length, 1, `one marker line, got ${JSON.stringify(markers)}`);
    const missed = Number(/\d+/.exec(markers[0])[0]);
    assert.ok(missed > 0 && missed < 3_100_000, `a plausible count of lost bytes: ${missed}`);
    assert.equal((await linesMatching(page, /^typed-while-away$/)).length, 1, "the queued command ran once");
    await waitForStatus(page, "connected");
  });
});
