// Builds the web guest into dist/: index.html, assets/app.js, assets/app.css.
//
// The output is committed and embedded into the server binary, so it must be
// small and the same on every machine: minified, no source maps, no hashes.

import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const dist = join(root, "dist");

await rm(dist, { recursive: true, force: true });
await mkdir(join(dist, "assets"), { recursive: true });

await esbuild.build({
  absWorkingDir: root,
  entryPoints: [
    { in: "src/main.ts", out: "app" },
    { in: "src/style.css", out: "app" },
  ],
  outdir: "dist/assets",
  bundle: true,
  format: "iife",
  platform: "browser",
  target: ["es2022", "chrome100", "firefox100", "safari15"],
  minify: true,
  sourcemap: false,
  legalComments: "eof",
  charset: "utf8",
  logLevel: "warning",
});

await copyFile(join(root, "src/index.html"), join(dist, "index.html"));
