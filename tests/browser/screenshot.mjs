// Takes the README's screenshot of the task page with a live session:
// web-guest/docs/task-page.png, 1200x700.
//
//   cd tests/browser && node screenshot.mjs
//
// The real binary (`rendezvous demo`, a plain bash with a CI-like prompt)
// and Debian's chromium; three sessions so the sidebar has something to list.

import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { launchBrowser, newPage } from "./lib/browser.mjs";
import { REPO_ROOT, startDemo } from "./lib/proc.mjs";
import { typeLine, waitForLine, waitForSession, waitForStatus } from "./lib/terminal.mjs";

const OUT = join(REPO_ROOT, "web-guest/docs/task-page.png");
const VIEWPORT = { width: 1200, height: 700 };

const demo = await startDemo({
  command: ["bash", "--norc", "--noprofile"],
  env: {
    PS1: "\\[\\e[1;32m\\]ci@build-42\\[\\e[0m\\]:\\[\\e[1;34m\\]\\w\\[\\e[0m\\]$ ",
    HOME: "/tmp",
    LS_COLORS: "",
  },
});
const browser = await launchBrowser({ colorScheme: "dark", viewport: VIEWPORT });
try {
  // Two other guests' shells, so the sidebar lists three sessions.
  for (let i = 0; i < 2; i++) {
    const other = await newPage(browser.context);
    await other.goto(demo.url);
    await waitForStatus(other, "connected");
    await waitForSession(other);
  }
  const page = await newPage(browser.context);
  await page.goto(demo.url);
  await waitForStatus(page, "connected");
  await waitForSession(page);
  await typeLine(page, "cd / && clear");
  await typeLine(page, "ls --color=always");
  await typeLine(page, "ls -l --color=always /usr | head -8");
  await typeLine(page, "grep --color=always -n NAME /etc/os-release");
  await typeLine(page, "echo Job log: https://ci.example.com/jobs/42");
  await waitForLine(page, "Job log: https://ci.example.com/jobs/42");
  // The sidebar refreshes every few seconds; wait until it lists all three.
  await page.waitForFunction(() => document.querySelectorAll("#sessions li.session").length >= 3, null, { timeout: 20_000 });
  await page.evaluate(() => window.rendezvousTerm.blur());
  await mkdir(join(REPO_ROOT, "web-guest/docs"), { recursive: true });
  await page.screenshot({ path: OUT });
  console.log(`wrote ${OUT}`);
} finally {
  await browser.close();
  await demo.stop();
}
