// A tiny static file server on 127.0.0.1: a page on another origin, as a
// CI front end embedding the terminal would be.

import { readFile } from "node:fs/promises";
import http from "node:http";
import { extname, normalize } from "node:path";

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css", ".ts": "text/plain" };

/** Serves `routes` ({"/path": "/file/on/disk"}) and nothing else. Returns { origin, close }. */
export async function startStatic(routes) {
  const server = http.createServer(async (req, res) => {
    const path = normalize(new URL(req.url, "http://x").pathname);
    const file = routes[path];
    if (!file) {
      res.writeHead(404).end("not found\n");
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
      res.end(body);
    } catch {
      res.writeHead(500).end("cannot read\n");
    }
  });
  await new Promise((resolve) => server.listen({ host: "127.0.0.1", port: 0 }, resolve));
  const origin = `http://127.0.0.1:${server.address().port}`;
  return {
    origin,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
