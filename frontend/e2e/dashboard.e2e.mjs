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
import { chromium } from 'playwright-core';
import { BASE, ORG, TOKEN, SHOTS, TIMEOUT_MS, CONTROL, failures, step, log, check, tid, control, closeControl, api, checkAccessibility, createDashboard } from './harness.mjs';

const WRONG_TOKEN = process.env.STREAMTALLY_WRONG_TOKEN || `wrong-${Date.now().toString(36)}`;
const LIVE_UPDATE_MS = 3_000;

/** What the page shows now: card texts, the chart's total and the recent list's names. */
async function shown(page) {
  return page.evaluate(() => {
    const q = (id) => document.querySelector(`[data-testid="${id}"]`);
    const card = (id) => q(`${id}-value`)?.textContent?.trim() ?? '';
    return {
      events5m: card('card-events-5m'),
      eventsToday: card('card-events-today'),
      chartTotal: Number(q('chart-timeseries')?.getAttribute('data-total') ?? 0),
      recentNames: [...document.querySelectorAll('[data-testid="recent-event"]')].map((e) => e.textContent ?? ''),
    };
  });
}

/** Waits until the cards, the chart total and the recent list all show `n` more events named `name`. */
async function waitForEvents(page, before, name, n, timeout) {
  await page.waitForFunction(
    ({ before, name, n }) => {
      const q = (id) => document.querySelector(`[data-testid="${id}"]`);
      const total = Number(q('chart-timeseries')?.getAttribute('data-total') ?? 0);
      const recent = [...document.querySelectorAll('[data-testid="recent-event"]')].filter((e) =>
        (e.textContent ?? '').includes(name),
      ).length;
      const card = (id) => q(`${id}-value`)?.textContent?.trim() ?? '';
      return (
        total >= before.chartTotal + n &&
        // Updates carry at most 10 of the new events (the rest are counted: "N new events").
        recent >= Math.min(n, 10) &&
        card('card-events-today') !== before.eventsToday &&
        card('card-events-5m') !== before.events5m
      );
    },
    { before, name, n },
    { timeout, polling: 50 },
  );
}

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
    // While the connector is down (on purpose) the browser logs the refused requests itself.
    let outage = false;
    // ... and the explorer's search that the server refuses on purpose (a 400).
    let refusing = false;
    const errors = watchConsole(
      page,
      'desktop',
      (text) => (outage && /ERR_CONNECTION_REFUSED/.test(text)) || (refusing && /status of 400/.test(text)),
    );

    log('desktop: sign in with the form');
    await signIn(page, TOKEN);
    const paint = await page.evaluate(
      () => performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null,
    );
    console.log(`  first contentful paint (sign-in page): ${paint === null ? 'not reported' : `${paint.toFixed(0)} ms`}`);
    const signedIn = Date.now();
    await waitForData(page);
    console.log(`  sign-in to live data shown: ${Date.now() - signedIn} ms`);
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
    log('desktop: accessibility (axe-core) of the dashboard with data');
    await checkAccessibility(page, 'the dashboard');

    if (CONTROL) {
      log(`desktop: events produced now show in the cards, the chart and the recent list within ${LIVE_UPDATE_MS} ms`);
      const before = await shown(page);
      await control('produce 25 e2e_live_update');
      const t0 = Date.now();
      try {
        await waitForEvents(page, before, 'e2e_live_update', 25, LIVE_UPDATE_MS);
        check(true, `updated ${Date.now() - t0} ms after the produce was acknowledged`);
      } catch {
        check(false, `not updated within ${LIVE_UPDATE_MS} ms: before ${JSON.stringify({ ...before, recentNames: undefined })}, now ${JSON.stringify({ ...(await shown(page)), recentNames: undefined })}`);
      }
      const after = await shown(page);
      check(after.chartTotal === before.chartTotal + 25, `chart total ${before.chartTotal} -> ${after.chartTotal} (+25)`);
      check(!after.recentNames.some((t) => t.includes('other_org_event')), "another org's events never show");
    }

    log('desktop: saved dashboards: create, rename, edit the layout, delete');
    {
      const name = `E2E board ${Date.now().toString(36)}`;
      await createDashboard(page, name);
      const created = (await api('dashboards')).dashboards?.find((d) => d.name === name);
      check(!!created, `"${name}" is saved (API lists it)`);

      const renamed = `${name} renamed`;
      await page.getByRole('button', { name: 'Rename', exact: true }).click();
      await page.locator(tid('dashboard-name')).fill(renamed);
      await page.getByRole('button', { name: 'Rename', exact: true }).click();
      await page.waitForFunction(
        (name) => document.querySelector('[data-testid="dashboard-select"]')?.selectedOptions[0]?.textContent === name,
        renamed,
        { timeout: TIMEOUT_MS },
      );
      const afterRename = created && (await api(`dashboards/${created.id}`));
      check(afterRename?.name === renamed, `renamed (API: ${afterRename?.name})`);

      await page.getByRole('button', { name: 'Edit layout', exact: true }).click();
      // Drag the last widget (the recent list, at the bottom) onto the first one.
      const order = afterRename.widgets.slice().sort((a, b) => a.y - b.y || a.x - b.x);
      const [top, last] = [order[0], order[order.length - 1]];
      // The drag events with one DataTransfer, as the browser sends them for a drag.
      const transfer = await page.evaluateHandle(() => new DataTransfer());
      const from = `section[data-widget-id="${last.id}"]`;
      const onto = `section[data-widget-id="${top.id}"]`;
      await page.dispatchEvent(from, 'dragstart', { dataTransfer: transfer });
      await page.dispatchEvent(onto, 'dragenter', { dataTransfer: transfer });
      await page.dispatchEvent(onto, 'dragover', { dataTransfer: transfer });
      await page.dispatchEvent(onto, 'drop', { dataTransfer: transfer });
      await page.dispatchEvent(from, 'dragend', { dataTransfer: transfer });
      await page.screenshot({ path: `${SHOTS}desktop-1280x800-layout-drag.png` });
      await page.locator(tid('layout-save')).click();
      await page.locator(tid('layout-save')).waitFor({ state: 'detached', timeout: TIMEOUT_MS });
      const saved = created && (await api(`dashboards/${created.id}`));
      const dropped = saved?.widgets?.find((w) => w.id === last.id);
      check(saved?.widgets?.length === afterRename?.widgets?.length, `layout saved with its ${saved?.widgets?.length} widgets`);
      check(dropped?.x === top.x && dropped?.y === 0, `the dragged widget (${last.id}) took the first one's place (${dropped?.x}, ${dropped?.y})`);
      const ws = saved?.widgets ?? [];
      const overlapping = ws.some((a, i) => ws.some((b, j) => i < j && a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h));
      // No holes: no widget could move up a row without landing on another.
      const hanging = ws.filter(
        (w) => w.y > 0 && !ws.some((o) => o !== w && o.x < w.x + w.w && w.x < o.x + o.w && o.y + o.h === w.y),
      );
      check(!overlapping && hanging.length === 0, `no widget over another, none hanging over a hole (${hanging.map((w) => w.id).join(', ') || 'none'})`);

      // The keyboard's way: "Move down" on the first widget changes places with the next one.
      await page.getByRole('button', { name: 'Edit layout', exact: true }).click();
      const firstId = ws.slice().sort((a, b) => a.y - b.y || a.x - b.x)[0].id;
      await page.locator(`section[data-widget-id="${firstId}"]`).getByRole('button', { name: /^Move down: / }).click();
      await page.locator(tid('layout-save')).click();
      await page.locator(tid('layout-save')).waitFor({ state: 'detached', timeout: TIMEOUT_MS });
      const after = await api(`dashboards/${created.id}`);
      const stepped = after.widgets.slice().sort((a, b) => a.y - b.y || a.x - b.x);
      const next = ws.slice().sort((a, b) => a.y - b.y || a.x - b.x)[1].id;
      check(
        stepped[0].id === next && stepped.findIndex((w) => w.id === firstId) > 0,
        `"Move down": ${next} took ${firstId}'s place (order now ${stepped.map((w) => w.id).join(' ')})`,
      );

      await page.reload({ waitUntil: 'load' });
      await waitForData(page);
      const selectedName = await page.evaluate(
        () => document.querySelector('[data-testid="dashboard-select"]')?.selectedOptions[0]?.textContent,
      );
      check(selectedName === renamed, `after a reload the saved dashboard is still selected (${selectedName})`);
      const ys = await page.evaluate(() =>
        Object.fromEntries(
          [...document.querySelectorAll('section[data-widget-id]')].map((s) => [
            s.getAttribute('data-widget-id'),
            Number(s.style.getPropertyValue('--y')) - 1,
          ]),
        ),
      );
      check(
        after.widgets.every((w) => ys[w.id] === w.y),
        'the page lays the widgets out as saved',
      );
      await page.screenshot({ path: `${SHOTS}desktop-1280x800-dashboard.png` });

      await page.getByRole('button', { name: 'Delete', exact: true }).click();
      await page.getByRole('alertdialog').getByRole('button', { name: 'Delete', exact: true }).click();
      await page.waitForFunction(
        () => document.querySelector('[data-testid="dashboard-select"]')?.value === 'overview',
        undefined,
        { timeout: TIMEOUT_MS },
      );
      const left = (await api('dashboards')).dashboards?.filter((d) => d.name === renamed) ?? [];
      check(left.length === 0, 'deleted (the API no longer lists it)');
    }

    log('desktop: expand an event\'s properties');
    const first = page.locator(`${tid('recent-event')} details summary`).first();
    if ((await first.count()) > 0) {
      await first.click();
      check(await page.locator(`${tid('recent-event')} details[open] pre`).first().isVisible(), 'properties are shown');
    } else {
      console.log('  (the newest events have no properties)');
    }

    log('desktop: the explorer: an opened event pauses the list; new events are counted until asked for');
    const mode = () => page.locator(tid('recent-events')).getAttribute('data-mode');
    const listed = () => page.$$eval('[data-testid="recent-event"]', (els) => els.map((e) => e.getAttribute('data-id')));
    if ((await first.count()) > 0) check((await mode()) === 'paused', 'opening an event paused the list');
    else await page.locator(tid('explorer-pause')).click();
    if (CONTROL) {
      const idsBefore = await listed();
      await control('produce 30 e2e_explorer_new');
      await page.waitForFunction(
        () => Number((document.querySelector('[data-testid="explorer-new"]')?.textContent ?? '').replace(/\D/g, '')) >= 30,
        undefined,
        { timeout: TIMEOUT_MS },
      );
      check(JSON.stringify(await listed()) === JSON.stringify(idsBefore), `the paused list did not move (${(await page.locator(tid('explorer-new')).textContent())?.trim()})`);
      await page.screenshot({ path: `${SHOTS}desktop-1280x800-explorer-paused.png` });
      await page.locator(tid('explorer-new')).click();
      await page.waitForFunction(() => document.querySelector('[data-testid="recent-events"]')?.getAttribute('data-mode') === 'live', undefined, { timeout: TIMEOUT_MS });
      const names = await page.$$eval('[data-testid="recent-event"] .recent-name', (els) => els.map((e) => e.textContent));
      check(names.includes('e2e_explorer_new'), '"N new events" shows them (back to live)');
    } else {
      await page.locator(tid('explorer-resume')).click();
    }

    log('desktop: the explorer searches the stored events by name and by property, and pages back');
    const searchFor = async (kind, text) => {
      await page.locator(tid('explorer-search-kind')).selectOption(kind);
      await page.locator(tid('explorer-search-input')).fill(text);
      await page.locator(tid('explorer-search')).click();
      await page.waitForFunction(
        () => {
          const r = document.querySelector('[data-testid="recent-events"]');
          return r?.getAttribute('data-mode') === 'stored' && !r.textContent?.includes('Loading');
        },
        undefined,
        { timeout: TIMEOUT_MS },
      );
    };
    const searchName = (await page.locator(`${tid('recent-event')} .recent-name`).first().textContent())?.trim() ?? '';
    await searchFor('name', searchName);
    const byName = await api(`events?limit=50&event=${encodeURIComponent(searchName)}`);
    check(
      JSON.stringify(await listed()) === JSON.stringify(byName.events.map((e) => e.id)),
      `search by name "${searchName}": the ${byName.events.length} events GET .../events answers, in its order`,
    );
    await searchFor('property', 'plan = pro');
    const page1 = await api(`events?limit=50&filter=${encodeURIComponent('properties.plan = pro')}`);
    check(JSON.stringify(await listed()) === JSON.stringify(page1.events.map((e) => e.id)), `search by property plan = pro: ${page1.events.length} events as the API`);
    if (page1.next) {
      await page.locator(tid('explorer-older')).click();
      const page2 = await api(`events?limit=50&filter=${encodeURIComponent('properties.plan = pro')}&after=${encodeURIComponent(page1.next)}`);
      await page.waitForFunction((n) => document.querySelectorAll('[data-testid="recent-event"]').length === n, page1.events.length + page2.events.length, { timeout: TIMEOUT_MS });
      check(
        JSON.stringify(await listed()) === JSON.stringify([...page1.events, ...page2.events].map((e) => e.id)),
        `"Older events" appends the next page (${page2.events.length} more)`,
      );
    }
    await page.screenshot({ path: `${SHOTS}desktop-1280x800-explorer-search.png` });
    refusing = true;
    await searchFor('property', 'plan ~ pro');
    refusing = false;
    const refused = (await page.locator(tid('explorer-error')).textContent())?.trim() ?? '';
    check(refused.includes('filter'), `a refused search says why: ${refused}`);
    await page.locator(tid('explorer-resume')).click();
    check((await mode()) === 'live', 'back to live');

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
        const n = Number(c?.getAttribute('data-points'));
        return c?.getAttribute('data-granularity') === 'minute' && n >= 60 && n <= 61;
      },
      undefined,
      { timeout: TIMEOUT_MS },
    );
    check(true, 'the last hour per minute (60 or 61 points, the live trend)');

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

    if (CONTROL) {
      log('desktop: the connector is killed; the page says so, reconnects when it is back, and catches up');
      await page.locator(tid('range-select')).selectOption('24h');
      await waitForData(page);
      const before = await shown(page);
      outage = true;
      await control('kill');
      await page.waitForSelector(`${tid('connection-status')}:not([data-state="open"])`, { timeout: TIMEOUT_MS });
      const state = await page.locator(tid('connection-status')).getAttribute('data-state');
      const words = (await page.locator(tid('connection-status')).textContent())?.trim();
      check(state !== 'rejected' && state !== 'stopped', `the indicator shows the outage (${state}: ${words})`);
      await page.screenshot({ path: `${SHOTS}desktop-1280x800-reconnecting.png` });
      await control('produce 15 e2e_while_down');
      await control('start');
      const t0 = Date.now();
      await page.waitForSelector(`${tid('connection-status')}[data-state="open"]`, { timeout: 30_000 });
      console.log(`  reconnected ${Date.now() - t0} ms after the gateway was back`);
      outage = false;
      try {
        await waitForEvents(page, before, 'e2e_while_down', 15, 30_000);
        check(true, `caught up: the 15 events produced while it was down show (${Date.now() - t0} ms after restart)`);
      } catch {
        check(false, `did not catch up: before ${JSON.stringify({ ...before, recentNames: undefined })}, now ${JSON.stringify({ ...(await shown(page)), recentNames: undefined })}`);
      }
    }

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
  closeControl(); // else the open stdin keeps Node running
}

if (failures.length) {
  console.error(`\n${failures.length} failed:\n${failures.map((f) => `  ${f}`).join('\n')}`);
  process.exit(1);
}
console.log(`\nall checks passed; screenshots in ${SHOTS}`);
process.exit(0);
