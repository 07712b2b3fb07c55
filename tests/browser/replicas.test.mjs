// Replicas (issue 13): three `rendezvous serve --redis-url` processes on
// one real redis-server with shared key files, `rendezvous host` on A, and
// the task page opened on B and on C. The pages' gRPC-Web calls (Attach,
// SendInput, Ack, Resize, ListSessions) reach A through the replica each
// page came from: a stream arrives whole and in order at both pages, they
// share one session, the sidebar lists it, and input is applied once.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { launchBrowser, newPage } from "./lib/browser.mjs";
import { fresh, newSecret } from "./lib/fixture.mjs";
import { startHost, startServe } from "./lib/proc.mjs";
import { DEADLINE_MS, linesMatching, typeLine, waitForLine, waitForSession, waitForStatus } from "./lib/terminal.mjs";

/** A free loopback port (released again before it is used). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once 127.0.0.1:`port` accepts a connection; rejects after DEADLINE_MS. */
async function listening(port) {
  const deadline = Date.now() + DEADLINE_MS;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const socket = connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listened on 127.0.0.1:${port}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** redis-server on a free loopback port, without persistence. Returns { url, stop }. */
async function startRedis(dir) {
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], {
    stdio: "ignore",
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  await listening(port);
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: async () => {
      child.kill("SIGKILL");
      await exited;
    },
  };
}

describe("replicas: the task page on other replicas than the host's", () => {
  const secret = newSecret();
  const taskId = `replicas-${randomBytes(4).toString("hex")}`;
  let scratch;
  let redis;
  const replicas = [];
  let host;
  let browser;

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "rendezvous-replicas-"));
    const clusterKey = join(scratch, "cluster.key");
    const stateKey = join(scratch, "state.key");
    await writeFile(clusterKey, randomBytes(32));
    await writeFile(stateKey, randomBytes(32));
    redis = await startRedis(scratch);
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      const listen = `127.0.0.1:${port}`;
      replicas.push(
        await startServe({
          listen,
          extraArgs: [
            "--redis-url", redis.url,
            "--advertise-url", `http://${listen}`,
            "--cluster-key-file", clusterKey,
            "--state-key-file", stateKey,
          ],
        }),
      );
    }
    host = await startHost({ server: replicas[0].server, taskId, secret });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await host?.stop();
    for (const r of replicas) await r.stop();
    await redis?.stop();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  async function open(url, t) {
    const page = await newPage(browser.context);
    t.after(() => page.close().catch(() => {}));
    await page.goto(url);
    await waitForStatus(page, "connected");
    return page;
  }

  test("pages on B and C share a session on A's host: every line once, in order, input once", async (t) => {
    const [, b, c] = replicas;
    const onB = await open(`${b.server}/t/${taskId}#secret=${encodeURIComponent(secret)}`, t);
    const sessionId = await waitForSession(onB);
    const onC = await open(`${c.server}/t/${taskId}#secret=${encodeURIComponent(secret)}&session=${encodeURIComponent(sessionId)}`, t);
    assert.equal(await waitForSession(onC), sessionId, "the page on C joins the session opened through B");

    // The sidebar on C lists the session, which only A holds.
    await onC.waitForFunction(
      (id) => [...document.querySelectorAll("#sessions li.session code")].some((code) => code.title === id),
      sessionId,
      { timeout: DEADLINE_MS, polling: 100 },
    );

    // A stream typed on B arrives whole at both pages.
    await typeLine(onB, "seq 1 400 | sed 's/^/line-/'; echo DO''NE");
    const expected = Array.from({ length: 400 }, (_, i) => i + 1);
    for (const page of [onB, onC]) {
      await waitForLine(page, "DONE");
      const numbers = (await linesMatching(page, /^line-\d+$/)).map((l) => Number(l.slice("line-".length)));
      assert.deepEqual(numbers, expected, "every line once, in order");
    }

    // Input typed on C is applied once, and both pages see its answer.
    const word = fresh("via-c");
    await typeLine(onC, `echo ${word}-$((6*7))`);
    for (const page of [onB, onC]) {
      await waitForLine(page, `${word}-42`);
    }
    const answered = await linesMatching(onB, new RegExp(`^${word}-42$`));
    assert.equal(answered.length, 1, "input applied once");
  });
});
