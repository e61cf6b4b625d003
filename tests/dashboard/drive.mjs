// Drives the dashboard in headless Chromium for tests/dashboard.rs and prints one JSON line with
// what it saw. usage: node drive.mjs BASE OPERATOR_TOKEN VIEWER_TOKEN WORKFLOW_ID SCREENSHOT_DIR
import { chromium } from "playwright-core";

const [base, operator, viewer, id, shots] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const seen = { consoleErrors: [] };
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-gpu"] });
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("console", (m) => { if (m.type() === "error") seen.consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => seen.consoleErrors.push(String(e)));
  const dialogs = [];
  page.on("dialog", (d) => { dialogs.push(d.message()); d.accept(); });

  // A wrong token: back to the sign-in with the API's reason.
  await page.goto(`${base}/`);
  await page.fill("[data-testid=token]", "not-a-valid-token-0000");
  await page.click("[data-testid=signin]");
  seen.wrongToken = await page.textContent("[data-testid=signin-error]", { timeout: 10000 });

  // The operator: the list shows the rollout.
  await page.fill("[data-testid=token]", operator);
  await page.click("[data-testid=signin]");
  await page.waitForSelector(`[data-testid=row][data-id="${id}"]`, { timeout: 10000 });
  seen.who = await page.textContent("[data-testid=who]");
  seen.rows = await page.locator("[data-testid=row]").count();
  await page.screenshot({ path: `${shots}/list.png`, fullPage: true });

  // Its detail: progress moves without a reload.
  let navigations = 0;
  page.on("framenavigated", () => { navigations += 1; });
  await page.click(`[data-testid=row][data-id="${id}"]`);
  await page.waitForSelector("[data-testid=overall]", { timeout: 10000 });
  const overall = async () => Number(await page.getAttribute("[data-testid=overall]", "data-value"));
  seen.progressFirst = await overall();
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline && (await overall()) === seen.progressFirst) await page.waitForTimeout(200);
  seen.progressLater = await overall();
  seen.navigationsWhileLive = navigations - 1; // the click's own hash change
  seen.nodes = await page.locator("[data-testid=child-1]").count();
  seen.vms = await page.locator("[data-testid=child-2]").count();
  await page.screenshot({ path: `${shots}/detail-live.png`, fullPage: true });

  // Pause: the page shows it from the stream.
  await page.click("[data-testid=pause]");
  await page.waitForSelector("[data-testid=resume]", { timeout: 10000 });
  seen.stateAfterPause = await page.textContent("h2 [data-testid=state]");
  await page.screenshot({ path: `${shots}/paused.png`, fullPage: true });

  // A signal the API refuses (after the confirmation, accepted above): its detail is shown.
  await page.fill("[data-testid=signal-name]", "no spaces allowed");
  await page.click("[data-testid=signal]");
  // (A selector, not waitForFunction: the page's CSP refuses the eval that one needs.)
  await page.waitForSelector("[data-testid=control-error]:not(:empty)", { timeout: 10000 });
  seen.signalRefused = await page.textContent("[data-testid=control-error]");
  seen.dialogs = dialogs;

  // A viewer sees the same page without controls.
  await page.click("#signout");
  await page.fill("[data-testid=token]", viewer);
  await page.click("[data-testid=signin]");
  await page.goto(`${base}/ui/#/w/${encodeURIComponent(id)}`);
  await page.waitForSelector("[data-testid=overall]", { timeout: 10000 });
  seen.viewerWho = await page.textContent("[data-testid=who]");
  seen.viewerControls = await page.locator("[data-testid=pause], [data-testid=resume], [data-testid=cancel]").count();
  await page.screenshot({ path: `${shots}/viewer.png`, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
