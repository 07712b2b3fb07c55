// A TCP proxy on 127.0.0.1 between the page and the server: a network
// element the tests can cut (every open connection at once), stop (no one
// can connect) and start again on the same port, or mute (requests still
// reach the server, its answers are lost, as on a link that fails one way).

import net from "node:net";
import { Transform } from "node:stream";

/** Starts a proxy to `target` (http://127.0.0.1:PORT). Returns its controls. */
export async function startProxy(target) {
  const { hostname, port: targetPort } = new URL(target);
  const sockets = new Set();
  let connections = 0;
  let server = null;
  let port = 0;
  let muted = false;

  const onConnection = (client) => {
    connections += 1;
    const upstream = net.connect({ host: hostname, port: Number(targetPort) });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream);
    // The server's bytes are dropped while muted.
    const gate = new Transform({
      transform(chunk, _encoding, callback) {
        callback(null, muted ? undefined : chunk);
      },
    });
    upstream.pipe(gate).pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  };

  const listen = () =>
    new Promise((resolve, reject) => {
      server = net.createServer(onConnection);
      server.once("error", reject);
      server.listen({ host: "127.0.0.1", port }, () => {
        port = server.address().port;
        resolve();
      });
    });

  /** Breaks every open connection, both ways, with a reset; new connections are still accepted (and not muted). */
  const cut = () => {
    muted = false;
    for (const s of sockets) s.resetAndDestroy();
    sockets.clear();
  };

  /** Stops listening and cuts every connection: the server is unreachable. */
  const stop = async () => {
    if (server === null) return;
    const closing = new Promise((resolve) => server.close(resolve));
    server = null;
    cut();
    await closing;
  };

  await listen();
  return {
    /** The proxy's base URL. */
    get url() {
      return `http://127.0.0.1:${port}`;
    },
    /** Connections accepted so far. */
    get connections() {
      return connections;
    },
    cut,
    stop,
    /** From now on the server's answers are dropped until cut() or stop(). */
    mute() {
      muted = true;
    },
    /** Listens again on the same port. */
    start: listen,
  };
}
