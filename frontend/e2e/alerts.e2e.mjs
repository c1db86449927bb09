// End-to-end check of the dashboard's alerting (docs/ALERTS.md) against a running gateway, in
// Debian's Chromium. Run by tests/dashboard_e2e.rs after e2e/dashboard.e2e.mjs, on the same
// connector; or by hand (the firing step needs events produced for the org, so it is left out
// without the test's control):
//
//   STREAMTALLY_URL=http://127.0.0.1:8080/ STREAMTALLY_ORG=<org id> STREAMTALLY_TOKEN=<org token> \
//     node e2e/alerts.e2e.mjs
//
// Signs in, opens the Alerts panel, creates a rule in the page (a 400 first: the error is shown
// beside the field it names), asks the test for a spike of "checkout" events and waits for the
// firing banner with the rule's name, the rule's badge and the history; then edits the rule
// (adds a webhook, then saves again with the secret left empty: the server keeps it), mutes and
// unmutes it and deletes it, checking each step through the API. Screenshots go to
// ../target/screenshots/ (alerts-1280x800-firing.png, alerts-390x844.png). Exit code 0 when
// every check passed.

import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { BASE, ORG, TOKEN, SHOTS, TIMEOUT_MS, CONTROL, failures, step, log, check, tid, control, closeControl, api, checkAccessibility } from './harness.mjs';

// The rule's window is the last minute, ending at the current 10-second bucket; the worker
// evaluates every second: the banner is due well within this.
const FIRING_TIMEOUT_MS = 30_000;

const ruleNamed = async (name) => (await api('alerts')).alerts?.find((r) => r.name === name) ?? null;

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
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  // The rule refused on purpose: the browser logs the 400 answer itself.
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !/status of 400/.test(msg.text())) consoleErrors.push(`console: ${msg.text()}`);
  });
  page.on('pageerror', (err) => consoleErrors.push(`page error: ${err.message}`));

  log('sign in and open the Alerts panel');
  await page.goto(BASE, { waitUntil: 'load' });
  await page.locator('#signin-org').fill(ORG);
  await page.locator('#signin-token').fill(TOKEN);
  await page.locator(tid('signin-submit')).click();
  await page.waitForSelector(`${tid('connection-status')}[data-state="open"]`, { timeout: TIMEOUT_MS });
  await page.locator(tid('alerts-toggle')).click();
  await page.locator(tid('alerts-panel')).waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  await page.waitForSelector(`${tid('alert-new')}:not([disabled])`, { timeout: TIMEOUT_MS });
  check(true, 'the panel is open');

  const name = `E2E checkout spike ${Date.now().toString(36)}`;
  log('create a rule: a refused window is shown beside its field');
  await page.locator(tid('alert-new')).click();
  await page.locator(tid('alert-name')).fill(name);
  await page.locator(tid('alert-measure')).selectOption('events');
  await page.locator(tid('alert-event-name')).fill('checkout');
  await page.locator(tid('alert-window')).fill('90m');
  await page.locator(tid('alert-op')).selectOption('above');
  await page.locator(tid('alert-value')).fill('20');
  await page.locator(tid('alert-for-seconds')).fill('0');
  await page.locator(tid('alert-save')).click();
  const formError = page.locator(`${tid('alert-form-error')}[data-field="window"]`);
  await formError.waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  const errorText = (await formError.textContent()) ?? '';
  console.log(`  error: ${errorText}`);
  check(/^Window: .*window.*90m/.test(errorText), 'the 400 names the window field');
  check((await page.locator(tid('alert-window')).getAttribute('aria-invalid')) === 'true', 'the window input is marked invalid');
  check((await ruleNamed(name)) === null, 'nothing was saved');

  log('create the rule: events, event_name checkout, 1m, above 20, for 0 s');
  await page.locator(tid('alert-window')).fill('1m');
  await page.locator(tid('alert-save')).click();
  await page.locator(tid('alert-form')).waitFor({ state: 'detached', timeout: TIMEOUT_MS });
  const created = await ruleNamed(name);
  check(
    created?.measure === 'events' &&
      created.event_name === 'checkout' &&
      created.window === '1m' &&
      created.condition?.op === 'above' &&
      created.condition?.threshold === 20 &&
      created.for_seconds === 0,
    `saved as asked (API: ${JSON.stringify(created && { ...created, state: undefined })})`,
  );
  const row = page.locator(`${tid('alert-rule')}[data-rule-id="${created?.id}"]`);
  await row.waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  const summary = (await row.locator(tid('alert-rule-summary')).textContent()) ?? '';
  check(summary.includes('events (event_name checkout) over 1m, above 20'), `the list summarises it (${summary})`);
  check((await row.getAttribute('data-state')) !== 'firing', `not firing before the spike (${await row.getAttribute('data-state')})`);

  if (CONTROL) {
    log('a spike of 30 checkout events: the firing banner shows the rule');
    await control('produce 30 checkout');
    const t0 = Date.now();
    const banner = page.locator(`${tid('alert-banner')}[data-status="firing"][data-rule-id="${created?.id}"]`);
    try {
      await banner.waitFor({ state: 'visible', timeout: FIRING_TIMEOUT_MS });
      check(true, `the banner is visible ${Date.now() - t0} ms after the produce was acknowledged`);
    } catch {
      check(false, `no firing banner within ${FIRING_TIMEOUT_MS} ms (API state: ${JSON.stringify((await ruleNamed(name))?.state)})`);
    }
    const text = (await banner.textContent().catch(() => '')) ?? '';
    console.log(`  banner: ${text}`);
    check(text.includes(name) && /above 20/.test(text), 'it names the rule and the condition');
    const box = await banner.boundingBox().catch(() => null);
    check(box !== null && box.y < 80, `it is at the top of the page (y ${box?.y})`);
    await page.waitForSelector(`${tid('alert-rule')}[data-rule-id="${created?.id}"][data-state="firing"]`, { timeout: TIMEOUT_MS });
    check((await row.locator(tid('alert-rule-state')).textContent())?.trim() === 'firing', 'the rule’s badge says firing');
    const history = page.locator(`${tid('alert-history-item')}[data-rule-id="${created?.id}"]`);
    await history.first().waitFor({ state: 'visible', timeout: TIMEOUT_MS });
    check((await history.first().textContent())?.includes(name), 'the history lists the firing');
    const apiHistory = (await api('alerts/history')).firings?.filter((f) => f.rule_id === created?.id) ?? [];
    check(apiHistory.length === 1 && apiHistory[0].value > 20, `the API's history has it (${JSON.stringify(apiHistory)})`);
    await page.screenshot({ path: `${SHOTS}alerts-1280x800-firing.png` });
    await checkAccessibility(page, 'the alerts panel with a firing banner');
    await page.locator(tid('alert-banner-dismiss')).first().click();
    await banner.waitFor({ state: 'detached', timeout: TIMEOUT_MS });
    check(true, 'the banner can be dismissed');
  }

  log('edit: add a webhook, then save again with the secret left empty (kept)');
  const renamed = `${name} (edited)`;
  await row.locator(tid('alert-edit')).click();
  await page.locator(tid('alert-name')).fill(renamed);
  await page.locator(tid('alert-webhook-url')).fill('http://127.0.0.1:9/e2e-hook');
  await page.locator(tid('alert-webhook-secret')).fill('e2e secret 0123456789');
  await page.locator(tid('alert-webhook-format')).selectOption('slack');
  await page.locator(tid('alert-save')).click();
  await page.locator(tid('alert-form')).waitFor({ state: 'detached', timeout: TIMEOUT_MS });
  let saved = created && (await api(`alerts/${created.id}`));
  check(
    saved?.name === renamed && saved.contact_points?.[0]?.url === 'http://127.0.0.1:9/e2e-hook' && saved.contact_points[0].secret_set === true && saved.contact_points[0].format === 'slack',
    `renamed, webhook saved (API: ${JSON.stringify(saved?.contact_points)})`,
  );
  await row.locator(tid('alert-edit')).click();
  check((await page.locator(tid('alert-webhook-secret')).inputValue()) === '', 'the secret is never shown');
  await page.locator(tid('alert-value')).fill('25');
  await page.locator(tid('alert-save')).click();
  await page.locator(tid('alert-form')).waitFor({ state: 'detached', timeout: TIMEOUT_MS });
  saved = created && (await api(`alerts/${created.id}`));
  check(saved?.condition?.threshold === 25 && saved.contact_points?.[0]?.secret_set === true, 'saved with the secret left empty: the threshold changed, the webhook kept');

  log('mute for an hour, then unmute');
  await row.locator(tid('alert-mute')).click();
  await page.locator(tid('alert-mute-save')).click();
  await row.locator(tid('alert-rule-muted')).waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  saved = created && (await api(`alerts/${created.id}`));
  const mutedFor = saved?.muted_until ? Date.parse(saved.muted_until) - Date.now() : 0;
  check(mutedFor > 55 * 60_000 && mutedFor <= 61 * 60_000 && saved.state?.muted === true, `muted_until about an hour ahead (${saved?.muted_until})`);
  await row.locator(tid('alert-unmute')).click();
  await row.locator(tid('alert-mute')).waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  saved = created && (await api(`alerts/${created.id}`));
  check(saved?.muted_until === null, 'unmuted (muted_until null)');

  log('phone width: the open panel and form fit');
  await page.setViewportSize({ width: 390, height: 844 });
  await page.locator(tid('alert-new')).click();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `no horizontal scrolling (overflow ${overflow}px)`);
  await page.locator(tid('alert-form')).screenshot({ path: `${SHOTS}alerts-390x844.png` });
  await page.getByRole('button', { name: 'Cancel', exact: true }).click();
  await page.setViewportSize({ width: 1280, height: 800 });

  log('delete the rule');
  await row.locator(tid('alert-delete')).click();
  await row.locator(tid('alert-delete-confirm')).click();
  await row.waitFor({ state: 'detached', timeout: TIMEOUT_MS });
  check((await ruleNamed(renamed)) === null, 'deleted (the API no longer lists it)');

  await context.close();
  log('console');
  for (const e of consoleErrors) console.log(`  ${e}`);
  check(consoleErrors.length === 0, 'no console errors');
} catch (e) {
  failures.push(`${step}: ${e instanceof Error ? e.message : String(e)}`);
} finally {
  await browser.close();
  closeControl();
}

if (failures.length) {
  console.error(`\n${failures.length} failed:\n${failures.map((f) => `  ${f}`).join('\n')}`);
  process.exit(1);
}
console.log(`\nall alert checks passed; screenshots in ${SHOTS}`);
process.exit(0);
