// Fails when the freshly built dist/ or generated src/gen/ differ from what
// git has committed: both are committed so that `cargo build` needs no npm,
// and this keeps them honest. Run after `npm run build` (`npm run check` does).

import { execFileSync } from "node:child_process";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const paths = ["dist", "src/gen"];
const git = (...args) => execFileSync("git", args, { cwd: root, encoding: "utf8" });

const changes = git("status", "--porcelain", "--untracked-files=all", "--", ...paths);
if (changes.trim() !== "") {
  console.error("web-guest: the build differs from what is committed:");
  console.error(changes.trimEnd());
  console.error(git("diff", "--stat", "--", ...paths).trimEnd());
  console.error("Run `npm run build` in web-guest/ and commit dist/ and src/gen/.");
  process.exit(1);
}
console.log("web-guest: dist/ and src/gen/ match the sources.");
