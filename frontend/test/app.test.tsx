// @vitest-environment happy-dom
// The whole page with a fake gateway (fetch + socket) and a stand-in for uPlot (no canvas here):
// sign-in, cards, charts and list fed from a snapshot and updates, range switch, rejection
// message, saved dashboards. Checks that nothing is logged with console.error.

import { render } from 'preact';
import { act } from 'preact/test-utils';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

const { FakePlot, plots } = vi.hoisted(() => {
  const plots: any[] = [];
  class FakePlot {
    static paths = { bars: () => () => null };
    static rangeNum = (_min: number, max: number) => [0, max * 1.1];
    static tzDate = (d: Date) => d;
    root: HTMLElement;
    data: unknown[];
    width: number;
    height: number;
    destroyed = false;
    constructor(opts: { width: number; height: number }, data: unknown[], el: HTMLElement) {
      this.root = document.createElement('div');
      this.root.className = 'uplot';
      el.appendChild(this.root);
      this.data = data;
      this.width = opts.width;
      this.height = opts.height;
      plots.push(this);
    }
    setData(d: unknown[]) {
      this.data = d;
    }
    setSize(s: { width: number; height: number }) {
      this.width = s.width;
      this.height = s.height;
    }
    destroy() {
      this.destroyed = true;
      this.root.remove();
    }
  }
  return { FakePlot, plots };
});
vi.mock('uplot', () => ({ default: FakePlot }));
type FakePlot = InstanceType<typeof FakePlot>;

import { App, type Env } from '../src/components/App';
import type { SocketLike } from '../src/lib/connection';
import type { StorageLike } from '../src/lib/auth';
import { counters, event, events, iso, point, snapshot, topEvents, uniqueUsers, update } from './fixtures';
import type { AlertFiring, AlertRule, Dashboard, View } from '../src/lib/types';
import { alertMessage } from './fixtures';

class FakeSocket implements SocketLike {
  sent: any[] = [];
  onopen: ((ev: any) => void) | null = null;
  onmessage: ((ev: any) => void) | null = null;
  onclose: ((ev: any) => void) | null = null;
  onerror: ((ev: any) => void) | null = null;
  constructor(readonly url: string) {}
  send(d: string) {
    this.sent.push(JSON.parse(d));
  }
  close() {}
  emit(msg: unknown) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
}

function storage(): StorageLike {
  const m = new Map<string, string>();
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => void m.set(k, v), removeItem: (k) => void m.delete(k) };
}

const GOOD = 'good-token';
const ORG = 'org-1';

function gateway(orgZone = 'UTC') {
  const sockets: FakeSocket[] = [];
  const requests: { method: string; url: string; body: any }[] = [];
  const dashboards: Dashboard[] = [];
  const alerts: AlertRule[] = [];
  const firings: AlertFiring[] = [];
  const settings = { org: ORG, time_zone: orgZone, time_zone_set: orgZone !== 'UTC', updated_at: null as string | null };
  const json = (status: number, body: unknown) => new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
  const fetch = async (url: string, init?: RequestInit): Promise<Response> => {
    const method = init?.method ?? 'GET';
    const body = init?.body ? JSON.parse(String(init.body)) : undefined;
    requests.push({ method, url, body });
    const auth = (init?.headers as Record<string, string>)?.Authorization;
    if (auth !== `Bearer ${GOOD}`) return json(401, { error: { code: 'unauthorized', message: 'missing or wrong token' } });
    const path = new URL(url).pathname;
    if (path === `/api/v1/orgs/${ORG}/counters`) return json(200, counters());
    if (path === `/api/v1/orgs/${ORG}/settings` && method === 'GET') return json(200, settings);
    if (path === `/api/v1/orgs/${ORG}/settings` && method === 'PUT') {
      settings.time_zone = body.time_zone ?? 'UTC';
      settings.time_zone_set = body.time_zone !== null;
      return json(200, settings);
    }
    if (path === `/api/v1/orgs/${ORG}/dashboards` && method === 'GET') return json(200, { dashboards });
    if (path === `/api/v1/orgs/${ORG}/dashboards` && method === 'POST') {
      const d: Dashboard = { id: `d${dashboards.length + 1}`, org_id: ORG, created_at: iso(0), updated_at: iso(0), ...body };
      dashboards.push(d);
      return json(201, d);
    }
    if (path === `/api/v1/orgs/${ORG}/alerts/history`) return json(200, { firings });
    if (path === `/api/v1/orgs/${ORG}/alerts` && method === 'GET') return json(200, { alerts });
    const a = /alerts\/(.+)$/.exec(path);
    if ((path === `/api/v1/orgs/${ORG}/alerts` && method === 'POST') || (a && method === 'PUT')) {
      // The gateway's checks the tests need: the window, and a webhook secret on create.
      if (!/^(\d+m|hour|day)$/.test(body.window) || (body.window.endsWith('m') && Number.parseInt(body.window) > 60)) {
        return json(400, { error: { code: 'bad_parameter', message: `parameter 'window': '${body.window}' must be "<N>m" with N in 1..=60, "hour" or "day"`, parameter: 'window', value: body.window } });
      }
      const old = a ? alerts.find((x) => x.id === a[1])! : null;
      const cps = (body.contact_points ?? []).map((c: any, i: number) => {
        if (!c.secret && !old?.contact_points.some((o) => o.url === c.url)) throw new Error(`contact_points[${i}].secret missing`);
        return { type: 'webhook', url: c.url, format: c.format, secret_set: true };
      });
      const state = { state: 'inactive', since: iso(0), value: 3, previous_value: 1, evaluated_at: iso(0), seq: 0, muted: false };
      const rule = { ...(old ?? { id: `r${alerts.length + 1}`, org_id: ORG, created_at: iso(0), state }), ...body, contact_points: cps, updated_at: iso(1) };
      if (old) Object.assign(old, rule);
      else alerts.push(rule);
      return json(old ? 200 : 201, rule);
    }
    if (a && method === 'DELETE') {
      alerts.splice(alerts.findIndex((x) => x.id === a[1]), 1);
      return new Response(null, { status: 204 });
    }
    const m = /dashboards\/(.+)$/.exec(path);
    if (m && method === 'PUT') {
      const d = dashboards.find((x) => x.id === m[1])!;
      Object.assign(d, body);
      return json(200, d);
    }
    if (m && method === 'DELETE') {
      dashboards.splice(dashboards.findIndex((x) => x.id === m[1]), 1);
      return new Response(null, { status: 204 });
    }
    return json(404, { error: { code: 'not_found', message: 'no route' } });
  };
  return { sockets, requests, dashboards, alerts, firings, settings, fetch };
}

let container: HTMLElement;
let errors: unknown[][];

beforeEach(() => {
  container = document.createElement('div');
  document.body.appendChild(container);
  errors = [];
  vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => void errors.push(args));
  plots.length = 0;
});

afterEach(() => {
  act(() => render(null, container));
  container.remove();
  vi.restoreAllMocks();
  expect(errors).toEqual([]);
});

function mount(href: string, gw = gateway(), extra: Partial<Env> = {}) {
  const replaced: string[] = [];
  const env: Env = {
    href,
    session: storage(),
    local: storage(),
    replaceUrl: (u) => replaced.push(u),
    fetch: gw.fetch,
    createSocket: (url) => {
      const s = new FakeSocket(url);
      gw.sockets.push(s);
      return s;
    },
    now: () => Date.now(),
    ...extra,
  };
  act(() => render(<App env={env} />, container));
  return { gw, env, replaced };
}

const $ = (id: string) => container.querySelector(`[data-testid="${id}"]`) as HTMLElement | null;

async function flush(times = 5) {
  for (let i = 0; i < times; i++) {
    await act(async () => {
      await new Promise((r) => setTimeout(r, 0));
    });
  }
}

async function until(cond: () => boolean, what: string) {
  for (let i = 0; i < 50; i++) {
    if (cond()) return;
    await flush(1);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function input(el: HTMLInputElement | HTMLSelectElement, value: string, event: 'input' | 'change') {
  act(() => {
    el.value = value;
    el.dispatchEvent(new Event(event, { bubbles: true }));
  });
}

function click(el: Element | null) {
  if (!el) throw new Error('no element to click');
  act(() => {
    (el as HTMLElement).click();
  });
}

function button(text: string): HTMLButtonElement {
  const b = [...container.querySelectorAll('button')].find((x) => x.textContent?.trim() === text);
  if (!b) throw new Error(`no button ${text}`);
  return b;
}

/** Signs in through the URL, opens the socket and answers the subscribe with a snapshot. */
async function connected(hash = '', extra: Partial<Env> = {}, orgZone = 'UTC') {
  const m = mount(`http://127.0.0.1:8080/?org=${ORG}&token=${GOOD}${hash}`, gateway(orgZone), extra);
  await until(() => m.gw.sockets.length === 1, 'the socket');
  const s = m.gw.sockets[0];
  act(() => s.onopen?.({}));
  act(() => s.emit({ type: 'hello', org_id: ORG, server_time: iso(Date.now()), push_interval_ms: 1000 }));
  const sub = s.sent.find((x) => x.type === 'subscribe');
  const view: View = { from: sub.from, to: sub.to, granularity: sub.granularity, event_type: sub.event_type };
  const from = Date.parse(sub.from);
  const points = Array.from({ length: 25 }, (_, i) => point(from + i * 3_600_000, i + 1));
  act(() => s.emit(snapshot(view, points, { recent_events: events(5) })));
  await flush();
  return { ...m, s, sub };
}

describe('dashboard page', () => {
  it('takes the token from the URL, strips it, and shows live data', async () => {
    const { replaced, s, sub, gw } = await connected();
    expect(replaced[0]).toBe(`/?org=${ORG}`);
    // Then the shareable view goes into the hash, never the token.
    expect(replaced.slice(1)).toEqual([`/?org=${ORG}#r=24h&tr=24h`]);
    expect(replaced.join(' ')).not.toContain(GOOD);
    expect(s.url).toBe(`ws://127.0.0.1:8080/ws/dashboard?token=${GOOD}&org=${ORG}`);
    expect(gw.requests[0]).toMatchObject({ method: 'GET', url: `http://127.0.0.1:8080/api/v1/orgs/${ORG}/counters` });
    expect(sub).toMatchObject({ type: 'subscribe', to: null, granularity: 'hour', event_type: null });

    expect($('connection-status')!.dataset.state).toBe('open');
    expect($('connection-status')!.textContent).toContain('Live');
    expect($('card-events-5m-value')!.textContent).toBe('120');
    expect($('card-events-5m')!.textContent).toContain('+20%');
    expect($('card-active-users-5m')!.textContent).toContain('\u221220%');
    expect($('card-events-today-value')!.textContent).toBe('5,120');
    expect($('card-unique-users-today-value')!.textContent).toBe('812');
    expect($('card-unique-users-today')!.textContent).toContain('4,512 in last 24 hours');
    expect($('chart-timeseries')!.dataset.points).toBe('25');
    expect($('chart-timeseries')!.dataset.total).toBe(String((25 * 26) / 2));
    expect($('chart-top-events')!.dataset.bars).toBe('3');
    expect($('recent-events')!.dataset.count).toBe('5');
    expect(container.querySelectorAll('[data-testid="recent-event"] details')).toHaveLength(5);

    // uPlot got the shaped data: [x seconds, events, users] and [indexes, counts].
    const line = plots.find((p) => (p.data as number[][]).length === 3)!;
    expect((line.data as number[][])[1]).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
    const bars = plots.find((p) => (p.data as number[][]).length === 2)!;
    expect(bars.data).toEqual([[0, 1, 2], [812, 400, 12]]);

    // An update: new events on top, counters and top events change.
    const fresh = event({ event_name: 'signup', id: 'fresh' });
    act(() =>
      s.emit(
        update({
          events: [fresh],
          counters: counters({ events_5m: 200 }),
          view: { timeseries: [], top_events: topEvents([['signup', 1000]]), unique_users: uniqueUsers(10) },
        }),
      ),
    );
    await flush();
    expect($('recent-events')!.dataset.count).toBe('6');
    expect(container.querySelector('[data-testid="recent-event"] .recent-name')!.textContent).toBe('signup');
    expect($('card-events-5m-value')!.textContent).toBe('200');
    expect(bars.data).toEqual([[0], [1000]]);
    expect($('ingestion-lag')!.textContent).toContain('5 events waiting');
  });

  it('switching the range or the event type sends a subscribe and redraws from the snapshot', async () => {
    const { s } = await connected();
    input($('range-select') as HTMLSelectElement, '7d', 'change');
    const sub = s.sent.filter((x) => x.type === 'subscribe').at(-1);
    expect(sub).toMatchObject({ granularity: 'day', to: null, event_type: null });
    const from = Date.parse(sub.from);
    act(() =>
      s.emit(snapshot({ from: sub.from, to: null, granularity: 'day', event_type: null }, Array.from({ length: 8 }, (_, i) => point(from + i * 86_400_000, 100)))),
    );
    await flush();
    expect($('chart-timeseries')!.dataset.granularity).toBe('day');
    expect($('chart-timeseries')!.dataset.points).toBe('8');
    expect($('chart-timeseries')!.dataset.total).toBe('800');

    const filter = $('event-type-filter') as HTMLInputElement;
    input(filter, 'click', 'input');
    input(filter, 'click', 'change');
    act(() => {
      filter.form!.dispatchEvent(new Event('submit', { bubbles: true, cancelable: true }));
    });
    const subs = s.sent.filter((x) => x.type === 'subscribe');
    expect(subs.at(-1)).toMatchObject({ event_type: 'click', granularity: 'day' });
    expect(subs.filter((x) => x.event_type === 'click')).toHaveLength(1);

    input($('range-select') as HTMLSelectElement, 'custom', 'change');
    const before = s.sent.length;
    const fromInput = container.querySelector('#range-from') as HTMLInputElement;
    const toInput = container.querySelector('#range-to') as HTMLInputElement;
    input(fromInput, '2026-11-02T00:00', 'input');
    input(toInput, '2026-11-01T00:00', 'input');
    click(button('Apply range'));
    expect(container.querySelector('#range-error')!.textContent).toMatch(/before/);
    expect(s.sent.length).toBe(before);
    input(toInput, '2026-11-03T00:00', 'input');
    click(button('Apply range'));
    expect(s.sent.at(-1)).toMatchObject({ type: 'subscribe', granularity: 'hour', event_type: 'click', to: expect.any(String) });
  });

  it('shows the rejection message for a wrong token and does not open a socket', async () => {
    const gw = gateway();
    mount('http://127.0.0.1:8080/', gw);
    input(container.querySelector('#signin-org') as HTMLInputElement, ORG, 'input');
    input(container.querySelector('#signin-token') as HTMLInputElement, 'wrong', 'input');
    click($('signin-submit'));
    await until(() => $('signin-error') !== null, 'the sign-in error');
    expect($('signin-error')!.textContent).toMatch(/token was rejected \(401/);
    expect(gw.sockets).toHaveLength(0);

    input(container.querySelector('#signin-token') as HTMLInputElement, GOOD, 'input');
    click($('signin-submit'));
    await until(() => gw.sockets.length === 1, 'the socket after a good token');
    expect($('signin-error')).toBeNull();
  });

  it('a token rejected on load (from the URL) goes back to the form with the message', async () => {
    const gw = gateway();
    mount(`http://127.0.0.1:8080/?org=${ORG}&token=bad`, gw);
    await until(() => $('signin-error') !== null, 'the sign-in error');
    expect($('signin-error')!.textContent).toMatch(/401/);
    expect((container.querySelector('#signin-org') as HTMLInputElement).value).toBe(ORG);
    expect(gw.sockets).toHaveLength(0);
  });

  it('creates, edits, renames and deletes a saved dashboard', async () => {
    const { gw } = await connected();
    await until(() => !button('New').disabled, 'the dashboards list');
    click(button('New'));
    input(container.querySelector('#dashboard-name') as HTMLInputElement, 'Ops', 'input');
    click(button('Create'));
    await until(() => gw.dashboards.length === 1, 'the POST');
    expect(gw.dashboards[0].widgets).toHaveLength(7);
    await flush();
    expect(($('dashboard-select') as HTMLSelectElement).value).toBe('d1');

    click(button('Edit layout'));
    click(container.querySelector('[aria-label="Remove: Recent events"]'));
    click(container.querySelector('[aria-label="Move right: Top events"]')); // already at the edge: disabled
    click(container.querySelector('[aria-label="Narrower: Events over time"]'));
    input(container.querySelector('#add-kind') as HTMLSelectElement, 'stat', 'change');
    input(container.querySelector('#add-metric') as HTMLSelectElement, 'unique_users_range', 'change');
    click(button('Add widget'));
    expect($('card-unique-users-range')).not.toBeNull();
    click($('layout-save'));
    await until(() => gw.requests.some((r) => r.method === 'PUT'), 'the PUT');
    const put = gw.requests.find((r) => r.method === 'PUT')!;
    expect(put.url).toMatch(/dashboards\/d1$/);
    expect(put.body.name).toBe('Ops');
    expect(put.body.widgets.map((w: any) => w.kind)).toEqual(['stat', 'stat', 'stat', 'stat', 'line', 'bar', 'stat']);
    expect(put.body.widgets.find((w: any) => w.kind === 'line').w).toBe(7);
    await flush();
    expect($('recent-events')).toBeNull();

    click(button('Rename'));
    input(container.querySelector('#dashboard-name') as HTMLInputElement, 'Ops 2', 'input');
    click(button('Rename'));
    await until(() => gw.dashboards[0].name === 'Ops 2', 'the rename');
    await flush();
    expect(($('dashboard-select') as HTMLSelectElement).selectedOptions[0].textContent).toBe('Ops 2');

    click(button('Delete'));
    click(button('Delete'));
    await until(() => gw.dashboards.length === 0, 'the DELETE');
    await flush();
    expect(($('dashboard-select') as HTMLSelectElement).value).toBe('overview');
    expect($('recent-events')).not.toBeNull();
  });

  it('shows reconnecting with a retry button when the socket drops, and resubscribes', async () => {
    const { s, gw } = await connected();
    act(() => s.onclose?.({ code: 1006, reason: '' }));
    expect($('connection-status')!.dataset.state).toBe('waiting');
    expect($('connection-status')!.textContent).toContain('Reconnecting');
    click(button('Retry now'));
    await until(() => gw.sockets.length === 2, 'the second socket');
    const s2 = gw.sockets[1];
    act(() => s2.onopen?.({}));
    expect(s2.sent.filter((x) => x.type === 'subscribe')).toHaveLength(1);
  });
});

function field(id: string): HTMLInputElement {
  const el = container.querySelector(`#alert-${id}`) as HTMLInputElement | null;
  if (!el) throw new Error(`no field alert-${id}`);
  return el;
}

describe('alerts', () => {
  it('creates a rule (a 400 shown beside the field it names), edits it keeping the secret, mutes, unmutes and deletes it', async () => {
    const { gw } = await connected();
    click($('alerts-toggle'));
    await until(() => $('alerts-panel') !== null && !($('alert-new') as HTMLButtonElement).disabled, 'the alerts panel');
    expect(container.textContent).toContain('No alert rules yet.');
    click($('alert-new'));
    input(field('name'), 'Checkout spike', 'input');
    input(field('event-name'), 'checkout', 'input');
    input(field('window'), '90m', 'input');
    input(field('value'), '20', 'input');
    input(field('webhook-url'), 'https://hooks.example.com/a', 'input');
    input(field('webhook-secret'), '0123456789abcdef', 'input');
    input(field('labels'), 'team=growth', 'input');
    click($('alert-save'));
    await until(() => $('alert-form-error') !== null, 'the 400');
    const err = $('alert-form-error')!;
    expect(err.dataset.field).toBe('window');
    expect(err.textContent).toMatch(/^Window: parameter 'window': '90m' must be/);
    expect(field('window').getAttribute('aria-invalid')).toBe('true');
    expect(err.closest('.field')!.contains(field('window'))).toBe(true);

    input(field('window'), '1m', 'input');
    click($('alert-save'));
    await until(() => gw.alerts.length === 1 && $('alert-form') === null, 'the POST');
    const post = gw.requests.filter((r) => r.method === 'POST').at(-1)!;
    expect(post.body).toEqual({
      name: 'Checkout spike',
      measure: 'events',
      event_name: 'checkout',
      event_type: null,
      window: '1m',
      condition: { op: 'above', threshold: 20 },
      for_seconds: 0,
      no_data: 'ok',
      labels: { team: 'growth' },
      contact_points: [{ type: 'webhook', url: 'https://hooks.example.com/a', secret: '0123456789abcdef', format: 'json' }],
      enabled: true,
      muted_until: null,
    });
    await flush();
    expect($('alert-rule')!.dataset.state).toBe('inactive');
    expect($('alert-rule-state')!.textContent).toBe('inactive');
    expect($('alert-rule-summary')!.textContent).toContain('events (event_name checkout) over 1m, above 20');

    // Edit: the secret is left empty, so the PUT has none (the server keeps it).
    click($('alert-edit'));
    expect(field('name').value).toBe('Checkout spike');
    expect(field('webhook-secret').value).toBe('');
    input(field('name'), 'Checkout surge', 'input');
    click($('alert-save'));
    await until(() => gw.requests.some((r) => r.method === 'PUT'), 'the PUT');
    const put = gw.requests.find((r) => r.method === 'PUT')!;
    expect(put.url).toMatch(/alerts\/r1$/);
    expect(put.body.name).toBe('Checkout surge');
    expect(put.body.contact_points).toEqual([{ type: 'webhook', url: 'https://hooks.example.com/a', format: 'json' }]);
    await until(() => $('alert-form') === null, 'the form closes');
    expect(container.querySelector('.alert-rule-name')!.textContent).toBe('Checkout surge');

    // Mute for an hour (the default), then unmute.
    click($('alert-mute'));
    click($('alert-mute-save'));
    await until(() => $('alert-unmute') !== null, 'the mute');
    const mute = gw.requests.filter((r) => r.method === 'PUT').at(-1)!;
    expect(Date.parse(mute.body.muted_until) - Date.now()).toBeGreaterThan(58 * 60_000);
    expect($('alert-rule-muted')!.textContent).toMatch(/^muted until /);
    click($('alert-unmute'));
    await until(() => $('alert-mute') !== null, 'the unmute');
    expect(gw.requests.filter((r) => r.method === 'PUT').at(-1)!.body.muted_until).toBeNull();

    click($('alert-delete'));
    click($('alert-delete-confirm'));
    await until(() => gw.alerts.length === 0 && $('alert-rule') === null, 'the DELETE');
  });

  it('an alert message shows a banner, adds to the history and reloads the rules; resolved hides after 10 s', async () => {
    const real = Date.now.bind(Date);
    let offset = 0;
    vi.spyOn(Date, 'now').mockImplementation(() => real() + offset);
    const { s, gw } = await connected();
    gw.firings.push({ rule_id: 'old', rule_name: 'Old rule', seq: 3, fired_at: '2026-12-01T10:00:00.000000Z', resolved_at: '2026-12-01T10:05:00.000000Z', value: 9, resolved_value: 1, late_events: 0 });
    click($('alerts-toggle'));
    await until(() => $('alert-history') !== null, 'the history');
    expect($('alert-history')!.dataset.count).toBe('1');
    const lists = () => gw.requests.filter((r) => r.method === 'GET' && r.url.endsWith('/alerts')).length;
    const before = lists();

    act(() => s.emit(alertMessage({ fired_at: new Date().toISOString() })));
    await flush();
    const banner = $('alert-banner')!;
    expect(banner.dataset.status).toBe('firing');
    expect(banner.getAttribute('role')).toBe('alert');
    expect(banner.textContent).toContain('Checkout spike is firing: events (event_name checkout) over 5m = 812, above 100');
    expect($('alerts-toggle')!.textContent).toBe('Alerts (1 firing)');
    expect($('alert-history')!.dataset.count).toBe('2');
    await until(() => lists() > before, 'the rules reload');

    act(() => s.emit(alertMessage({ status: 'resolved', value: 4, resolved_at: new Date().toISOString() })));
    await flush();
    expect(container.querySelectorAll('[data-testid="alert-banner"]')).toHaveLength(1);
    expect($('alert-banner')!.dataset.status).toBe('resolved');
    expect(container.querySelector('[data-testid="alert-history-item"]')!.getAttribute('data-resolved')).toBe('true');
    offset = 11_000;
    for (let i = 0; i < 30 && $('alert-banner') !== null; i++) {
      await act(async () => {
        await new Promise((r) => setTimeout(r, 100));
      });
    }
    expect($('alert-banner')).toBeNull();

    // A new firing: dismissible.
    act(() => s.emit(alertMessage({ seq: 2, idempotency_key: 'x:2' })));
    await flush();
    click($('alert-banner-dismiss'));
    expect($('alert-banner')).toBeNull();
  });
});

describe('trends', () => {
  const trendBody = (over: Record<string, unknown> = {}) => ({
    org: ORG,
    measure: 'events',
    granularity: 'hour',
    time_zone: 'Europe/Berlin',
    from: '2026-12-04T11:00:00+01:00',
    to: '2026-12-05T11:15:00+01:00',
    events: [],
    event_type: null,
    filters: [],
    breakdown: null,
    breakdown_limit: 10,
    buckets: ['2026-12-05T10:00:00+01:00', '2026-12-05T11:00:00+01:00'],
    series: [{ values: [1200, 34], total: 1234 }],
    source: 'rollups',
    exact: true,
    events_scanned: 0,
    ...over,
  });
  const trends = (s: FakeSocket, slot: string) => s.sent.filter((x) => x.type === 'trend' && x.id.startsWith(`${slot}-`));

  it('asks for a live trend and a per-minute real-time trend, and shows their answers in the answer zone', async () => {
    const { s } = await connected();
    const [panel] = trends(s, 'panel');
    const [rt] = trends(s, 'realtime');
    expect(panel.params).toEqual({ from: expect.any(Number) });
    expect(Date.now() - 86_400_000 - panel.params.from).toBeLessThan(5_000);
    expect(rt.params).toEqual({ from: expect.any(Number), granularity: 'minute' });
    expect(Date.now() - 3_600_000 - rt.params.from).toBeLessThan(5_000);

    act(() => s.emit({ type: 'trend', id: panel.id, trend: trendBody() }));
    act(() => s.emit({ type: 'trend', id: rt.id, trend: trendBody({ granularity: 'minute', buckets: Array.from({ length: 61 }, (_, i) => iso(Date.now() - (60 - i) * 60_000)), series: [{ values: Array(61).fill(1), total: 61 }] }) }));
    await flush();
    expect($('trend-chart')!.dataset).toMatchObject({ total: '1234', timeZone: 'Europe/Berlin', buckets: '2', stale: 'false' });
    expect($('trend-total')!.textContent).toBe('1,234');
    expect($('trend-zone')!.textContent).toContain('Europe/Berlin');
    expect($('chart-realtime')!.dataset).toMatchObject({ buckets: '61', granularity: 'minute' });

    // trend_update replaces the series; buckets when they moved.
    act(() => s.emit({ type: 'trend_update', id: panel.id, series: [{ values: [1200, 40], total: 1240 }] }));
    await flush();
    expect($('trend-chart')!.dataset.total).toBe('1240');
    // A trend answer is not a banner.
    expect(container.querySelector('.error.banner')).toBeNull();
  });

  it('a refused filter is shown in its row; the old answer stays, marked stale, under its own labels', async () => {
    const { s } = await connected();
    const [first] = trends(s, 'panel');
    act(() => s.emit({ type: 'trend', id: first.id, trend: trendBody() }));
    await flush();
    click($('trend-filter-add'));
    click($('trend-filter-add'));
    const rows = container.querySelectorAll('[data-testid="trend-filter"]');
    input(rows[0].querySelector('[data-testid="trend-filter-key"]') as HTMLInputElement, 'plan', 'input');
    input(rows[0].querySelector('[data-testid="trend-filter-value"]') as HTMLInputElement, 'pro', 'input');
    input(rows[1].querySelector('[data-testid="trend-filter-field"]') as HTMLSelectElement, 'user_id', 'change');
    input(rows[1].querySelector('[data-testid="trend-filter-op"]') as HTMLSelectElement, '>', 'change');
    input(rows[1].querySelector('[data-testid="trend-filter-value"]') as HTMLInputElement, '5', 'input');
    click($('trend-apply'));
    await flush();
    const second = trends(s, 'panel').at(-1);
    expect(second.id).not.toBe(first.id);
    expect(second.params.filter).toEqual(['properties.plan = pro', 'user_id > 5']);
    expect(s.sent).toContainEqual({ type: 'untrend', id: first.id });
    expect($('trends-panel')!.dataset.state).toBe('loading');

    act(() => s.emit({ type: 'error', code: 'bad_command', message: `trend '${second.id}': parameter 'filter': 'user_id > 5' compares a property only` }));
    await flush();
    const row1 = container.querySelectorAll('[data-testid="trend-filter"]')[1];
    expect(row1.querySelector('[data-testid="trend-error"]')!.textContent).toContain("'user_id > 5'");
    expect($('trend-chart')!.dataset.stale).toBe('true');
    expect($('trend-chart')!.getAttribute('data-filters') ?? '').toBe('');
    expect($('trend-stale')).not.toBeNull();
    expect($('trends-panel')!.dataset.state).toBe('stale');
    expect(container.querySelector('.error.banner')).toBeNull();
  });

  it('the zone select: every trend carries tz; "make default for org" PUTs the settings', async () => {
    const { s, gw } = await connected('', {}, 'Europe/Berlin');
    await until(() => ($('tz-select')!.textContent ?? '').includes('Org default (Europe/Berlin)'), 'the org default');
    input($('tz-select') as HTMLSelectElement, '+05:30', 'change');
    await flush();
    // '+05:30' is not among the options: choose one that is.
    input($('tz-select') as HTMLSelectElement, 'Asia/Kolkata', 'change');
    await flush();
    expect(trends(s, 'panel').at(-1).params.tz).toBe('Asia/Kolkata');
    expect(trends(s, 'realtime').at(-1).params).toMatchObject({ tz: 'Asia/Kolkata', granularity: 'minute' });
    click($('tz-make-default'));
    await until(() => $('tz-message') !== null, 'the saved message');
    expect(gw.requests.find((r) => r.method === 'PUT' && r.url.endsWith('/settings'))?.body).toEqual({ time_zone: 'Asia/Kolkata' });
    expect($('tz-message')!.textContent).toContain('Asia/Kolkata is now');
  });

  it('the view comes from the URL, goes back into it, and back/forward restores it', async () => {
    const pushed: string[] = [];
    let hash = '';
    let pop: (() => void) | null = null;
    const { s } = await connected('#tr=7d&m=unique_users&f=properties.plan%20%3D%20pro&bd=event_name&bl=5&cmp=1&tz=UTC', {
      pushUrl: (u) => void pushed.push(u),
      readHash: () => hash,
      onPopState: (f) => {
        pop = f;
        return () => (pop = null);
      },
    });
    const [panel] = trends(s, 'panel');
    expect(panel.params).toMatchObject({ measure: 'unique_users', filter: ['properties.plan = pro'], breakdown: 'event_name', breakdown_limit: 5, compare: 'previous', tz: 'UTC' });
    expect(($('trend-compare') as HTMLInputElement).checked).toBe(true);
    click($('trend-compare'));
    await flush();
    expect(trends(s, 'panel').at(-1).params.compare).toBeUndefined();
    expect(pushed.at(-1)).toMatch(/#.*tr=7d.*bd=event_name/);
    expect(pushed.at(-1)).not.toContain('cmp=1');
    expect(pushed.join(' ')).not.toContain(GOOD);
    // Back: the address holds the earlier view again.
    hash = '#tr=7d&m=unique_users&f=properties.plan%20%3D%20pro&bd=event_name&bl=5&cmp=1&tz=UTC';
    const sentBefore = s.sent.length;
    act(() => pop!());
    await flush();
    expect(($('trend-compare') as HTMLInputElement).checked).toBe(true);
    expect(trends(s, 'panel').at(-1).params.compare).toBe('previous');
    expect(s.sent.length).toBeGreaterThan(sentBefore);
    expect(pushed.at(-1)).not.toContain('cmp=1');
  });

  it('marks the numbers stale while the connection is down', async () => {
    const { s } = await connected();
    const [panel] = trends(s, 'panel');
    act(() => s.emit({ type: 'trend', id: panel.id, trend: trendBody() }));
    await flush();
    act(() => s.onclose?.({ code: 1006, reason: '' }));
    await flush();
    expect($('stale-note')).not.toBeNull();
    expect(container.querySelector('main')!.dataset.stale).toBe('true');
    expect($('trend-chart')!.dataset.stale).toBe('true');
  });
  it('in the org default zone (not UTC) the line, the top events and the "today" cards are trends in that zone, labelled', async () => {
    const { s } = await connected('', {}, 'Asia/Kolkata');
    await until(() => trends(s, 'zone:top').length > 0, 'the zone trends');
    // In UTC the page asked for none: the live view answered.
    const [line] = trends(s, 'zone:line-events');
    const [users] = trends(s, 'zone:line-users');
    const [top] = trends(s, 'zone:top');
    const [today] = trends(s, 'zone:today-users');
    expect(line.params).toMatchObject({ granularity: 'hour', tz: 'Asia/Kolkata' });
    expect(Date.now() - 86_400_000 - line.params.from).toBeLessThan(5_000);
    expect(users.params).toMatchObject({ measure: 'unique_users', tz: 'Asia/Kolkata' });
    expect(top.params).toMatchObject({ granularity: 'day', breakdown: 'event_name', tz: 'Asia/Kolkata' });
    expect(today.params).toMatchObject({ granularity: 'day', measure: 'unique_users', tz: 'Asia/Kolkata' });
    // Not answered yet: no UTC numbers under the zone's labels.
    expect($('card-events-today-value')!.textContent).toBe('–');
    expect($('card-events-today')!.textContent).toContain('Events today (Asia/Kolkata)');

    const hours = ['2026-12-05T10:30:00+05:30', '2026-12-05T11:30:00+05:30', '2026-12-05T12:30:00+05:30'];
    const day = ['2026-12-05T00:00:00+05:30'];
    const z = { time_zone: 'Asia/Kolkata' };
    act(() => s.emit({ type: 'trend', id: line.id, trend: trendBody({ ...z, buckets: hours, series: [{ values: [4, 5, 6], total: 15 }] }) }));
    act(() => s.emit({ type: 'trend', id: users.id, trend: trendBody({ ...z, measure: 'unique_users', buckets: hours, series: [{ values: [1, 2, 3], total: 4 }] }) }));
    act(() =>
      s.emit({
        type: 'trend',
        id: top.id,
        trend: trendBody({
          ...z,
          granularity: 'day',
          breakdown: 'event_name',
          buckets: day,
          series: [
            { breakdown_value: 'signup', values: [30], total: 30 },
            { breakdown_value: 'login', values: [12], total: 12 },
            { other: true, other_values: 4, values: [8], total: 8 },
          ],
        }),
      }),
    );
    act(() => s.emit({ type: 'trend', id: today.id, trend: trendBody({ ...z, granularity: 'day', measure: 'unique_users', buckets: day, series: [{ values: [17], total: 17 }] }) }));
    await flush();
    expect($('card-events-today-value')!.textContent).toBe('50');
    expect($('card-unique-users-today-value')!.textContent).toBe('17');
    expect($('card-unique-users-today')!.textContent).toContain('Unique users today (Asia/Kolkata)');
    expect($('chart-timeseries')!.dataset).toMatchObject({ points: '3', total: '15', zone: 'Asia/Kolkata', firstLabel: '5 Dec, 10:30' });
    expect($('chart-top-events')!.dataset.bars).toBe('2');
    expect(container.textContent).toContain('per hour (Asia/Kolkata)');
    // A live update moves today's numbers.
    act(() => s.emit({ type: 'trend_update', id: top.id, series: [{ breakdown_value: 'signup', values: [31], total: 31 }, { breakdown_value: 'login', values: [12], total: 12 }, { other: true, other_values: 4, values: [8], total: 8 }] }));
    await flush();
    expect($('card-events-today-value')!.textContent).toBe('51');

    // Back to UTC: the live view's numbers, the zone trends stopped.
    input($('tz-select') as HTMLSelectElement, 'UTC', 'change');
    await flush();
    expect($('card-events-today-value')!.textContent).toBe('5,120');
    expect($('card-events-today')!.textContent).toContain('Events today (UTC)');
    expect(s.sent.filter((x) => x.type === 'untrend').map((x) => x.id)).toEqual(expect.arrayContaining([line.id, users.id, top.id, today.id]));
  });
  it('page filters narrow the line, top events and "today" through trends; the widgets they miss say so; refusals show beside them', async () => {
    const { s } = await connected();
    expect(trends(s, 'zone:top')).toHaveLength(0); // UTC, unfiltered: the live view answers
    click($('page-filter-add'));
    input(container.querySelector('[data-testid="page-filter-events"]') as HTMLInputElement, 'signup, login', 'input');
    input(container.querySelector('[data-testid="page-filter-condition"]') as HTMLInputElement, 'properties.plan = pro', 'input');
    click($('page-filter-apply'));
    await until(() => trends(s, 'zone:top').length > 0, 'the filtered trends');
    for (const slot of ['zone:line-events', 'zone:line-users', 'zone:top', 'zone:today-users'])
      expect(trends(s, slot).at(-1).params).toMatchObject({ event: ['signup', 'login'], filter: ['properties.plan = pro'], tz: 'UTC' });
    expect(trends(s, 'realtime').at(-1).params).toMatchObject({ event: ['signup', 'login'], filter: ['properties.plan = pro'] });
    expect($('page-filters')!.dataset.active).toBe('3');
    expect($('card-events-5m')!.textContent).toContain("the page's filters do not apply");
    const [top] = trends(s, 'zone:top').slice(-1);
    act(() =>
      s.emit({
        type: 'trend',
        id: top.id,
        trend: trendBody({ time_zone: 'UTC', granularity: 'day', breakdown: 'event_name', buckets: ['2026-12-05T00:00:00+00:00'], series: [{ breakdown_value: 'signup', values: [9], total: 9 }] }),
      }),
    );
    await flush();
    expect($('card-events-today-value')!.textContent).toBe('9');
    expect($('card-events-today')!.textContent).toContain('Only signup, login · properties.plan = pro');
    // A refused condition: the server's message beside the filters, no old number.
    const [users] = trends(s, 'zone:today-users').slice(-1);
    act(() => s.emit({ type: 'error', code: 'bad_command', message: `trend '${users.id}': parameter 'filter': 'plan = pro' field 'plan' is not event_name` }));
    await flush();
    expect($('page-filter-error')!.textContent).toContain("'plan = pro'");
    expect($('card-unique-users-today-value')!.textContent).toBe('–');
    click($('page-filter-clear'));
    await flush();
    expect($('page-filters')!.dataset.active).toBe('0');
    expect($('card-events-today-value')!.textContent).toBe('5,120');

    // Compare with the previous period: every trend asks for it, the line draws it dashed.
    click($('page-compare'));
    await until(() => trends(s, 'zone:line-events').at(-1)?.params.compare === 'previous', 'the compared trends');
    for (const slot of ['zone:line-events', 'zone:line-users', 'zone:top', 'zone:today-users', 'realtime'])
      expect(trends(s, slot).at(-1).params).toMatchObject({ compare: 'previous' });
    const [line] = trends(s, 'zone:line-events').slice(-1);
    const hours = ['2026-12-05T10:00:00+00:00', '2026-12-05T11:00:00+00:00'];
    act(() =>
      s.emit({
        type: 'trend',
        id: line.id,
        trend: trendBody({ time_zone: 'UTC', buckets: hours, series: [{ values: [3, 4], total: 7 }], previous: { from: '', to: '', buckets: hours, series: [{ values: [1, 1], total: 2 }] } }),
      }),
    );
    await flush();
    expect($('chart-timeseries')!.dataset).toMatchObject({ total: '7', previousTotal: '2' });
    expect(container.textContent).toContain('Dashed: the previous 24 hours.');

    // A page breakdown: the line is events per value; the note says what it does not reach.
    input(container.querySelector('[data-testid="page-breakdown"]') as HTMLInputElement, 'properties.plan', 'input');
    click($('page-filter-apply'));
    await until(() => trends(s, 'zone:line-events').at(-1)?.params.breakdown === 'properties.plan', 'the broken-down line');
    expect(trends(s, 'zone:line-events').at(-1).params).toMatchObject({ breakdown_limit: 5, compare: 'previous' });
    const [split] = trends(s, 'zone:line-events').slice(-1);
    act(() =>
      s.emit({
        type: 'trend',
        id: split.id,
        trend: trendBody({
          time_zone: 'UTC',
          breakdown: 'properties.plan',
          buckets: hours,
          series: [
            { breakdown_value: 'pro', values: [2, 1], total: 3 },
            { breakdown_value: 'free', values: [1, 3], total: 4 },
          ],
        }),
      }),
    );
    await flush();
    expect($('chart-timeseries')!.dataset).toMatchObject({ breakdown: 'properties.plan', total: '7' });
    expect($('page-breakdown-note')!.textContent).toContain('the cards, top events and lists are not broken down');
  });
});

describe('last hour per minute', () => {
  it('"Last hour" draws the live per-minute trend in the line widget; the event type narrows it', async () => {
    const { s } = await connected();
    expect($('chart-realtime')).toBeNull(); // no answer yet
    input($('range-select') as HTMLSelectElement, '1h', 'change');
    await flush();
    const rt = s.sent.filter((x) => x.type === 'trend' && x.id.startsWith('realtime-')).at(-1);
    const buckets = Array.from({ length: 61 }, (_, i) => iso(Math.floor(Date.now() / 60_000) * 60_000 - (60 - i) * 60_000));
    act(() =>
      s.emit({
        type: 'trend',
        id: rt.id,
        trend: { org: ORG, measure: 'events', granularity: 'minute', time_zone: 'UTC', from: buckets[0], to: iso(Date.now()), events: [], event_type: null, filters: [], breakdown: null, breakdown_limit: 10, buckets, series: [{ values: Array(61).fill(2), total: 122 }] },
      }),
    );
    await flush();
    expect($('chart-timeseries')!.dataset).toMatchObject({ granularity: 'minute', points: '61', total: '122' });
    expect($('realtime')).toBeNull(); // not twice
    const filter = $('event-type-filter') as HTMLInputElement;
    input(filter, 'track', 'input');
    input(filter, 'track', 'change');
    await flush();
    const next = s.sent.filter((x) => x.type === 'trend' && x.id.startsWith('realtime-')).at(-1);
    expect(next.id).not.toBe(rt.id);
    expect(next.params).toMatchObject({ granularity: 'minute', event_type: 'track' });
    input($('range-select') as HTMLSelectElement, '24h', 'change');
    await flush();
    expect($('realtime')).not.toBeNull();
    expect($('chart-timeseries')!.dataset.granularity).toBe('hour');
  });
});

describe('event name toggles', () => {
  it('offers the known event names; a toggle adds or removes one and asks again', async () => {
    const { s } = await connected();
    await until(() => container.querySelectorAll('[data-testid="trend-event-toggle"]').length > 0, 'the toggles');
    const names = [...container.querySelectorAll('[data-testid="trend-event-toggle"]')].map((b) => b.textContent);
    expect(names).toEqual(expect.arrayContaining(['page_view', 'click', 'signup']));
    const toggle = (n: string) => [...container.querySelectorAll('[data-testid="trend-event-toggle"]')].find((b) => b.textContent === n)!;
    click(toggle('signup'));
    await flush();
    expect(s.sent.filter((x) => x.type === 'trend' && x.id.startsWith('panel-')).at(-1).params.event).toEqual(['signup']);
    click(toggle('click'));
    await flush();
    expect(s.sent.filter((x) => x.type === 'trend' && x.id.startsWith('panel-')).at(-1).params.event).toEqual(['signup', 'click']);
    expect(($('trend-events') as HTMLInputElement).value).toBe('signup, click');
    expect(toggle('signup').getAttribute('aria-pressed')).toBe('true');
    click(toggle('signup'));
    await flush();
    expect(s.sent.filter((x) => x.type === 'trend' && x.id.startsWith('panel-')).at(-1).params.event).toEqual(['click']);
  });
});

describe('CSV download', () => {
  it('"Download CSV" saves the shown trend as a file made in the page', async () => {
    const { s } = await connected();
    const panel = s.sent.filter((x) => x.type === 'trend' && x.id.startsWith('panel-')).at(-1);
    act(() =>
      s.emit({
        type: 'trend',
        id: panel.id,
        trend: { org: ORG, measure: 'events', granularity: 'day', time_zone: 'UTC', from: '2026-12-01T00:00:00+00:00', to: '2026-12-03T00:00:00+00:00', events: [], event_type: null, filters: [], breakdown: 'event_name', breakdown_limit: 10, buckets: ['2026-12-01T00:00:00+00:00', '2026-12-02T00:00:00+00:00'], series: [{ breakdown_value: 'a "b", c', other: false, values: [1, 2], total: 3 }] },
      }),
    );
    await flush();
    const blobs: Blob[] = [];
    const names: string[] = [];
    const create = vi.fn((b: Blob) => (blobs.push(b), 'blob:x'));
    Object.assign(URL, { createObjectURL: create, revokeObjectURL: () => undefined });
    vi.spyOn(HTMLAnchorElement.prototype, 'click').mockImplementation(function (this: HTMLAnchorElement) {
      names.push(this.download);
    });
    click($('trend-csv'));
    expect(names).toEqual(['trend-events-day-2026-12-01-2026-12-03.csv']);
    expect(await blobs[0].text()).toBe('bucket,"a ""b"", c"\r\n2026-12-01T00:00:00+00:00,1\r\n2026-12-02T00:00:00+00:00,2\r\ntotal,3\r\n');
  });
});
