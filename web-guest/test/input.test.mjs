// Unit tests of the input queue (src/input.ts) under Node: the exactly-once
// rules across resumes, with a SendFn whose answers the test releases one by
// one. src/input.ts is bundled with esbuild (the build's own) for Node.

import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as esbuild from "esbuild";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
let dir;
let mod;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "rendezvous-input-test-"));
  const outfile = join(dir, "input.mjs");
  await esbuild.build({
    absWorkingDir: root,
    entryPoints: ["src/input.ts"],
    bundle: true,
    platform: "node",
    format: "esm",
    outfile,
    logLevel: "warning",
  });
  mod = await import(pathToFileURL(outfile).href);
});

after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** A SendFn that records each request and answers when the test says. */
function fakeServer() {
  const requests = [];
  const waiters = [];
  const send = (seq, data, signal) =>
    new Promise((resolve, reject) => {
      const request = { seq, text: new TextDecoder().decode(data), bytes: data.length, resolve, reject, signal };
      requests.push(request);
      for (const w of waiters.splice(0)) w();
    });
  /** The `n`th request (from 0), once it has been sent; fails after 5 s. */
  const request = async (n) => {
    const deadline = Date.now() + 5_000;
    while (requests.length <= n) {
      if (Date.now() > deadline) throw new Error(`request ${n} was never sent (${requests.length} were)`);
      await new Promise((r) => {
        waiters.push(r);
        setTimeout(r, 50);
      });
    }
    return requests[n];
  };
  return { send, requests, request };
}

const events = { onError() {}, onRecovered() {} };
const bytes = (s) => new TextEncoder().encode(s);

/** Lets the queue's promise callbacks run. */
const settle = () => new Promise((r) => setImmediate(r));

test("an answer from before a resume does not count: the batch the restarted server asks for goes again at its seq", async () => {
  const queue = new mod.InputQueue(events);
  const first = fakeServer();
  queue.bind(first.send);
  assert.ok(queue.push(bytes("ls\r")));
  const inFlight = await first.request(0);
  assert.deepEqual([inFlight.seq, inFlight.text], [0n, "ls\r"]);

  // The stream breaks with the request in flight; the server restarts and
  // the page resumes the same guest. The restarted server never got seq 0:
  // input goes on at 0.
  queue.unbind();
  const second = fakeServer();
  queue.bind(second.send, true, 0n);
  // Now the crashed server's success arrives: it must not count.
  inFlight.resolve();
  await settle();

  const resent = await second.request(0);
  assert.deepEqual([resent.seq, resent.text], [0n, "ls\r"], "the batch goes again at seq 0");
  resent.resolve();
  await settle();
  assert.ok(queue.push(bytes("pwd\r")));
  const next = await second.request(1);
  assert.deepEqual([next.seq, next.text], [1n, "pwd\r"], "the next batch follows at seq 1");
  next.resolve();
  await settle();
  assert.equal(second.requests.length, 2, "nothing else was sent");
  queue.close();
});

test("an answer from before a resume that the restarted server already had: nothing goes twice", async () => {
  const queue = new mod.InputQueue(events);
  const first = fakeServer();
  queue.bind(first.send);
  queue.push(bytes("a"));
  const inFlight = await first.request(0);
  queue.unbind();
  const second = fakeServer();
  // The host had seq 0: the server goes on at 1.
  queue.bind(second.send, true, 1n);
  inFlight.resolve();
  await settle();
  queue.push(bytes("b"));
  const next = await second.request(0);
  assert.deepEqual([next.seq, next.text], [1n, "b"]);
  next.resolve();
  await settle();
  assert.equal(second.requests.length, 1, "seq 0 was not sent again");
  queue.close();
});

test("acknowledged batches sent again after a restart do not stop typing", async () => {
  const queue = new mod.InputQueue(events);
  const first = fakeServer();
  queue.bind(first.send);
  // Fill the resend store: acknowledged batches of 64 KiB, 1 MiB in all.
  const chunk = new Uint8Array(mod.MAX_REQUEST_BYTES).fill(0x61);
  const batches = mod.MAX_RESEND_BYTES / mod.MAX_REQUEST_BYTES;
  for (let i = 0; i < batches; i++) {
    assert.ok(queue.push(chunk));
    const r = await first.request(i);
    r.resolve();
    await settle();
  }
  assert.equal(queue.resumeSeq, 0n, "every acknowledged batch is held for a resend");
  // A restarted server asks for all of them again.
  queue.unbind();
  const second = fakeServer();
  queue.bind(second.send, true, 0n);
  const resend = await second.request(0);
  assert.equal(resend.seq, 0n);
  // Typing goes on meanwhile, up to MAX_PENDING_BYTES of its own.
  assert.ok(queue.push(bytes("x")), "a key typed during the resend is taken");
  assert.ok(queue.push(new Uint8Array(mod.MAX_PENDING_BYTES - 1)), "up to the bound");
  assert.ok(!queue.push(bytes("y")), "past the bound is refused");
  queue.close();
});
