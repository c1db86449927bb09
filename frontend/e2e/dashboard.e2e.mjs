// End-to-end check of the dashboard against a running gateway, in Debian's Chromium.
//
//   STREAMTALLY_URL=http://127.0.0.1:8080/ STREAMTALLY_ORG=<org id> STREAMTALLY_TOKEN=<org token> \
//     [STREAMTALLY_WRONG_TOKEN=<a token the gateway refuses>] node e2e/dashboard.e2e.mjs
//
// Needs: the gateway serving the built page and API with some events stored for the org,
// /usr/bin/chromium (apt-get install chromium), and `npm ci` (playwright-core). Signs in,
// waits for the cards, the chart and the recent list to show data, switches the range,
// checks that a wrong token shows the rejection message and that no console errors
// happened, and saves screenshots (desktop 1280x800, phone 390x844) to ../target/screenshots/.
// Exit code 0 when every check passed.

import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const BASE = process.env.STREAMTALLY_URL || 'http://127.0.0.1:8080/';
const ORG = process.env.STREAMTALLY_ORG;
const TOKEN = process.env.STREAMTALLY_TOKEN;
const WRONG_TOKEN = process.env.STREAMTALLY_WRONG_TOKEN || `wrong-${Date.now().toString(36)}`;
const SHOTS = fileURLToPath(new URL('../../target/screenshots/', import.meta.url));
const TIMEOUT_MS = Number(process.env.STREAMTALLY_E2E_TIMEOUT_MS || 20_000);

if (!ORG || !TOKEN) {
  console.error('Set STREAMTALLY_ORG and STREAMTALLY_TOKEN (and STREAMTALLY_URL if not http://127.0.0.1:8080/).');
  process.exit(2);
}

const failures = [];
let step = '';
const log = (s) => {
  step = s;
  console.log(`- ${s}`);
};
const check = (ok, what) => {
  if (!ok) failures.push(`${step}: ${what}`);
  console.log(`  ${ok ? 'ok' : 'FAILED'}: ${what}`);
};
const tid = (id) => `[data-testid="${id}"]`;

/** Console errors and uncaught exceptions of a page; `allow` filters expected ones. */
function watchConsole(page, label, allow = () => false) {
  const errors = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !allow(msg.text())) errors.push(`${label} console: ${msg.text()}`);
  });
  page.on('pageerror', (err) => errors.push(`${label} page error: ${err.message}`));
  return errors;
}

async function signIn(page, token) {
  await page.goto(BASE, { waitUntil: 'load' });
  await page.locator('#signin-org').fill(ORG);
  await page.locator('#signin-token').fill(token);
  await page.locator(tid('signin-submit')).click();
}

/** Waits for the live connection and data in the cards, the charts and the recent list. */
async function waitForData(page) {
  await page.waitForSelector(`${tid('connection-status')}[data-state="open"]`, { timeout: TIMEOUT_MS });
  await page.waitForFunction(
    () => {
      const q = (id) => document.querySelector(`[data-testid="${id}"]`);
      const filled = (id) => {
        const t = q(`${id}-value`)?.textContent?.trim();
        return !!t && t !== '–';
      };
      return (
        filled('card-events-5m') &&
        filled('card-active-users-5m') &&
        filled('card-events-today') &&
        filled('card-unique-users-today') &&
        Number(q('chart-timeseries')?.getAttribute('data-points') ?? 0) > 0 &&
        Number(q('chart-timeseries')?.getAttribute('data-total') ?? 0) > 0 &&
        Number(q('chart-top-events')?.getAttribute('data-bars') ?? 0) > 0 &&
        Number(q('recent-events')?.getAttribute('data-count') ?? 0) > 0 &&
        !!q('chart-timeseries')?.querySelector('canvas') &&
        !!q('chart-top-events')?.querySelector('canvas')
      );
    },
    undefined,
    { timeout: TIMEOUT_MS },
  );
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
  ],
});
mkdirSync(SHOTS, { recursive: true });
const consoleErrors = [];

try {
  // Desktop: sign in with the form, data, range switch, event details, reload.
  {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    const errors = watchConsole(page, 'desktop');

    log('desktop: sign in with the form');
    await signIn(page, TOKEN);
    await waitForData(page);
    check(!new URL(page.url()).searchParams.has('token'), 'no token in the URL');
    const values = {};
    for (const id of ['card-events-5m', 'card-active-users-5m', 'card-events-today', 'card-unique-users-today']) {
      values[id] = (await page.locator(tid(`${id}-value`)).textContent())?.trim();
    }
    console.log(`  cards: ${JSON.stringify(values)}`);
    check(Object.values(values).every((v) => v && v !== '–'), 'the four stat cards show numbers');
    check((await page.locator(tid('connection-status')).textContent())?.includes('Live'), 'the indicator says Live');
    check(await page.locator(tid('ingestion-lag')).isVisible(), 'the ingestion lag is shown');
    await page.screenshot({ path: `${SHOTS}desktop-1280x800.png` });

    log('desktop: expand an event\'s properties');
    const first = page.locator(`${tid('recent-event')} details summary`).first();
    if ((await first.count()) > 0) {
      await first.click();
      check(await page.locator(`${tid('recent-event')} details[open] pre`).first().isVisible(), 'properties are shown');
    } else {
      console.log('  (the newest events have no properties)');
    }

    log('desktop: switch the range to 7 days');
    await page.locator(tid('range-select')).selectOption('7d');
    await page.waitForSelector(`${tid('chart-timeseries')}[data-granularity="day"]`, { timeout: TIMEOUT_MS });
    await page.waitForFunction(
      () => Number(document.querySelector('[data-testid="chart-timeseries"]')?.getAttribute('data-points')) === 8,
      undefined,
      { timeout: TIMEOUT_MS },
    );
    check(true, '8 daily points (7 days back to today) after switching to 7 days');
    await page.screenshot({ path: `${SHOTS}desktop-1280x800-7d.png` });

    log('desktop: switch back to 1 hour');
    await page.locator(tid('range-select')).selectOption('1h');
    await page.waitForFunction(
      () => {
        const c = document.querySelector('[data-testid="chart-timeseries"]');
        return c?.getAttribute('data-granularity') === 'hour' && Number(c.getAttribute('data-points')) === 2;
      },
      undefined,
      { timeout: TIMEOUT_MS },
    );
    check(true, 'two hourly points (previous and current hour) for the last hour');

    log('desktop: filter by an event type, then clear it');
    const filter = page.locator(tid('event-type-filter'));
    const name = (await page.locator(`${tid('recent-event')} .badge`).first().textContent())?.trim() || 'track';
    await filter.fill(name);
    await filter.press('Enter');
    await page.waitForTimeout(1500);
    check(await page.locator(tid('chart-timeseries')).isVisible(), `chart still shown with event type ${name}`);
    await page.getByRole('button', { name: 'Clear' }).click();

    log('desktop: keyboard focus is visible');
    await page.keyboard.press('Tab');
    const focused = await page.evaluate(() => document.activeElement?.tagName ?? '');
    check(focused !== 'BODY' && focused !== '', `Tab moves focus (${focused})`);

    log('desktop: reload keeps the session of this tab');
    await page.reload({ waitUntil: 'load' });
    await waitForData(page);
    check((await page.locator('#signin-token').count()) === 0, 'no sign-in form after reload');
    consoleErrors.push(...errors);
    await context.close();
  }

  // Phone: sign in through ?token= (which must disappear from the address).
  {
    const context = await browser.newContext({
      viewport: { width: 390, height: 844 },
      deviceScaleFactor: 2,
      isMobile: true,
      hasTouch: true,
    });
    const page = await context.newPage();
    const errors = watchConsole(page, 'phone');
    log('phone: sign in with ?org=&token= in the URL');
    const url = new URL(BASE);
    url.searchParams.set('org', ORG);
    url.searchParams.set('token', TOKEN);
    await page.goto(url.toString(), { waitUntil: 'load' });
    await waitForData(page);
    check(!new URL(page.url()).searchParams.has('token'), 'the token was stripped from the URL');
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, `no horizontal scrolling (overflow ${overflow}px)`);
    await page.screenshot({ path: `${SHOTS}phone-390x844.png` });
    await page.screenshot({ path: `${SHOTS}phone-390x844-full.png`, fullPage: true });
    consoleErrors.push(...errors);
    await context.close();
  }

  // Wrong token: the rejection message. The browser logs the refused request itself
  // ("Failed to load resource: ... 401"): that one is expected.
  {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    const errors = watchConsole(page, 'wrong token', (text) => /status of 40[13]/.test(text));
    log('wrong token: the rejection message');
    await signIn(page, WRONG_TOKEN);
    const msg = page.locator(tid('signin-error'));
    await msg.waitFor({ state: 'visible', timeout: TIMEOUT_MS });
    const text = (await msg.textContent()) ?? '';
    console.log(`  message: ${text}`);
    check(/rejected|forbidden|another org/i.test(text), 'the message says the token was refused');
    check((await page.locator(tid('connection-status')).count()) === 0, 'no dashboard shown');
    await page.screenshot({ path: `${SHOTS}signin-rejected-1280x800.png` });
    consoleErrors.push(...errors);
    await context.close();
  }

  log('console');
  for (const e of consoleErrors) console.log(`  ${e}`);
  check(consoleErrors.length === 0, 'no console errors');
} catch (e) {
  failures.push(`${step}: ${e instanceof Error ? e.message : String(e)}`);
} finally {
  await browser.close();
}

if (failures.length) {
  console.error(`\n${failures.length} failed:\n${failures.map((f) => `  ${f}`).join('\n')}`);
  process.exit(1);
}
console.log(`\nall checks passed; screenshots in ${SHOTS}`);
