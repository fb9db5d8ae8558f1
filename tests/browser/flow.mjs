// What the browser flows (web-flow.mjs, viewer-flow.mjs) share: their `--key value` arguments and a headless
// Chromium page (playwright-core, the system's Chromium; no browser download) that records what went wrong.
import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "..", "api", "web", "package.json"));
const { chromium } = require("playwright-core");

/** `--key value` pairs as {key: value}; throws on a stray word or when one of `required` is missing. */
export function parseArgs(argv, required) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
    out[a.slice(2)] = argv[i + 1];
    i++;
  }
  for (const need of required) if (!out[need]) throw new Error(`--${need} is required`);
  return out;
}

/**
 * A page in a fresh headless Chromium (`--chromium`, default /usr/bin/chromium) of 1366 x `height` pixels, with
 * `--timeout` (ms, default 30000) as the default timeout; `--out` is created. Console errors, page errors and
 * failed requests (aborted ones excepted) go into `report.consoleErrors` / `report.failedRequests`. `token`:
 * stored as the session's API token before any script runs (the sign-in page is skipped).
 * Returns {browser, page, timeout}.
 */
export async function openPage(args, report, { height, token } = {}) {
  mkdirSync(args.out, { recursive: true });
  const timeout = Number(args.timeout ?? 30000);
  const browser = await chromium.launch({
    executablePath: args.chromium ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const context = await browser.newContext({ viewport: { width: 1366, height }, deviceScaleFactor: 1 });
  context.setDefaultTimeout(timeout);
  if (token) await context.addInitScript((t) => sessionStorage.setItem("medsearch.token", t), token);
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error") report.consoleErrors.push(m.text());
  });
  page.on("pageerror", (e) => report.consoleErrors.push(`pageerror: ${e.message}`));
  page.on("requestfailed", (r) => {
    const reason = r.failure()?.errorText ?? "";
    if (!reason.includes("ERR_ABORTED")) report.failedRequests.push(`${r.method()} ${r.url()} ${reason}`);
  });
  return { browser, page, timeout };
}
