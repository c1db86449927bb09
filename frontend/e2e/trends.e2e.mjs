// End-to-end check of the Trends panel and the real-time chart against a running gateway, in
// Debian's Chromium. Run by tests/dashboard_e2e.rs after e2e/alerts.e2e.mjs, on the same
// connector; or by hand (without the test's control no events are produced during the
// bandwidth measurement):
//
//   STREAMTALLY_URL=http://127.0.0.1:8080/ STREAMTALLY_ORG=<org id> STREAMTALLY_TOKEN=<org token> \
//     node e2e/trends.e2e.mjs
//
// Signs in, waits for the real-time chart (the last 60 minutes per minute), builds a trend
// (last 7 days per day, filter properties.plan = pro, breakdown event_name) and requires the
// chart's numbers to equal what GET .../trends answers for the same parameters; a refused
// filter (user_id > 5) must be shown in its row with the old answer marked stale; switches the
// zone (Asia/Kolkata) and compares again; turns on "compare with previous period"; reloads and
// requires the same view from the URL; downloads the CSV; checks the phone width; measures the
// WebSocket bytes received per second over 10 s at 500 events/s (the demo's default rate, events
// of the demo's shape) and prints `ws_bytes_per_s=<n>` (goal <= 10 KB/s). Screenshots
// go to ../target/screenshots/ (trends-1280x800.png, trends-1280x800-compare.png,
// trends-390x844.png, trends-1280x800-dark.png, trends-widget-1280x800.png); saves the question
// as a trend widget of a new dashboard and requires the widget's total to equal REST. Exit
// code 0 when every check passed.

import { mkdirSync, readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { BASE, ORG, TOKEN, SHOTS, TIMEOUT_MS, CONTROL, failures, step, log, check, tid, control, closeControl, sleep, api, checkAccessibility, createDashboard } from './harness.mjs';

/** The REST answer to the panel's question (a live range: from = now - 7 d, to = now). */
async function restTrend({ tz = null, compare = false, hours = 7 * 24, granularity = 'day' } = {}) {
  const now = Date.now();
  const q = new URLSearchParams();
  q.set('from', String(now - hours * 3_600_000));
  q.set('to', String(now));
  q.set('granularity', granularity);
  q.append('filter', 'properties.plan = pro');
  q.set('breakdown', 'event_name');
  q.set('breakdown_limit', '5');
  if (tz) q.set('tz', tz);
  if (compare) q.set('compare', 'previous');
  return api(`trends?${q}`);
}

/** What the page shows: the chart's attributes and each legend row. */
async function shown(page) {
  return page.evaluate(() => {
    const chart = document.querySelector('[data-testid="trend-chart"]');
    const panel = document.querySelector('[data-testid="trends-panel"]');
    const rows = [...document.querySelectorAll('[data-testid="trend-series"]')].map((r) => [
      r.getAttribute('data-value'),
      Number(r.getAttribute('data-total')),
    ]);
    return {
      state: panel?.getAttribute('data-state') ?? null,
      total: chart ? Number(chart.getAttribute('data-total')) : null,
      previousTotal: chart?.getAttribute('data-previous-total') ?? '',
      buckets: chart ? Number(chart.getAttribute('data-buckets')) : null,
      zone: chart?.getAttribute('data-time-zone') ?? null,
      stale: chart?.getAttribute('data-stale') ?? null,
      filters: chart?.getAttribute('data-filters') ?? null,
      breakdown: chart?.getAttribute('data-breakdown') ?? null,
      compare: chart?.getAttribute('data-compare') ?? null,
      lines: chart ? Number(chart.getAttribute('data-lines')) : null,
      firstLabel: chart?.getAttribute('data-first-label') ?? null,
      rows,
    };
  });
}

const restRows = (body) => body.series.map((s) => [s.breakdown_value ?? '', s.total]);
const sum = (series) => series.reduce((a, s) => a + s.total, 0);

/** Waits until the page's answer equals the REST one (the live trend may settle for a push or two). */
async function sameAsRest(page, opts, what) {
  const started = Date.now();
  let page_ = null;
  let rest = null;
  while (Date.now() - started < TIMEOUT_MS) {
    page_ = await shown(page);
    rest = await restTrend(opts);
    if (
      page_.state === 'ready' &&
      page_.total === sum(rest.series) &&
      page_.buckets === rest.buckets.length &&
      page_.zone === rest.time_zone &&
      JSON.stringify(page_.rows) === JSON.stringify(restRows(rest)) &&
      (!opts.compare || page_.previousTotal === String(sum(rest.previous.series)))
    )
      break;
    await sleep(300);
  }
  console.log(`  page: ${JSON.stringify(page_)}`);
  console.log(`  REST: total ${sum(rest.series)}, buckets ${rest.buckets.length}, zone ${rest.time_zone}, rows ${JSON.stringify(restRows(rest))}${opts.compare ? `, previous ${sum(rest.previous.series)}` : ''}`);
  check(page_.total === sum(rest.series) && page_.total > 0, `${what}: the chart's total equals the REST answer (${page_.total})`);
  check(page_.buckets === rest.buckets.length, `${what}: the same ${rest.buckets.length} buckets`);
  check(JSON.stringify(page_.rows) === JSON.stringify(restRows(rest)), `${what}: every breakdown series' total equals the REST answer`);
  check(page_.zone === rest.time_zone, `${what}: the zone ${rest.time_zone}`);
  if (opts.compare) check(page_.previousTotal === String(sum(rest.previous.series)), `${what}: the previous period's total equals the REST answer (${page_.previousTotal})`);
  return { page: page_, rest };
}

/** REST trends in `tz` (a live range ending now), with `filters` (conditions). */
async function restZoned(tz, params, filters = []) {
  const now = Date.now();
  const q = new URLSearchParams({ ...params, tz, to: String(now) });
  for (const f of filters) q.append('filter', f);
  return api(`trends?${q}`);
}

const lastOf = (s) => (s && s.values.length ? s.values[s.values.length - 1] : 0);

/**
 * The dashboard in a zone other than UTC: the line (last 24 hours per hour), the top events and
 * the "today" cards are that zone's, labelled with it, and equal to GET .../trends in the zone.
 */
async function zonedDashboardSameAsRest(page, tz, filters = []) {
  const started = Date.now();
  let got = null;
  let want = null;
  while (Date.now() - started < TIMEOUT_MS) {
    got = await page.evaluate(() => {
      const q = (id) => document.querySelector(`[data-testid="${id}"]`);
      const line = q('chart-timeseries');
      return {
        eventsToday: q('card-events-today')?.getAttribute('data-value') ?? null,
        eventsTodayTitle: q('card-events-today')?.querySelector('.widget-title')?.textContent ?? '',
        usersToday: q('card-unique-users-today')?.getAttribute('data-value') ?? null,
        lineZone: line?.getAttribute('data-zone') ?? null,
        lineTotal: line ? Number(line.getAttribute('data-total')) : null,
        linePoints: line ? Number(line.getAttribute('data-points')) : null,
        lineFirst: line?.getAttribute('data-first-label') ?? '',
        bars: Number(q('chart-top-events')?.getAttribute('data-bars') ?? -1),
        titles: [...document.querySelectorAll('.widget-title')].map((h) => h.textContent ?? ''),
      };
    });
    const now = Date.now();
    const [line, top, users] = await Promise.all([
      restZoned(tz, { from: String(now - 86_400_000), granularity: 'hour' }, filters),
      restZoned(tz, { from: String(now - 1000), granularity: 'day', breakdown: 'event_name', breakdown_limit: '10' }, filters),
      restZoned(tz, { from: String(now - 1000), granularity: 'day', measure: 'unique_users' }, filters),
    ]);
    want = {
      eventsToday: String(top.series.reduce((a, s) => a + lastOf(s), 0)),
      usersToday: String(lastOf(users.series[0])),
      lineTotal: line.series[0]?.total ?? 0,
      linePoints: line.buckets.length,
      bars: top.series.filter((s) => !s.other && lastOf(s) > 0).length,
      zone: line.time_zone,
      firstBucket: line.buckets[0] ?? '',
    };
    if (got.eventsToday === want.eventsToday && got.usersToday === want.usersToday && got.lineTotal === want.lineTotal && got.linePoints === want.linePoints && got.bars === want.bars)
      break;
    await sleep(300);
  }
  console.log(`  page: ${JSON.stringify(got)}`);
  console.log(`  REST: ${JSON.stringify(want)}`);
  check(want.zone === tz, `the REST answers are in ${tz}`);
  check(got.eventsToday === want.eventsToday && Number(got.eventsToday) > 0, `"Events today" is today in ${tz} (${got.eventsToday} = ${want.eventsToday})`);
  check(got.usersToday === want.usersToday, `"Unique users today" is today in ${tz} (${got.usersToday} = ${want.usersToday})`);
  check(got.lineTotal === want.lineTotal && got.linePoints === want.linePoints, `the line is ${tz}'s hours (${got.linePoints} points, ${got.lineTotal} events)`);
  check(got.bars === want.bars, `the top events are today's in ${tz} (${got.bars} bars)`);
  check(got.lineZone === tz && got.eventsTodayTitle.includes(tz), `the line and the cards are labelled ${tz}`);
  check(!got.titles.some((t) => t.includes('(UTC)')), 'no widget is labelled UTC');
  return { ...got, want };
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});
mkdirSync(SHOTS, { recursive: true });
const consoleErrors = [];

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  const page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() === 'error') consoleErrors.push(`console: ${msg.text()}`);
  });
  page.on('pageerror', (err) => consoleErrors.push(`page error: ${err.message}`));
  // Bytes of every WebSocket frame the page receives.
  let wsBytes = 0;
  page.on('websocket', (ws) => {
    ws.on('framereceived', (f) => {
      wsBytes += typeof f.payload === 'string' ? Buffer.byteLength(f.payload) : f.payload.length;
    });
  });

  log('sign in: the real-time chart shows the last 60 minutes per minute');
  await page.goto(BASE, { waitUntil: 'load' });
  await page.locator('#signin-org').fill(ORG);
  await page.locator('#signin-token').fill(TOKEN);
  await page.locator(tid('signin-submit')).click();
  await page.waitForSelector(`${tid('connection-status')}[data-state="open"]`, { timeout: TIMEOUT_MS });
  const rt = page.locator(tid('chart-realtime'));
  await rt.waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  const rtBuckets = Number(await rt.getAttribute('data-buckets'));
  check((await rt.getAttribute('data-granularity')) === 'minute', 'per minute');
  check(rtBuckets >= 60 && rtBuckets <= 61, `60 or 61 minute buckets (${rtBuckets})`);
  check(Number(await rt.getAttribute('data-total')) > 0, `events in the last hour (${await rt.getAttribute('data-total')})`);

  log('build a trend: last 7 days per day, properties.plan = pro, breakdown event_name (top 5)');
  const panel = page.locator(tid('trends-panel'));
  await panel.scrollIntoViewIfNeeded();
  await page.locator(tid('trend-range')).selectOption('7d');
  await page.locator(tid('trend-granularity')).selectOption('day');
  await page.locator(tid('trend-filter-add')).click();
  const row0 = page.locator(tid('trend-filter')).nth(0);
  await row0.locator(tid('trend-filter-key')).fill('plan');
  await row0.locator(tid('trend-filter-op')).selectOption('=');
  await row0.locator(tid('trend-filter-value')).fill('pro');
  await page.locator(tid('trend-breakdown')).selectOption('event_name');
  await page.locator(tid('trend-breakdown-limit')).fill('5');
  await page.locator(tid('trend-breakdown-limit')).dispatchEvent('change');
  await page.locator(tid('trend-apply')).click();
  await page.waitForSelector(`${tid('trend-chart')}[data-filters="properties.plan = pro"][data-breakdown="event_name"]`, { timeout: TIMEOUT_MS });
  const first = await sameAsRest(page, {}, 'UTC (org default)');
  await panel.screenshot({ path: `${SHOTS}trends-1280x800.png` });
  await checkAccessibility(page, 'the trends panel with a filter and a breakdown');

  log('a refused filter (user_id > 5) is shown in its row; the old answer stays, marked stale');
  await page.locator(tid('trend-filter-add')).click();
  const row1 = page.locator(tid('trend-filter')).nth(1);
  await row1.locator(tid('trend-filter-field')).selectOption('user_id');
  await row1.locator(tid('trend-filter-op')).selectOption('>');
  await row1.locator(tid('trend-filter-value')).fill('5');
  await page.locator(tid('trend-apply')).click();
  const err = row1.locator(tid('trend-error'));
  await err.waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  console.log(`  error: ${await err.textContent()}`);
  check((await err.getAttribute('data-control')) === 'filter', 'the error names the filter');
  const staleView = await shown(page);
  check(staleView.stale === 'true' && staleView.filters === 'properties.plan = pro', 'the old answer is marked stale and keeps its own filters');
  check(await page.locator(tid('trend-stale')).isVisible(), 'a note says so');
  await row1.getByRole('button', { name: 'Remove filter 2' }).click();
  await page.waitForSelector(`${tid('trend-chart')}[data-stale="false"]`, { timeout: TIMEOUT_MS });
  check(true, 'removing the row brings the live answer back');

  log('switch the zone to Asia/Kolkata (+05:30)');
  await page.locator(tid('tz-select')).selectOption('Asia/Kolkata');
  await page.waitForSelector(`${tid('trend-chart')}[data-time-zone="Asia/Kolkata"]`, { timeout: TIMEOUT_MS });
  const kolkata = await sameAsRest(page, { tz: 'Asia/Kolkata' }, 'Asia/Kolkata');
  check(kolkata.page.firstLabel !== first.page.firstLabel || kolkata.rest.buckets[0] !== first.rest.buckets[0], `labels in the new zone (${first.page.firstLabel} -> ${kolkata.page.firstLabel})`);
  check((await page.locator(tid('trend-zone')).textContent())?.includes('Asia/Kolkata'), 'the zone is labelled');
  check((await page.locator(tid('chart-realtime')).getAttribute('data-time-zone')) === 'Asia/Kolkata', 'the real-time chart follows the zone');
  log('the dashboard follows the zone: line, top events and "today" in Asia/Kolkata');
  const zoned = await zonedDashboardSameAsRest(page, 'Asia/Kolkata');
  // Kolkata's hours are :30 UTC: the first point is labelled with the zone's clock, as REST names it.
  check(zoned.want.firstBucket.endsWith(':00+05:30') && zoned.lineFirst.endsWith(zoned.want.firstBucket.slice(11, 16)), `the line's first hour in Asia/Kolkata (${zoned.lineFirst}; REST ${zoned.want.firstBucket})`);
  await page.screenshot({ path: `${SHOTS}desktop-1280x800-zone-kolkata.png`, fullPage: true });

  log('CSV of any widget: the line, the top events, a card and the recent list, as shown');
  {
    const csvOfWidget = async (testId) => {
      const [dl] = await Promise.all([page.waitForEvent('download', { timeout: TIMEOUT_MS }), page.locator(tid(testId)).first().click()]);
      return { name: dl.suggestedFilename(), rows: readFileSync(await dl.path(), 'utf8').trimEnd().split('\r\n') };
    };
    const ids = await page.evaluate(() =>
      Object.fromEntries([...document.querySelectorAll('section[data-widget-id]')].map((s) => [s.className.replace(/.*widget-(\w+).*/, '$1'), s.getAttribute('data-widget-id')])),
    );
    const lineAttrs = await page.evaluate(() => {
      const c = document.querySelector('[data-testid="chart-timeseries"]');
      return { points: Number(c?.getAttribute('data-points')), total: Number(c?.getAttribute('data-total')) };
    });
    const line = await csvOfWidget(`widget-csv-${ids.line}`);
    const lineEvents = line.rows.slice(1).reduce((a, r) => a + Number(r.split(',')[2]), 0);
    console.log(`  ${line.name}: ${line.rows.length} lines; ${line.rows[0]}; ${line.rows[1]}`);
    check(line.rows[0].includes('bucket_start (Asia/Kolkata)') && line.rows.length === lineAttrs.points + 1 && lineEvents === lineAttrs.total, `the line's CSV: a row per bucket in Asia/Kolkata, ${lineEvents} events as drawn (${lineAttrs.total})`);
    const bars = Number(await page.locator(tid('chart-top-events')).getAttribute('data-bars'));
    const top = await csvOfWidget(`widget-csv-${ids.bar}`);
    console.log(`  ${top.name}: ${top.rows.join(' | ')}`);
    check(top.rows[0] === 'date,event_name,count' && top.rows.length === bars + 1, `the top events' CSV: ${bars} rows`);
    const card = await csvOfWidget('widget-csv-w3');
    console.log(`  ${card.name}: ${card.rows.join(' | ')}`);
    check(card.rows.length === 2 && card.rows[0] === 'metric,value,note', "a card's CSV: its title and value");
    const recentCount = await page.locator(tid('recent-event')).count();
    const recent = await csvOfWidget('explorer-csv');
    check(recent.rows.length >= recentCount + 1 && recent.rows[0].startsWith('timestamp,event_name'), `the recent list's CSV: ${recent.rows.length - 1} events`);
  }

  log('page filters: properties.plan = pro narrows the line, the top events and the "today" cards');
  await page.locator(tid('page-filter-add')).click();
  await page.locator(tid('page-filter-condition')).first().fill('properties.plan = pro');
  await page.locator(tid('page-filter-apply')).click();
  await page.waitForSelector(`${tid('page-filters')}[data-active="1"]`, { timeout: TIMEOUT_MS });
  const pro = await zonedDashboardSameAsRest(page, 'Asia/Kolkata', ['properties.plan = pro']);
  check(Number(pro.eventsToday) < Number(zoned.eventsToday), `fewer events today with the filter (${pro.eventsToday} < ${zoned.eventsToday})`);
  const fiveMin = (await page.locator(tid('card-events-5m')).textContent()) ?? '';
  check(fiveMin.includes("the page's filters do not apply"), 'the 5-minute card says the filters do not apply to it');
  check(((await page.locator(tid('card-events-today')).textContent()) ?? '').includes('properties.plan = pro'), 'the "today" card names the filter');
  check(new URL(page.url()).hash.includes('pf=properties.plan'), `the URL holds the page filter (${new URL(page.url()).hash})`);
  await page.screenshot({ path: `${SHOTS}desktop-1280x800-page-filter.png`, fullPage: true });
  log('a refused condition is shown beside the page filters');
  await page.locator(tid('page-filter-condition')).first().fill('plan = pro');
  await page.locator(tid('page-filter-apply')).click();
  const pfErr = page.locator(tid('page-filter-error'));
  await pfErr.waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  const pfText = (await pfErr.textContent()) ?? '';
  console.log(`  error: ${pfText}`);
  check(pfText.includes('filter') && pfText.includes('plan = pro'), 'the error names the filter and its value');
  check((await page.locator(tid('card-events-today')).getAttribute('data-value')) === '', 'no old number under the refused filter');
  await page.locator(tid('page-filter-clear')).click();
  await page.waitForSelector(`${tid('page-filters')}[data-active="0"]`, { timeout: TIMEOUT_MS });

  log('compare with the previous period: the line draws the previous 24 hours dashed, the cards compare');
  await page.locator(tid('page-compare')).check();
  let cmp = null;
  let restPrev = null;
  const startedCmp = Date.now();
  while (Date.now() - startedCmp < TIMEOUT_MS) {
    cmp = await page.evaluate(() => {
      const line = document.querySelector('[data-testid="chart-timeseries"]');
      return {
        previousTotal: line?.getAttribute('data-previous-total') ?? '',
        total: Number(line?.getAttribute('data-total') ?? -1),
        rangeCard: document.querySelector('[data-testid="card-unique-users-range"]')?.textContent ?? '',
        todayCard: document.querySelector('[data-testid="card-events-today"]')?.textContent ?? '',
      };
    });
    const rest = await restZoned('Asia/Kolkata', { from: String(Date.now() - 86_400_000), granularity: 'hour', compare: 'previous' });
    restPrev = { total: rest.series[0]?.total ?? 0, previous: rest.previous.series.reduce((a, x) => a + x.total, 0) };
    if (cmp.previousTotal === String(restPrev.previous) && cmp.total === restPrev.total) break;
    await sleep(300);
  }
  console.log(`  page: ${JSON.stringify(cmp)}`);
  console.log(`  REST: ${JSON.stringify(restPrev)}`);
  check(cmp.previousTotal === String(restPrev.previous) && cmp.total === restPrev.total, `the line's previous period equals REST compare=previous (${cmp.previousTotal} = ${restPrev.previous})`);
  check(cmp.todayCard.includes('yesterday (whole day)'), '"Events today" shows yesterday');
  check(new URL(page.url()).hash.includes('pc=1'), 'the URL holds the comparison');
  await page.screenshot({ path: `${SHOTS}desktop-1280x800-compare.png`, fullPage: true });
  await page.locator(tid('page-compare')).uncheck();

  log('a page breakdown by event name: the line is events per name, equal to REST');
  await page.locator(tid('page-breakdown')).fill('event_name');
  await page.locator(tid('page-filter-apply')).click();
  const split = tid('chart-timeseries');
  await page.waitForSelector(`${split}[data-breakdown="event_name"]`, { timeout: TIMEOUT_MS });
  let splitGot = null;
  let splitWant = null;
  const startedSplit = Date.now();
  while (Date.now() - startedSplit < TIMEOUT_MS) {
    splitGot = await page.evaluate(() => {
      const c = document.querySelector('[data-testid="chart-timeseries"]');
      return { total: Number(c?.getAttribute('data-total')), buckets: Number(c?.getAttribute('data-buckets')), lines: Number(c?.getAttribute('data-lines')), zone: c?.getAttribute('data-time-zone') };
    });
    const rest = await restZoned('Asia/Kolkata', { from: String(Date.now() - 86_400_000), granularity: 'hour', breakdown: 'event_name', breakdown_limit: '5' });
    splitWant = { total: sum(rest.series), buckets: rest.buckets.length, lines: rest.series.length };
    if (splitGot.total === splitWant.total && splitGot.buckets === splitWant.buckets) break;
    await sleep(300);
  }
  console.log(`  page: ${JSON.stringify(splitGot)}; REST ${JSON.stringify(splitWant)}`);
  check(splitGot.total === splitWant.total && splitGot.buckets === splitWant.buckets && splitGot.total > 0, `the broken-down line equals REST (${splitGot.total} events, ${splitGot.buckets} hours)`);
  check(splitGot.lines >= 2 && splitGot.zone === 'Asia/Kolkata', `a line per event name in Asia/Kolkata (${splitGot.lines})`);
  check(await page.locator(tid('page-breakdown-note')).isVisible(), 'the note says which widgets the breakdown does not reach');
  await page.screenshot({ path: `${SHOTS}desktop-1280x800-page-breakdown.png`, fullPage: true });
  await page.locator(tid('page-filter-clear')).click();
  await page.waitForSelector(`${tid('page-filters')}[data-active="0"]`, { timeout: TIMEOUT_MS });

  log('compare with the previous period');
  await page.locator(tid('trend-compare')).check();
  await page.waitForSelector(`${tid('trend-chart')}[data-compare="true"]`, { timeout: TIMEOUT_MS });
  await sameAsRest(page, { tz: 'Asia/Kolkata', compare: true }, 'compare');
  const change = (await page.locator(tid('trend-change')).textContent()) ?? '';
  console.log(`  change: ${change}`);
  check(/(\+|\u2212)[\d,.]+%|new|no change/.test(change), 'the % change is shown');

  log('compare over the last 24 hours per hour: the previous day has events, drawn dashed');
  await page.locator(tid('trend-range')).selectOption('24h');
  await page.locator(tid('trend-granularity')).selectOption('hour');
  await page.waitForSelector(`${tid('trend-chart')}[data-granularity="hour"][data-compare="true"]`, { timeout: TIMEOUT_MS });
  const day = await sameAsRest(page, { tz: 'Asia/Kolkata', compare: true, hours: 24, granularity: 'hour' }, '24 h compare');
  check(Number(day.page.previousTotal) > 0, `the previous day has events (${day.page.previousTotal})`);
  check(day.page.lines > day.page.rows.length || (day.page.rows.length === 0 && day.page.lines > 1), `previous series drawn as extra lines (${day.page.lines} lines for ${day.rest.series.length} series)`);
  await page.screenshot({ path: `${SHOTS}trends-1280x800-compare.png`, fullPage: true });
  await page.locator(tid('trend-range')).selectOption('7d');
  await page.locator(tid('trend-granularity')).selectOption('day');
  await page.waitForSelector(`${tid('trend-chart')}[data-granularity="day"][data-compare="true"]`, { timeout: TIMEOUT_MS });

  log('reload: the same view from the URL (never the token)');
  const url = page.url();
  console.log(`  url: ${url}`);
  check(!url.includes(TOKEN), 'the URL does not hold the token');
  check(/tz=Asia%2FKolkata/.test(url) && /cmp=1/.test(url) && /bd=event_name/.test(url), 'the URL holds the zone, compare and breakdown');
  const before = await shown(page);
  await page.reload({ waitUntil: 'load' });
  await page.waitForSelector(`${tid('trend-chart')}[data-compare="true"][data-time-zone="Asia/Kolkata"][data-filters="properties.plan = pro"][data-breakdown="event_name"]`, { timeout: TIMEOUT_MS });
  check((await page.locator(tid('tz-select')).inputValue()) === 'Asia/Kolkata', 'the zone select');
  check(await page.locator(tid('trend-compare')).isChecked(), 'compare is on');
  check((await page.locator(tid('trend-range')).inputValue()) === '7d', 'the range');
  check((await page.locator(tid('trend-filter-value')).first().inputValue()) === 'pro', 'the filter row');
  const after = await sameAsRest(page, { tz: 'Asia/Kolkata', compare: true }, 'after the reload');
  check(after.page.total >= before.total, `the same numbers (or more: ${before.total} -> ${after.page.total})`);

  log('back: the view before the last change (7 days per hour), forward: per day again');
  await page.goBack();
  await page.waitForSelector(`${tid('trend-chart')}[data-granularity="hour"][data-compare="true"]`, { timeout: TIMEOUT_MS });
  check((await page.locator(tid('trend-granularity')).inputValue()) === 'hour', 'the granularity select says hour');
  check((await page.locator(tid('trend-range')).inputValue()) === '7d', 'the range select says 7 days');
  await page.goForward();
  await page.waitForSelector(`${tid('trend-chart')}[data-granularity="day"][data-compare="true"]`, { timeout: TIMEOUT_MS });
  check((await page.locator(tid('trend-granularity')).inputValue()) === 'day', 'forward: per day again');

  log('download the CSV');
  const [download] = await Promise.all([page.waitForEvent('download', { timeout: TIMEOUT_MS }), page.locator(tid('trend-csv')).click()]);
  const csv = readFileSync(await download.path(), 'utf8');
  const lines = csv.trimEnd().split('\r\n');
  const view = await shown(page);
  console.log(`  ${download.suggestedFilename()}: ${lines.length} lines; ${lines[0]}`);
  check(lines[0].startsWith('bucket,') && lines[0].includes('previous_bucket'), 'a header with the series and the previous period');
  check(lines.length === view.buckets + 2, `a row per bucket plus the header and the totals (${lines.length})`);
  const totals = lines[lines.length - 1].split(',');
  const n = view.rows.length;
  const csvTotal = totals.slice(1, 1 + n).reduce((a, x) => a + Number(x), 0);
  check(totals[0] === 'total' && csvTotal === view.total, `the totals row adds up to the chart's total (${csvTotal})`);

  log('the question as a widget of a saved dashboard ("Add to dashboard"): saved, drawn with the REST numbers');
  {
    const name = `E2E trends ${Date.now().toString(36)}`;
    await createDashboard(page, name);
    await page.locator(tid('trend-add-widget')).click();
    await page.waitForSelector(`${tid('trend-add-state')}`, { timeout: TIMEOUT_MS });
    const saved = (await api('dashboards')).dashboards.find((d) => d.name === name);
    const widget = saved?.widgets.find((w) => w.kind === 'trend');
    check(!!widget, `the dashboard holds a trend widget: ${JSON.stringify(widget?.trend)}`);
    if (widget) {
      const t = widget.trend;
      check(t.range === '7d' && t.breakdown === 'event_name' && JSON.stringify(t.filter) === '["properties.plan = pro"]', 'its question is the panel\'s (7 days, plan = pro, by event name)');
      const chart = tid(`widget-trend-${widget.id}`);
      await page.waitForSelector(chart, { timeout: TIMEOUT_MS });
      const started = Date.now();
      let got = null;
      let want = null;
      while (Date.now() - started < TIMEOUT_MS) {
        got = Number(await page.locator(chart).getAttribute('data-total'));
        const q = new URLSearchParams();
        for (const [k, v] of Object.entries(t)) if (k !== 'range') for (const x of [v].flat()) q.append(k, String(x));
        q.set('from', String(Date.now() - 7 * 86_400_000));
        q.set('to', String(Date.now()));
        q.set('tz', await page.locator(chart).getAttribute('data-time-zone'));
        want = sum((await api(`trends?${q}`)).series);
        if (got === want) break;
        await sleep(300);
      }
      check(got === want && got > 0, `the widget's total equals the REST answer (${got}, REST ${want})`);
      await page.locator(`section[data-widget-id="${widget.id}"]`).screenshot({ path: `${SHOTS}trends-widget-1280x800.png` });

      log('the widget configured in place: measure unique users over the last 30 days, saved and drawn so');
      await page.getByRole('button', { name: 'Edit layout', exact: true }).click();
      const editor = page.locator(`section[data-widget-id="${widget.id}"]`);
      await editor.locator(tid('widget-trend-measure')).selectOption('unique_users');
      await editor.locator(tid('widget-trend-range')).selectOption('30d');
      await page.locator(tid('layout-save')).click();
      await page.locator(tid('layout-save')).waitFor({ state: 'detached', timeout: TIMEOUT_MS });
      const after = (await api('dashboards')).dashboards.find((d) => d.name === name)?.widgets.find((w) => w.id === widget.id);
      check(after?.trend?.measure === 'unique_users' && after?.trend?.range === '30d' && after?.trend?.breakdown === 'event_name', `saved: ${JSON.stringify(after?.trend)}`);
      const started2 = Date.now();
      let restRows2 = null;
      while (Date.now() - started2 < TIMEOUT_MS) {
        const q = new URLSearchParams();
        for (const [k, v] of Object.entries(after.trend)) if (k !== 'range') for (const x of [v].flat()) q.append(k, String(x));
        q.set('from', String(Date.now() - 30 * 86_400_000));
        q.set('to', String(Date.now()));
        q.set('tz', await page.locator(chart).getAttribute('data-time-zone'));
        const rest = await api(`trends?${q}`);
        restRows2 = JSON.stringify(rest.series.map((x) => [x.breakdown_value ?? '', x.total]));
        const shownRows = await page.evaluate((id) => {
          const c = document.querySelector(`[data-testid="widget-trend-${id}"]`);
          return JSON.stringify({ measure: c?.getAttribute('data-measure'), buckets: c?.getAttribute('data-buckets'), total: c?.getAttribute('data-total') });
        }, widget.id);
        got = JSON.parse(shownRows);
        if (got.measure === 'unique_users' && Number(got.buckets) === rest.buckets.length) break;
        await sleep(300);
      }
      console.log(`  widget: ${JSON.stringify(got)}; REST series ${restRows2}`);
      check(got.measure === 'unique_users', `the widget draws unique users (${got.measure}, ${got.buckets} buckets)`);
    }
    await api(`dashboards/${saved.id}`, { method: 'DELETE' });
  }

  log('phone width');
  await page.setViewportSize({ width: 390, height: 844 });
  await sleep(300);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `no horizontal scrolling (overflow ${overflow}px)`);
  await page.locator(tid('trends-panel')).screenshot({ path: `${SHOTS}trends-390x844.png` });
  await page.setViewportSize({ width: 1280, height: 800 });

  log('dark mode follows the system setting');
  await page.emulateMedia({ colorScheme: 'dark' });
  await sleep(200);
  const bg = await page.evaluate(() => getComputedStyle(document.body.parentElement).backgroundColor);
  const [r, g, b] = (bg.match(/\d+/g) ?? ['255', '255', '255']).map(Number);
  check(r + g + b < 150, `a dark background (${bg})`);
  await page.screenshot({ path: `${SHOTS}trends-1280x800-dark.png` });
  await checkAccessibility(page, 'the whole page in dark mode');
  await page.emulateMedia({ colorScheme: 'light' });

  log("WebSocket bytes received per second over 10 s at the demo's default rate, 500 events/s (real-time chart, the trend, the overview)");
  if (CONTROL) await control('stream 500 13 ws_measure');
  await sleep(2_000);
  const b0 = wsBytes;
  const t0 = Date.now();
  await sleep(10_000);
  const perS = Math.round(((wsBytes - b0) * 1000) / (Date.now() - t0));
  console.log(`ws_bytes_per_s=${perS}`);
  // Updates carry at most 10 of the new events and leave out what did not change.
  if (CONTROL) check(perS <= 10_240, `${perS} bytes/s over the WebSocket at 500 events/s (goal <= 10 KB/s)`);

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
console.log(`\nall trend checks passed; screenshots in ${SHOTS}`);
process.exit(0);
