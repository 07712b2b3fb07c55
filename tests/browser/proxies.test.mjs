// The web guest behind Debian's nginx and Caddy (issue 12, point 5), over
// HTTP/2 to the browser. Each proxy runs its example from deploy/ with
// only the listen port, upstream address and certificate paths replaced
// (as tests/proxies.rs renders them), in front of `rendezvous serve`, with
// a certificate from a CA made here with openssl. `rendezvous host`
// registers through the proxy (--ca-cert). Chromium trusts the proxy's
// certificate by its key alone (--ignore-certificate-errors-spki-list), so
// TLS is checked: a browser without that flag is refused. The page, its
// assets and every gRPC-Web call go over HTTP/2 (nextHopProtocol h2).

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { chromium } from "playwright-core";
import { CHROMIUM_ARGS, CHROMIUM_BIN, newPage } from "./lib/browser.mjs";
import { fresh, newSecret } from "./lib/fixture.mjs";
import { REPO_ROOT, spawnUntil, startServe } from "./lib/proc.mjs";
import { DEADLINE_MS, typeLine, waitForLine, waitForStatus } from "./lib/terminal.mjs";

/** Milliseconds a proxy has to exit after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 3_000;

/** Replaces `from` in `text`, which must hold it exactly `count` times. */
function replaceExactly(text, from, to, count, name) {
  const found = text.split(from).length - 1;
  assert.equal(found, count, `the ${name} example should have ${JSON.stringify(from)} ${count} time(s)`);
  return text.split(from).join(to);
}

/** Replaces the value of the one line whose first word is `directive`. */
function replaceDirective(text, directive, value) {
  let found = 0;
  const lines = text.split("\n").map((line) => {
    const m = /^(\s*)(\S+)\s/.exec(line);
    if (!m || m[2] !== directive) return line;
    found += 1;
    return `${m[1]}${directive} ${value};`;
  });
  assert.equal(found, 1, `the nginx example should have one ${directive} line`);
  return lines.join("\n");
}

/**
 * The proxies, each with its example and how a test runs it: `render`
 * places the example (only the listen port, the upstream and the
 * certificate paths change), `command` starts the proxy on it with its
 * files in `dir`.
 */
const PROXIES = {
  nginx: {
    program: "/usr/sbin/nginx",
    // Fast shutdown: the master stops its workers (SIGKILL would not).
    stopSignal: "SIGTERM",
    example: join(REPO_ROOT, "deploy/nginx/rendezvous.conf"),
    render(example, { port, upstream, cert, key }) {
      let text = replaceExactly(example, "listen 443 ssl http2;", `listen 127.0.0.1:${port} ssl http2;`, 1, "nginx");
      // One upstream block for grpc_pass, one for proxy_pass.
      text = replaceExactly(text, "server 127.0.0.1:8080;", `server ${upstream};`, 2, "nginx");
      text = replaceDirective(text, "ssl_certificate", cert);
      return replaceDirective(text, "ssl_certificate_key", key);
    },
    async command(dir, site) {
      await writeFile(join(dir, "rendezvous.conf"), site);
      // What Debian's nginx.conf sets around conf.d/*.conf, paths in `dir`.
      const main = [
        "worker_processes 1;",
        "events { worker_connections 1024; }",
        "http {",
        `  access_log ${dir}/access.log;`,
        ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `  ${t}_temp_path ${dir}/${t};`),
        `  include ${dir}/rendezvous.conf;`,
        "}",
      ].join("\n");
      await writeFile(join(dir, "nginx.conf"), main);
      const args = ["-p", dir, "-c", join(dir, "nginx.conf"), "-e", "stderr", "-g", `daemon off; pid ${dir}/nginx.pid; error_log stderr info;`];
      return { args, env: {} };
    },
  },
  caddy: {
    program: "/usr/bin/caddy",
    // At once (SIGTERM waits for the browser's idle connections to go).
    stopSignal: "SIGQUIT",
    example: join(REPO_ROOT, "deploy/caddy/Caddyfile"),
    render(example, { port, upstream, cert, key }) {
      const text = replaceExactly(example, "\nrendezvous.example.com {\n", `\nhttps://127.0.0.1:${port} {\n\ttls ${cert} ${key}\n`, 1, "caddy");
      return replaceExactly(text, "reverse_proxy h2c://127.0.0.1:8080", `reverse_proxy h2c://${upstream}`, 1, "caddy");
    },
    async command(dir, site) {
      // Kept to the test: no admin endpoint, no automatic HTTPS (port 80,
      // ACME), nothing put in the system's trust store, loopback only, no
      // HTTP/3 (UDP), storage and home in `dir`.
      const globals = ["{", "\tadmin off", "\tauto_https off", "\tskip_install_trust", "\tdefault_bind 127.0.0.1", `\tstorage file_system ${dir}/storage`, "\tservers {", "\t\tprotocols h1 h2", "\t}", "}", ""].join("\n");
      await writeFile(join(dir, "Caddyfile"), `${globals}\n${site}`);
      const home = join(dir, "home");
      const args = ["run", "--adapter", "caddyfile", "--config", join(dir, "Caddyfile")];
      return { args, env: { HOME: home, XDG_DATA_HOME: join(home, "data"), XDG_CONFIG_HOME: join(home, "config") } };
    },
  },
};

/** A port the kernel has free on 127.0.0.1 now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Resolves true once a TCP connection to 127.0.0.1:`port` succeeds, false if it is refused. */
function connects(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** A new directory in `parent` that nginx's workers (`nobody`, when the tests run as root) may enter. */
async function openDir(parent, prefix) {
  const made = await mkdtemp(join(parent, prefix));
  await chmod(made, 0o755);
  return made;
}

/**
 * Starts proxy `name` in front of `upstream` (127.0.0.1:PORT) with
 * `cert`/`key`, its files in a new directory in `parent`. Returns { url,
 * log, stop } once it accepts connections.
 */
async function startReverseProxy(name, { upstream, cert, key, parent }) {
  const proxy = PROXIES[name];
  const dir = await openDir(parent, `${name}-`);
  const port = await freePort();
  const site = proxy.render(await readFile(proxy.example, "utf8"), { port, upstream, cert, key });
  const { args, env } = await proxy.command(dir, site);
  const child = spawn(proxy.program, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  let log = "";
  child.stdout.setEncoding("utf8").on("data", (c) => (log += c));
  child.stderr.setEncoding("utf8").on("data", (c) => (log += c));
  let running = true;
  const exited = new Promise((resolve) => child.once("exit", () => resolve((running = false))));
  child.once("error", (err) => (log += `\n${err.message}`));
  const stop = async () => {
    if (!running) return;
    child.kill(proxy.stopSignal);
    const timer = setTimeout(() => running && child.kill("SIGKILL"), STOP_GRACE_MS);
    await exited;
    clearTimeout(timer);
  };
  const deadline = Date.now() + DEADLINE_MS;
  while (!(await connects(port))) {
    if (!running || Date.now() > deadline) {
      await stop();
      throw new Error(`${name} does not listen on 127.0.0.1:${port}:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return { url: `https://127.0.0.1:${port}`, log: () => log, stop };
}

/** A CA and a certificate for 127.0.0.1 and localhost it issued, in `dir` (openssl). Returns the paths and the certificate's SPKI pin. */
async function makeCertificates(dir) {
  const config = join(dir, "openssl.cnf");
  await writeFile(
    config,
    [
      "[req]",
      "distinguished_name = dn",
      "prompt = no",
      "[dn]",
      "CN = Rendezvous browser proxy test CA",
      "[ca]",
      "basicConstraints = critical, CA:TRUE",
      "keyUsage = critical, keyCertSign, cRLSign",
      "subjectKeyIdentifier = hash",
      "[leaf]",
      "subjectAltName = IP:127.0.0.1, DNS:localhost",
      "basicConstraints = critical, CA:FALSE",
      "keyUsage = critical, digitalSignature",
      "extendedKeyUsage = serverAuth",
      "authorityKeyIdentifier = keyid",
      "",
    ].join("\n"),
  );
  const [ca, caKey, csr, cert, key] = ["ca.pem", "ca.key", "leaf.csr", "cert.pem", "key.pem"].map((f) => join(dir, f));
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  const openssl = (args) => execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  openssl(["req", "-x509", ...ec, "-config", config, "-extensions", "ca", "-days", "2", "-keyout", caKey, "-out", ca]);
  openssl(["req", "-new", ...ec, "-config", config, "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr]);
  openssl(["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", caKey, "-set_serial", "1", "-days", "2", "-extfile", config, "-extensions", "leaf", "-out", cert]);
  const spki = new X509Certificate(await readFile(cert)).publicKey.export({ type: "spki", format: "der" });
  return { ca, cert, key, spki: createHash("sha256").update(spki).digest("base64") };
}

/** Chromium with a fresh profile and `extraArgs`. Returns { context, close }. */
async function launch(extraArgs) {
  const userDataDir = await mkdtemp(join(tmpdir(), "rendezvous-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM_BIN,
    headless: true,
    args: [...CHROMIUM_ARGS, ...extraArgs],
    viewport: { width: 1100, height: 650 },
  });
  return {
    context,
    close: async () => {
      await context.close().catch(() => {});
      await rm(userDataDir, { recursive: true, force: true });
    },
  };
}

describe("the web guest behind nginx and Caddy, over HTTP/2", () => {
  let dir;
  let certs;
  let serve;
  let browser;

  before(async () => {
    dir = await openDir(tmpdir(), "rendezvous-proxies-");
    certs = await makeCertificates(dir);
    serve = await startServe();
    browser = await launch([`--ignore-certificate-errors-spki-list=${certs.spki}`]);
  });

  after(async () => {
    await browser?.close();
    await serve?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  for (const name of Object.keys(PROXIES)) {
    test(`through ${name}: the host registers, the page attaches and echoes, all over h2`, async (t) => {
      const upstream = new URL(serve.server).host;
      const proxy = await startReverseProxy(name, { upstream, cert: certs.cert, key: certs.key, parent: dir });
      // The page goes first, then the host, then the proxy they reach.
      const stops = [proxy.stop];
      t.after(async () => {
        for (const stop of stops.reverse()) await stop();
      });

      const task = fresh(`behind-${name}`);
      const host = await spawnUntil(
        ["host", "--server", proxy.url, "--ca-cert", certs.ca, "--task-id", task, "--grace-period", "0", "--", "bash", "--norc", "--noprofile"],
        /Open (https:\/\/\S+)/,
        { env: { RENDEZVOUS_SECRET: newSecret() } },
      );
      stops.push(host.stop);
      const link = host.match[1];
      assert.ok(link.startsWith(`${proxy.url}/t/${task}#`), `the link names the proxy: ${link}`);

      const page = await newPage(browser.context);
      stops.push(() => page.close().catch(() => {}));
      await page.goto(link);
      await waitForStatus(page, "connected").catch((err) => {
        err.message += `\n${name} log:\n${proxy.log()}`;
        throw err;
      });
      const word = fresh("proxied");
      await typeLine(page, `echo ${word}-$((6*7))`);
      await waitForLine(page, `${word}-42`);

      const protocols = await page.evaluate(() => ({
        page: performance.getEntriesByType("navigation")[0].nextHopProtocol,
        // Completed calls (SendInput, Resize, Ack); the Attach stream is
        // still open, so it has no entry yet.
        calls: performance
          .getEntriesByType("resource")
          .filter((e) => e.name.includes("/rendezvous.v1.GuestService/"))
          .map((e) => e.nextHopProtocol),
      }));
      assert.equal(protocols.page, "h2", `the page over HTTP/2: ${JSON.stringify(protocols)}`);
      assert.ok(protocols.calls.length > 0, `gRPC-Web calls were made: ${JSON.stringify(protocols)}`);
      assert.deepEqual(new Set(protocols.calls), new Set(["h2"]), `every gRPC-Web call over HTTP/2: ${JSON.stringify(protocols)}`);
    });
  }

  test("a browser that does not trust the proxies' certificate is refused", async (t) => {
    const proxy = await startReverseProxy("nginx", {
      upstream: new URL(serve.server).host,
      cert: certs.cert,
      key: certs.key,
      parent: dir,
    });
    t.after(() => proxy.stop());
    const untrusting = await launch([]);
    t.after(() => untrusting.close());
    const page = await untrusting.context.newPage();
    await assert.rejects(page.goto(`${proxy.url}/healthz`), /ERR_CERT_AUTHORITY_INVALID/);
  });
});
