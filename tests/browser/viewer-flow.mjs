#!/usr/bin/env node
// From a search result to the full-resolution image in headless Chromium (playwright-core, the system's
// Chromium): the "Open in viewer" links, the WADO-RS rendered frame, window presets and keyboard adjustment.
//
//   node tests/browser/viewer-flow.mjs --base http://127.0.0.1:8000/ --token TOKEN --out DIR --query Q \
//        --report R0001 [--chromium /usr/bin/chromium]
//
// Prints {"ok": true, "steps": {...}} (screenshots in DIR; the caller compares them) or {"ok": false, ...}.
import path from "node:path";
import { openPage, parseArgs } from "./flow.mjs";

const args = parseArgs(process.argv.slice(2), ["base", "token", "out", "query", "report"]);
const report = { ok: false, steps: {}, consoleErrors: [], failedRequests: [] };
let step = "start";
const { browser, page, timeout: TIMEOUT } = await openPage(args, report, { height: 1000, token: args.token });
page.on("response", (r) => {
  if (r.status() >= 400) report.failedRequests.push(`${r.request().method()} ${r.url()} ${r.status()}`);
});

const img = () => page.getByTestId("full-image-img");
const full = () => page.getByTestId("full-image");

/** Wait for the full image to show a newly rendered frame (its blob URL changes and the request settled). */
async function newFrame(previousSrc) {
  await page.waitForFunction(
    (prev) => {
      const el = document.querySelector('[data-testid="full-image-img"]');
      const box = document.querySelector('[data-testid="full-image"]');
      return el && el.getAttribute("src") !== prev && el.complete && el.naturalWidth > 0 && box?.getAttribute("data-busy") === "false";
    },
    previousSrc,
    { timeout: TIMEOUT },
  );
  return img().getAttribute("src");
}

async function shotImage(name) {
  const file = path.join(args.out, name);
  await img().screenshot({ path: file });
  return file;
}

try {
  step = "search";
  await page.goto(`${args.base}#/search?q=${encodeURIComponent(args.query)}&mode=keyword`);
  const card = page.locator(`[data-testid="result-card"][data-report-id="${args.report}"]`);
  await card.waitFor();
  const cardLink = card.getByTestId("viewer-link");
  await cardLink.waitFor();
  report.steps.search = { cardViewerHref: await cardLink.getAttribute("href"), cardViewerTarget: await cardLink.getAttribute("target") };

  step = "open image";
  const t0 = Date.now();
  await card.getByTestId("thumb-link").click();
  await page.waitForFunction(() => {
    const el = document.querySelector('[data-testid="full-image-img"]');
    return el && el.complete && el.naturalWidth > 0;
  }, null, { timeout: TIMEOUT });
  const clickToFrameMs = Date.now() - t0;
  await page.waitForFunction(() => document.querySelector('[data-testid="full-image"]')?.getAttribute("data-first-frame-ms"));
  const natural = await img().evaluate((el) => [el.naturalWidth, el.naturalHeight]);
  const imageLink = page.locator(".viewer").getByTestId("viewer-link");
  await imageLink.waitFor();
  report.steps.image = {
    hash: await page.evaluate(() => location.hash),
    clickToFrameMs,
    mountToFrameMs: Number(await full().getAttribute("data-first-frame-ms")),
    natural,
    imageViewerHref: await imageLink.getAttribute("href"),
  };
  let src = await newFrame(null);
  const shots = { default: await shotImage("10-window-default.png") };

  step = "presets";
  const pressed = {};
  for (const preset of ["lung", "bone"]) {
    await page.locator(`button[data-preset="${preset}"]`).click();
    src = await newFrame(src);
    shots[preset] = await shotImage(`11-window-${preset}.png`);
    pressed[preset] = await page.locator(`button[data-preset="${preset}"]`).getAttribute("aria-pressed");
  }
  report.steps.presets = { pressed, window: await full().getAttribute("data-window") };

  step = "keyboard";
  await page.locator('button[data-preset="default"]').focus();
  await page.keyboard.press("Enter");
  src = await newFrame(src);
  const width = page.getByTestId("wl-width");
  await width.focus();
  for (let i = 0; i < 5; i++) await page.keyboard.press("PageDown");
  src = await newFrame(src);
  shots.keyboard = await shotImage("12-window-keyboard.png");
  report.steps.keyboard = {
    focusedIsRange: await page.evaluate(() => document.activeElement?.getAttribute("type") === "range"),
    window: await full().getAttribute("data-window"),
    customPressed: await page.locator('button[aria-pressed="true"]').count(),
  };
  await page.screenshot({ path: path.join(args.out, "13-image-page.png"), fullPage: true });
  report.shots = shots;
  report.ok = true;
} catch (e) {
  report.error = String(e?.stack ?? e);
  report.step = step;
  try {
    await page.screenshot({ path: path.join(args.out, "failure.png"), fullPage: true });
  } catch {
    // the page may be gone
  }
}
await browser.close();
console.log(JSON.stringify(report));
process.exit(report.ok ? 0 : 1);
