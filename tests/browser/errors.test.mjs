// Errors in plain words, each naming the next step, never a blank terminal:
// wrong secret or unknown task (one message), the session has ended (its
// process exited, or the server ended it for idling), the
// host has gone (while attached, and while the page was away), and the
// server is unreachable (retried until it is back).

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { newSecret, useDemoAndBrowser } from "./lib/fixture.mjs";
import { startHost, startServe } from "./lib/proc.mjs";
import { startProxy } from "./lib/proxy.mjs";
import { DEADLINE_MS, linesMatching, recordEvents, recordedEvents, typeLine, waitForLine, waitForStatus, waitForStatusText } from "./lib/terminal.mjs";

/** The first capture of `pattern` in each matching terminal line. */
const linesOf = async (page, pattern) => (await linesMatching(page, pattern)).map((line) => line.match(pattern)[1]);

describe("errors in plain words", () => {
  const fx = useDemoAndBrowser();

  const open = (url, t) => fx.open(url, t);

  test("a wrong secret and an unknown task get the same message, in the status and the terminal", async (t) => {
    const wrongSecret = await open(`${fx.demo.server}/t/demo#secret=${newSecret()}`, t);
    const unknownTask = await open(`${fx.demo.server}/t/no-such-task#secret=${encodeURIComponent(fx.demo.secret)}`, t);
    const a = await waitForStatus(wrongSecret, "failed");
    const b = await waitForStatus(unknownTask, "failed");
    assert.match(a, /^Unknown task or wrong secret\. Check that you opened the whole link/);
    assert.equal(a, b, "one message for both");
    await waitForLine(wrongSecret, /^\[rendezvous\] Unknown task or wrong secret/);
    await waitForLine(unknownTask, /^\[rendezvous\] Unknown task or wrong secret/);
  });

  test("the session has ended: the exit code, and what to do next", async (t) => {
    const page = await open(fx.demo.url, t);
    await waitForStatus(page, "connected");
    await typeLine(page, "exit 3");
    const text = await waitForStatus(page, "ended");
    assert.equal(text, "Session ended with exit code 3. Open a new shell to continue.");
    await waitForLine(page, "[rendezvous: session ended with exit code 3]");
  });

  test("a session idle too long: the server's reason, in plain words", async (t) => {
    const serve = await startServe({ extraArgs: ["--session-idle-timeout", "2s"] });
    t.after(() => serve.stop());
    const host = await startHost({ server: serve.server, taskId: "idle-1", secret: newSecret() });
    t.after(() => host.stop());
    const page = await open(host.url, t);
    await waitForStatus(page, "connected");
    const text = await waitForStatus(page, "ended");
    assert.equal(
      text,
      "Session ended: no input or output for 2 s (the server's --session-idle-timeout). Open a new shell to continue.",
    );
    await waitForLine(page, "[rendezvous: session ended: no input or output for 2 s (the server's --session-idle-timeout)]");
  });

  test("the host has gone while attached", async (t) => {
    const serve = await startServe();
    t.after(() => serve.stop());
    const secret = newSecret();
    const host = await startHost({ server: serve.server, taskId: "gone-1", secret });
    t.after(() => host.stop());
    const page = await open(host.url, t);
    await waitForStatus(page, "connected");
    await host.kill("SIGKILL");
    const text = await waitForStatus(page, "ended");
    assert.match(text, /^The host has gone: it disconnected, so this session ended .*Reload the page when the host is back/);
    await waitForLine(page, "[rendezvous: the host disconnected; the session ended]");
  });

  test("the host loses its server for a while: the page stays attached, says so, and goes on in the same shell", async (t) => {
    const serve = await startServe();
    t.after(() => serve.stop());
    const proxy = await startProxy(serve.server);
    t.after(() => proxy.stop());
    const secret = newSecret();
    // The host reaches the server through the proxy; the page directly.
    const host = await startHost({ server: proxy.url, taskId: "resume-1", secret, gracePeriod: "5m" });
    t.after(() => host.stop());
    const page = await open(`${serve.server}/t/resume-1#secret=${secret}`, t);
    await waitForStatus(page, "connected");
    await typeLine(page, "echo shell-$$-end");
    const [shell] = await waitForLine(page, /^shell-\d+-end$/).then(() => linesOf(page, /^shell-(\d+)-end$/));

    await proxy.stop();
    await waitForStatusText(page, /Host reconnecting: the host lost its connection; waiting up to 5 min for it to come back/);
    await waitForLine(page, "[rendezvous: the host lost its connection; waiting up to 5 min for it to come back]");
    await proxy.start();
    await waitForLine(page, "[rendezvous: the host is back]");
    await waitForStatusText(page, /Connected to /);
    // The same shell, and input goes through once.
    await typeLine(page, "echo again-$$-end");
    await waitForLine(page, `again-${shell}-end`);
  });

  test("the server restarts, drained and then killed: the page resumes as the same guest in the same shell, and input typed meanwhile runs once", async (t) => {
    const dir = await mkdtemp(join(tmpdir(), "rendezvous-state-key-"));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const keyFile = join(dir, "state.key");
    await writeFile(keyFile, randomBytes(32));
    const extraArgs = ["--state-key-file", keyFile];
    const servers = [await startServe({ extraArgs })];
    t.after(() => Promise.all(servers.map((s) => s.stop())));
    const { server } = servers[0];
    const secret = newSecret();
    const host = await startHost({ server, taskId: "restart-1", secret, gracePeriod: "5m" });
    t.after(() => host.stop());
    const page = await open(`${server}/t/restart-1#secret=${secret}`, t);
    await waitForStatus(page, "connected");
    await recordEvents(page);
    await typeLine(page, "echo shell-$$-end");
    const [shell] = await waitForLine(page, /^shell-\d+-end$/).then(() => linesOf(page, /^shell-(\d+)-end$/));

    for (const signal of ["SIGTERM", "SIGKILL"]) {
      await servers.at(-1).kill(signal);
      await waitForStatus(page, "reconnecting");
      // Typed while no server runs: queued, sent once after the resume.
      await typeLine(page, `echo typed-${signal}-$((40+2))`);
      servers.push(await startServe({ extraArgs, listen: new URL(server).host }));
      await waitForLine(page, `typed-${signal}-42`, 60_000);
      await typeLine(page, `echo after-${signal}-$$`);
      await waitForLine(page, `after-${signal}-${shell}`);
      assert.equal((await linesMatching(page, new RegExp(`^typed-${signal}-42$`))).length, 1, "input ran once");
    }
    const attaches = (await recordedEvents(page)).filter((e) => e.type === "attached");
    assert.equal(attaches.length, 2, "one re-attach per restart");
    assert.ok(attaches.every((a) => a.sameGuest), `resumed as the same guest: ${JSON.stringify(attaches)}`);
    assert.deepEqual(await linesMatching(page, /bytes of output were lost|session ended/), []);
  });

  test("the host has gone while the page was away: the re-attach says so and stops", async (t) => {
    const serve = await startServe();
    t.after(() => serve.stop());
    const proxy = await startProxy(serve.server);
    t.after(() => proxy.stop());
    const secret = newSecret();
    const host = await startHost({ server: serve.server, taskId: "gone-2", secret });
    t.after(() => host.stop());
    const page = await open(`${proxy.url}/t/gone-2#secret=${secret}`, t);
    await waitForStatus(page, "connected");
    await recordEvents(page);

    await proxy.stop();
    await waitForStatus(page, "reconnecting");
    await host.kill("SIGKILL");
    await proxy.start();
    const text = await waitForStatus(page, "failed", 60_000);
    // The task's only host left: the server says the task has no host.
    assert.match(text, /^The host has gone: this task has no host any more .*Reload the page to wait for it to come back\.$/);
    await waitForLine(page, /^\[rendezvous\] The host has gone/);
    const attaches = (await recordedEvents(page)).filter((e) => e.type === "attached");
    assert.equal(attaches.length, 0, "no re-attach succeeded");
  });

  test("a task whose host has gone: a new page waits for a host, and attaches when one connects", async (t) => {
    const serve = await startServe();
    t.after(() => serve.stop());
    const secret = newSecret();
    const first = await startHost({ server: serve.server, taskId: "wait-1", secret });
    first.kill("SIGKILL");
    await first.exited;

    const page = await open(`${serve.server}/t/wait-1#secret=${secret}`, t);
    const waiting = await waitForStatus(page, "waiting");
    assert.equal(waiting, "No host is connected for this task yet; waiting for one…");
    const again = await startHost({ server: serve.server, taskId: "wait-1", secret });
    t.after(() => again.stop());
    await waitForStatus(page, "connected");
    await typeLine(page, "echo host-is-''back");
    await waitForLine(page, "host-is-back");
  });

  test("the host has gone while the page was away, and the task has another host: NOT_FOUND, said plainly", async (t) => {
    const serve = await startServe();
    t.after(() => serve.stop());
    const proxy = await startProxy(serve.server);
    t.after(() => proxy.stop());
    const secret = newSecret();
    const doomed = await startHost({ server: serve.server, taskId: "gone-3", secret, name: "doomed" });
    t.after(() => doomed.stop());
    const other = await startHost({ server: serve.server, taskId: "gone-3", secret, name: "other" });
    t.after(() => other.stop());
    const page = await open(`${proxy.url}/t/gone-3#secret=${secret}&host=doomed`, t);
    assert.match(await waitForStatus(page, "connected"), / on doomed/);

    await proxy.stop();
    await waitForStatus(page, "reconnecting");
    await doomed.kill("SIGKILL");
    await proxy.start();
    const text = await waitForStatus(page, "failed", 60_000);
    assert.equal(text, "The host has gone, or the session ended while this page was disconnected. Open a new shell or join another session from the list.");
  });

  test("the server is unreachable: the page says where, counts down, keeps retrying, and comes back", async (t) => {
    const proxy = await startProxy(fx.demo.server);
    t.after(() => proxy.stop());
    const page = await open(`${proxy.url}/t/demo#secret=${encodeURIComponent(fx.demo.secret)}`, t);
    await waitForStatus(page, "connected");
    await recordEvents(page);
    const mark = `before-${randomBytes(4).toString("hex")}`;
    await typeLine(page, `echo ${mark}`);
    await waitForLine(page, mark);

    await proxy.stop();
    const pattern = new RegExp(`^Cannot reach the server at ${proxy.url.replace(/\./g, "\\.")}; retrying in \\d+ s\\. Check your network connection\\.$`);
    await waitForStatusText(page, pattern);
    // It keeps retrying: a later attempt is announced too.
    await page.waitForFunction(
      () => new Set(window.__events.filter((e) => e.state === "reconnecting").map((e) => e.text.replace(/\d+ s/, ""))).size > 0 &&
        window.__events.filter((e) => e.state === "connecting").length >= 2,
      null,
      { timeout: DEADLINE_MS, polling: 50 },
    );
    assert.equal(await page.locator("#status").getAttribute("data-state"), "reconnecting");

    await proxy.start();
    await waitForStatus(page, "connected", 60_000);
    const after = `after-${randomBytes(4).toString("hex")}`;
    await typeLine(page, `echo ${after}`);
    await waitForLine(page, after);
    await waitForLine(page, mark); // The earlier output is still there: same session, resumed.
  });
});
