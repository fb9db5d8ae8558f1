#!/usr/bin/env node
// Drive the medsearch web client in headless Chromium (playwright-core, the system's Chromium; no browser
// download) through the radiologist's flow and report what it saw as JSON on stdout.
//
//   node tests/browser/web-flow.mjs --base http://127.0.0.1:8000/ --token TOKEN --out DIR \
//        --query effusion --facet-code J91.8 --facet-polarity negative \
//        --upload-dicom FILE.dcm --upload-png FILE.png [--date-from YYYY-MM-DD --date-to YYYY-MM-DD]
//        [--chromium /usr/bin/chromium] [--oidc 1]
//
// Screenshots go to DIR. Exit status 0 with {"ok": true, ...}; 1 with {"ok": false, "error": ..., "step": ...}
// (a screenshot of the failing page is saved as failure.png). Assertions on the observations are the
// caller's (tests/integration/test_web_browser.py).
import path from "node:path";
import { openPage, parseArgs } from "./flow.mjs";

const args = parseArgs(process.argv.slice(2), ["base", "token", "out"]);
const report = { ok: false, steps: {}, screenshots: [], consoleErrors: [], failedRequests: [] };
let step = "start";
const { browser, page, timeout: TIMEOUT } = await openPage(args, report, { height: 900 });
let graphqlRequests = 0;
page.on("request", (r) => {
  if (r.method() === "POST" && new URL(r.url()).pathname.endsWith("/graphql")) graphqlRequests++;
});

async function shot(name, opts = {}) {
  const file = path.join(args.out, name);
  if (opts.fullPage) await page.evaluate(() => window.scrollTo(0, 0)); // keep the sticky header at the top
  await page.screenshot({ path: file, fullPage: opts.fullPage ?? false });
  report.screenshots.push(file);
}

/**
 * Wait until every thumbnail in `scope` has loaded or failed. Thumbnails are lazy (<img loading="lazy">), so
 * the ones still loading are scrolled into view one by one; the page is scrolled back to the top afterwards.
 */
async function thumbsSettled(scope = "body") {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const pending = await page.$$(`${scope} [data-thumb-status="loading"]`);
    if (pending.length === 0) break;
    if (Date.now() > deadline) throw new Error(`${pending.length} thumbnails in ${scope} still loading after ${TIMEOUT} ms`);
    await pending[0].scrollIntoViewIfNeeded();
    await page.waitForTimeout(50);
  }
  await page.evaluate(() => window.scrollTo(0, 0));
}

async function thumbStatuses(scope) {
  return page.$$eval(`${scope} [data-thumb-status]`, (els) => els.map((e) => e.getAttribute("data-thumb-status")));
}

try {
  // 1. login
  step = "login";
  await page.goto(args.base, { waitUntil: "domcontentloaded" });
  const tokenInput = page.getByLabel("API token");
  await tokenInput.waitFor();
  report.steps.login = { title: await page.title(), focused: await tokenInput.evaluate((el) => el === document.activeElement) };
  // a wrong token first: the form must say so and stay
  await tokenInput.fill("not-a-valid-token-0000");
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.getByRole("alert").filter({ hasText: "did not accept" }).waitFor();
  report.steps.login.badTokenMessage = (await page.getByRole("alert").filter({ hasText: "did not accept" }).innerText()).trim();
  await shot("01-login-rejected.png");
  // the refused request is logged by Chromium as a 401 resource error: expected here, not a failure
  report.steps.login.expectedConsoleErrors = report.consoleErrors.splice(0);
  await tokenInput.fill(args.token);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.getByRole("search").waitFor();
  report.steps.login.tokenStored = await page.evaluate(() => sessionStorage.getItem("medsearch.token") !== null);

  // 2. search (typed, submitted with the keyboard)
  step = "search";
  const mode = (args.mode ?? "keyword").toUpperCase();
  await page.locator(`.segmented label:has(input[value="${mode}"])`).click();
  await page.waitForFunction((m) => document.querySelector(`input[name="mode"][value="${m}"]`)?.checked, mode);
  const box = page.getByRole("searchbox", { name: "Search reports" });
  await box.fill(args.query ?? "effusion");
  await box.press("Enter");
  await page.waitForFunction(() => location.hash.includes("q="));
  await page.locator('[data-testid="result-card"]').first().waitFor();
  await page.waitForFunction(() => !document.querySelector('section[aria-busy="true"]'));
  await thumbsSettled('[data-testid="results"]');
  const facetBars = async (polarity) =>
    page.$$eval(`[data-testid="facet-${polarity}"] .facet-bar`, (els) =>
      els.map((e) => ({ code: e.getAttribute("data-code"), count: Number(e.querySelector(".n")?.textContent ?? "0") })),
    );
  report.steps.search = {
    mode,
    hash: await page.evaluate(() => location.hash),
    heading: (await page.locator(".results-head .count").innerText()).trim(),
    cards: await page.locator('[data-testid="result-card"]').count(),
    reportIds: await page.$$eval('[data-testid="result-card"]', (els) => els.map((e) => e.getAttribute("data-report-id"))),
    snippets: await page.locator('[data-testid="snippet"] mark').count(),
    positiveFacets: await facetBars("positive"),
    negativeFacets: await facetBars("negative"),
    chipKinds: await page.$$eval('[data-testid="results"] .findings-row', (els) => [...new Set(els.map((e) => e.getAttribute("data-kind")))]),
    thumbs: await thumbStatuses('[data-testid="results"]'),
  };
  await shot("02-search.png");

  // 3. click a facet bar: it becomes a code filter
  step = "facet";
  const polarity = args["facet-polarity"] ?? "negative";
  const code = args["facet-code"] ?? report.steps.search.negativeFacets[0]?.code;
  const bar = page.locator(`[data-testid="facet-${polarity}"] .facet-bar[data-code="${code}"]`);
  const expected = Number(await bar.locator(".n").innerText());
  await bar.click();
  await page.waitForFunction((c) => decodeURIComponent(location.hash).includes(c), code);
  await page.waitForFunction(() => !document.querySelector('section[aria-busy="true"]'));
  await page.locator(`[data-testid="facet-${polarity}"] .facet-bar[data-code="${code}"][aria-pressed="true"]`).waitFor();
  await thumbsSettled('[data-testid="results"]');
  report.steps.facet = {
    code,
    polarity,
    expectedCount: expected,
    hash: await page.evaluate(() => location.hash),
    heading: (await page.locator(".results-head .count").innerText()).trim(),
    cards: await page.locator('[data-testid="result-card"]').count(),
    reportIds: await page.$$eval('[data-testid="result-card"]', (els) => els.map((e) => e.getAttribute("data-report-id"))),
    // the code shown in the matching findings row of every card
    everyCardHasCode: await page.$$eval(
      '[data-testid="result-card"]',
      (cards, [c, p]) => cards.every((card) => [...card.querySelectorAll(`.findings-row[data-kind="${p}"] .code`)].some((x) => x.textContent === c)),
      [code, polarity],
    ),
    filterChips: await page.$$eval('[data-testid="code-filter-chip"]', (els) => els.map((e) => e.textContent)),
    thumbs: await thumbStatuses('[data-testid="results"]'),
  };
  await shot("03-facet-filtered.png");

  // 3b. narrow to studies with images of one modality (the filter goes through the images of each study)
  if (args.modality) {
    step = "modality";
    await page.getByLabel("Modality", { exact: true }).selectOption(args.modality);
    await page.waitForFunction((m) => location.hash.includes(`modality=${m}`), args.modality);
    await page.waitForFunction(() => !document.querySelector('section[aria-busy="true"]'));
    await page.locator('[data-testid="result-card"]').first().waitFor();
    await thumbsSettled('[data-testid="results"]');
    report.steps.modality = {
      hash: await page.evaluate(() => location.hash),
      reportIds: await page.$$eval('[data-testid="result-card"]', (els) => els.map((e) => e.getAttribute("data-report-id"))),
      withImage: await page.$$eval('[data-testid="result-card"]', (els) => els.map((e) => Boolean(e.querySelector('[data-testid="thumb-link"]')))),
      thumbs: await thumbStatuses('[data-testid="results"]'),
    };
    await shot("03b-modality-filtered.png");
  }

  // 4. open an image from a result card
  step = "open-image";
  const link = page.locator('[data-testid="result-card"] [data-testid="thumb-link"]').first();
  await link.click();
  await page.waitForFunction(() => location.hash.startsWith("#/image/"));
  await page.locator('[data-testid="report-text"]').waitFor();
  await page.locator('[data-testid="similar-item"]').first().waitFor();
  await thumbsSettled("main");
  report.steps.image = {
    hash: await page.evaluate(() => location.hash),
    heading: (await page.locator("main h1").first().innerText()).trim(),
    metadata: await page.$$eval("dl.metadata dt", (els) => els.map((e) => e.textContent)),
    viewerThumb: await thumbStatuses(".viewer"),
    entities: await page.$$eval('[data-testid="report-text"] mark.ent', (els) => els.map((e) => ({ text: e.textContent, assertion: e.getAttribute("data-assertion") }))),
    similar: await page.$$eval('[data-testid="similar"] [data-testid="similar-item"]', (els) => els.map((e) => ({ href: e.querySelector("a")?.getAttribute("href"), score: Number(e.querySelector(".sim")?.textContent) }))),
    similarThumbs: await thumbStatuses('[data-testid="similar"]'),
  };
  await shot("04-image.png", { fullPage: true });

  // 5. change k: fewer neighbours
  step = "similar-k";
  await page.getByLabel("Neighbours (k)").first().selectOption("5");
  await page.waitForFunction(() => location.hash.includes("k=5"));
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="similar"] [data-testid="similar-item"]').length <= 5);
  await page.waitForFunction(() => !document.querySelector('[data-testid="similar"][aria-busy="true"]'));
  report.steps.similarK = { items: await page.locator('[data-testid="similar"]').first().locator('[data-testid="similar-item"]').count() };

  // 6. search by an uploaded DICOM (multipart GraphQL upload) on the image page
  if (args["upload-dicom"]) {
    step = "upload-dicom";
    const zone = page.locator('[data-testid="upload-search"]');
    await zone.locator('[data-testid="upload-input"]').setInputFiles(args["upload-dicom"]);
    await zone.locator('[data-testid="similar-item"]').first().waitFor({ timeout: TIMEOUT * 2 });
    await page.waitForFunction(() => !document.querySelector('[data-testid="upload-search"] [aria-busy="true"]'));
    await thumbsSettled('[data-testid="upload-search"]');
    report.steps.uploadDicom = {
      items: await zone.locator('[data-testid="similar-item"]').evaluateAll((els) =>
        els.map((e) => ({ href: e.querySelector("a")?.getAttribute("href"), score: Number(e.querySelector(".sim")?.textContent) })),
      ),
      thumbs: await thumbStatuses('[data-testid="upload-search"]'),
    };
    await zone.scrollIntoViewIfNeeded();
    await shot("05-upload-dicom.png", { fullPage: true });
  }

  // 7. the "Search by image" page with a PNG
  if (args["upload-png"]) {
    step = "upload-png";
    await page.getByRole("link", { name: "Search by image" }).click();
    await page.waitForFunction(() => location.hash === "#/upload");
    // The image page has an upload zone too: wait until the upload page has replaced it, or the file may go to
    // the old zone just before it unmounts (its result is then lost and the new page shows "no file yet").
    await page.getByRole("heading", { level: 1, name: "Search by image" }).waitFor();
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="upload-search"]').length === 1);
    const zone = page.locator('[data-testid="upload-search"]');
    await zone.locator('[data-testid="upload-input"]').setInputFiles(args["upload-png"]);
    await zone.locator('[data-testid="similar-item"]').first().waitFor({ timeout: TIMEOUT * 2 });
    await thumbsSettled("main");
    report.steps.uploadPng = {
      items: await zone.locator('[data-testid="similar-item"]').evaluateAll((els) => els.map((e) => Number(e.querySelector(".sim")?.textContent))),
      preview: await zone.locator("figure img").count(),
    };
    await shot("06-upload-png.png", { fullPage: true });
  }

  // 7b. report date range on the search page (listing without a query: newest first)
  if (args["date-from"] && args["date-to"]) {
    step = "date-range";
    const [from, to] = [args["date-from"], args["date-to"]];
    await page.goto(`${args.base}#/search`);
    await page.locator('[data-testid="result-card"]').first().waitFor();
    await page.waitForFunction(() => !document.querySelector('section[aria-busy="true"]'));
    const fromInput = page.getByLabel("Reported from", { exact: true });
    const toInput = page.getByLabel("Reported to", { exact: true });
    await fromInput.fill(from);
    await page.waitForFunction((f) => location.hash.includes(`from=${f}`), from);
    await toInput.fill(to);
    await page.waitForFunction((t) => location.hash.includes(`to=${t}`), to);
    // settled: not busy and every card inside the range (soft: on a timeout the observations tell what was shown)
    await page
      .waitForFunction(
        ([f, t]) => {
          const dates = [...document.querySelectorAll('[data-testid="result-card"] [data-testid="report-date"]')].map((e) => e.textContent?.trim() ?? "");
          return !document.querySelector('section[aria-busy="true"]') && dates.length > 0 && dates.every((d) => d >= f && d <= t);
        },
        [from, to],
        { timeout: TIMEOUT },
      )
      .catch(() => undefined);
    await thumbsSettled('[data-testid="results"]');
    report.steps.dateRange = {
      hash: await page.evaluate(() => location.hash),
      heading: (await page.locator(".results-head .count").innerText()).trim(),
      inputs: [await fromInput.inputValue(), await toInput.inputValue()],
      inputTypes: [await fromInput.getAttribute("type"), await toInput.getAttribute("type")],
      reportIds: await page.$$eval('[data-testid="result-card"]', (els) => els.map((e) => e.getAttribute("data-report-id"))),
      dates: await page.$$eval('[data-testid="result-card"] [data-testid="report-date"]', (els) => els.map((e) => e.textContent?.trim())),
      positiveFacets: await facetBars("positive"),
      negativeFacets: await facetBars("negative"),
      clearButton: await page.getByRole("button", { name: "Clear filters" }).count(),
    };
    await shot("06b-date-range.png", { fullPage: true });

    // a start after the end: an inline error, no request, no results
    step = "date-range-inverted";
    const before = graphqlRequests;
    await toInput.fill(args["date-inverted-to"] ?? "2000-01-01");
    await page.locator('[data-testid="date-range-error"]').waitFor();
    await page.waitForTimeout(500);
    report.steps.dateRangeInverted = {
      hash: await page.evaluate(() => location.hash),
      error: (await page.locator('[data-testid="date-range-error"]').innerText()).trim(),
      invalid: [await fromInput.getAttribute("aria-invalid"), await toInput.getAttribute("aria-invalid")],
      cards: await page.locator('[data-testid="result-card"]').count(),
      requestsSent: graphqlRequests - before,
    };
    await shot("06c-date-range-inverted.png");

    // "Clear filters" clears the dates too
    step = "date-range-clear";
    await page.getByRole("button", { name: "Clear filters" }).click();
    await page.waitForFunction(() => !location.hash.includes("from=") && !location.hash.includes("to="));
    await page.locator('[data-testid="result-card"]').first().waitFor();
    report.steps.dateRangeCleared = {
      hash: await page.evaluate(() => location.hash),
      inputs: [await fromInput.inputValue(), await toInput.inputValue()],
      cards: await page.locator('[data-testid="result-card"]').count(),
      clearButton: await page.getByRole("button", { name: "Clear filters" }).count(),
    };
  }

  // 8. tablet width: the same search, one column
  step = "tablet";
  await page.setViewportSize({ width: 820, height: 1180 });
  await page.goto(`${args.base}#/search?q=${encodeURIComponent(args.query ?? "effusion")}&mode=${mode.toLowerCase()}`);
  await page.locator('[data-testid="result-card"]').first().waitFor();
  await thumbsSettled('[data-testid="results"]');
  report.steps.tablet = {
    scrollWidth: await page.evaluate(() => document.documentElement.scrollWidth),
    sidebarAboveResults: await page.evaluate(() => {
      const side = document.querySelector("aside.sidebar")?.getBoundingClientRect();
      const res = document.querySelector('[data-testid="results"]')?.getBoundingClientRect();
      return Boolean(side && res && side.bottom <= res.top + 1);
    }),
  };
  await shot("07-tablet-search.png");

  // 9. keyboard: Tab from the top reaches the skip link, then the search box is reachable
  step = "keyboard";
  await page.setViewportSize({ width: 1366, height: 900 });
  await page.goto(`${args.base}#/search`);
  await page.reload(); // a fresh document: focus starts at the top
  await page.getByRole("search").waitFor();
  await page.keyboard.press("Tab");
  const first = await page.evaluate(() => document.activeElement?.textContent?.trim());
  let reached = false;
  for (let i = 0; i < 8 && !reached; i++) {
    await page.keyboard.press("Tab");
    reached = await page.evaluate(() => document.activeElement?.getAttribute("type") === "search");
  }
  report.steps.keyboard = { firstTabStop: first, reachedSearchBox: reached };

  // 10. sign out: back to the login form, token gone
  step = "sign-out";
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("API token").waitFor();
  report.steps.signOut = { tokenCleared: await page.evaluate(() => sessionStorage.getItem("medsearch.token") === null) };

  // 11. OIDC: the sign-in page offers the organisation's sign-in (config.json); code flow with PKCE
  if (args.oidc) {
    step = "oidc";
    const button = page.getByRole("button", { name: "Sign in with your organisation" });
    await button.waitFor();
    await shot("08-login-with-oidc.png");
    await button.click();
    await page.getByRole("search").waitFor({ timeout: TIMEOUT });
    const box2 = page.getByRole("searchbox", { name: "Search reports" });
    await box2.fill("pneumothorax");
    await box2.press("Enter");
    await page.locator('[data-testid="result-card"]').first().waitFor();
    await page.waitForFunction(() => !document.querySelector('section[aria-busy="true"]'));
    report.steps.oidc = {
      tokenIsJwt: await page.evaluate(() => (sessionStorage.getItem("medsearch.token") ?? "").split(".").length === 3),
      urlClean: await page.evaluate(() => location.search === ""),
      hash: await page.evaluate(() => location.hash),
      cards: await page.locator('[data-testid="result-card"]').count(),
    };
    await shot("09-oidc-signed-in.png");
  }

  report.ok = true;
} catch (e) {
  report.ok = false;
  report.step = step;
  report.error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  try {
    await shot("failure.png", { fullPage: true });
  } catch {
    /* the page may be gone */
  }
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(report)}\n`);
process.exit(report.ok ? 0 : 1);
