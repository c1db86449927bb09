import { describe, expect, it, vi } from 'vitest';
import { ApiClient, ApiError, checkToken, pageBase, wsUrl, type FetchLike } from '../src/lib/api';
import { clearSession, initialAuth, LAST_ORG_KEY, loadSession, SESSION_KEY, type StorageLike } from '../src/lib/auth';
import { counters } from './fixtures';

function storage(init: Record<string, string> = {}): StorageLike & { data: Map<string, string> } {
  const data = new Map(Object.entries(init));
  return {
    data,
    getItem: (k) => data.get(k) ?? null,
    setItem: (k, v) => void data.set(k, v),
    removeItem: (k) => void data.delete(k),
  };
}

function env(href: string, session = storage(), local = storage()) {
  const replaced: string[] = [];
  return { env: { href, session, local, replaceUrl: (u: string) => replaced.push(u) }, replaced, session, local };
}

describe('sign-in state', () => {
  it('takes ?token= and ?org=, stores the token in sessionStorage and strips it from the URL', () => {
    const t = env('http://127.0.0.1:8080/?org=o1&token=secret#x');
    const a = initialAuth(t.env);
    expect(a.session).toEqual({ org: 'o1', token: 'secret' });
    expect(t.replaced).toEqual(['/?org=o1#x']);
    expect(loadSession(t.session)).toEqual({ org: 'o1', token: 'secret' });
    expect(t.local.getItem(LAST_ORG_KEY)).toBe('o1');
  });

  it('strips the token even when the org is unknown, and keeps it for the form only', () => {
    const t = env('http://h/?token=secret');
    const a = initialAuth(t.env);
    expect(a).toEqual({ session: null, org: '', token: 'secret' });
    expect(t.replaced).toEqual(['/']);
    expect(t.session.data.size).toBe(0);
  });

  it('uses the last org for a URL token', () => {
    const t = env('http://h/?token=secret', storage(), storage({ [LAST_ORG_KEY]: 'o9' }));
    expect(initialAuth(t.env).session).toEqual({ org: 'o9', token: 'secret' });
  });

  it('resumes a session of this tab and prefills the last org otherwise', () => {
    const s = storage({ [SESSION_KEY]: JSON.stringify({ org: 'o1', token: 't1' }) });
    const t = env('http://h/', s);
    expect(initialAuth(t.env).session).toEqual({ org: 'o1', token: 't1' });
    expect(t.replaced).toEqual([]);
    clearSession(t.env);
    expect(initialAuth(t.env)).toEqual({ session: null, org: '', token: '' });
    const t2 = env('http://h/?org=o2', storage(), storage({ [LAST_ORG_KEY]: 'o1' }));
    expect(initialAuth(t2.env)).toEqual({ session: null, org: 'o2', token: '' });
    const t3 = env('http://h/', storage({ [SESSION_KEY]: 'garbage' }), storage({ [LAST_ORG_KEY]: 'o1' }));
    expect(initialAuth(t3.env)).toEqual({ session: null, org: 'o1', token: '' });
  });

  it('does not resume another org\'s session when ?org= names a different org', () => {
    const s = storage({ [SESSION_KEY]: JSON.stringify({ org: 'o1', token: 't1' }) });
    expect(initialAuth(env('http://h/?org=o2', s).env)).toEqual({ session: null, org: 'o2', token: '' });
  });
});

function jsonResponse(status: number, body: unknown): Response {
  return new Response(body === undefined ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' },
  });
}

describe('REST client', () => {
  it('resolves URLs against the page and builds the socket URL', () => {
    expect(pageBase('http://127.0.0.1:8080/?org=1')).toBe('http://127.0.0.1:8080/');
    expect(pageBase('https://x.example/st/index.html')).toBe('https://x.example/st/');
    expect(wsUrl('http://127.0.0.1:8080/', { org: 'o 1', token: 'a&b' })).toBe(
      'ws://127.0.0.1:8080/ws/dashboard?token=a%26b&org=o+1',
    );
    expect(wsUrl('https://x.example/st/', { org: 'o', token: 't' })).toBe('wss://x.example/st/ws/dashboard?token=t&org=o');
  });

  it('sends the bearer token and parses JSON', async () => {
    const fetch = vi.fn<FetchLike>(async () => jsonResponse(200, counters()));
    const c = new ApiClient('http://gw/', { org: 'o/1', token: 'tok' }, fetch);
    expect((await c.counters()).events_5m).toBe(120);
    const [url, init] = fetch.mock.calls[0];
    expect(url).toBe('http://gw/api/v1/orgs/o%2F1/counters');
    expect((init!.headers as Record<string, string>).Authorization).toBe('Bearer tok');
  });

  it('does dashboard CRUD with the documented methods and bodies', async () => {
    const calls: [string, string, unknown][] = [];
    const fetch: FetchLike = async (url, init) => {
      calls.push([init!.method!, url, init!.body ? JSON.parse(String(init!.body)) : undefined]);
      if (init!.method === 'DELETE') return new Response(null, { status: 204 });
      if (init!.method === 'GET') return jsonResponse(200, { dashboards: [] });
      return jsonResponse(init!.method === 'POST' ? 201 : 200, { id: 'd1', name: 'n', widgets: [] });
    };
    const c = new ApiClient('http://gw/', { org: 'o', token: 't' }, fetch);
    expect(await c.listDashboards()).toEqual([]);
    await c.createDashboard({ name: 'n', widgets: [] });
    await c.updateDashboard('d1', { name: 'm', widgets: [] });
    expect(await c.deleteDashboard('d1')).toBeUndefined();
    expect(calls).toEqual([
      ['GET', 'http://gw/api/v1/orgs/o/dashboards', undefined],
      ['POST', 'http://gw/api/v1/orgs/o/dashboards', { name: 'n', widgets: [] }],
      ['PUT', 'http://gw/api/v1/orgs/o/dashboards/d1', { name: 'm', widgets: [] }],
      ['DELETE', 'http://gw/api/v1/orgs/o/dashboards/d1', undefined],
    ]);
  });

  it('turns error bodies into ApiError', async () => {
    const c = new ApiClient('http://gw/', { org: 'o', token: 't' }, async () =>
      jsonResponse(400, { error: { code: 'bad_parameter', message: 'bad from', parameter: 'from', value: 'x' } }),
    );
    await expect(c.counters()).rejects.toMatchObject({ status: 400, code: 'bad_parameter', message: 'bad from', parameter: 'from' });
    const c2 = new ApiClient('http://gw/', { org: 'o', token: 't' }, async () => new Response('oops', { status: 502, statusText: 'Bad Gateway' }));
    await expect(c2.counters()).rejects.toBeInstanceOf(ApiError);
  });

  it('maps the token check: 401/403/404 rejected, 5xx and network errors unreachable', async () => {
    const check = async (f: FetchLike) => checkToken(new ApiClient('http://gw/', { org: 'o', token: 't' }, f));
    const err = (status: number, code: string) => async () => jsonResponse(status, { error: { code, message: code } });
    expect(await check(err(401, 'unauthorized'))).toMatchObject({ kind: 'rejected', status: 401, message: expect.stringMatching(/token was rejected/) });
    expect(await check(err(403, 'forbidden'))).toMatchObject({ kind: 'rejected', status: 403, message: expect.stringMatching(/another org/) });
    expect(await check(err(404, 'not_found'))).toMatchObject({ kind: 'rejected', status: 404 });
    // A malformed org id: back to the sign-in with the message, not retried for ever.
    expect(await check(async () => jsonResponse(400, { error: { code: 'bad_parameter', message: "parameter 'org': 'x' is not a UUID", parameter: 'org' } }))).toMatchObject({
      kind: 'rejected',
      status: 400,
      message: expect.stringMatching(/org id is not valid.*not a UUID/),
    });
    expect(await check(err(500, 'internal'))).toMatchObject({ kind: 'unreachable' });
    expect(await check(async () => Promise.reject(new TypeError('Failed to fetch')))).toEqual({ kind: 'unreachable', message: 'gateway unreachable' });
    const seen: unknown[] = [];
    expect(await checkToken(new ApiClient('http://gw/', { org: 'o', token: 't' }, async () => jsonResponse(200, counters())), (c) => seen.push(c))).toEqual({ kind: 'ok' });
    expect(seen).toHaveLength(1);
  });
});
