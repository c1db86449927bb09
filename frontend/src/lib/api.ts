// REST client for the gateway (docs/API.md): bearer token, JSON, error bodies as ApiError.

import type { PreflightResult } from './connection';
import type { ExplorePage } from './explorer';
import type { TrendsBody } from './trends';
import type { AlertFiring, AlertRule, AlertRuleInput, ApiErrorBody, CountersBody, Dashboard, Widget } from './types';

export interface OrgSettings {
  org: string;
  time_zone: string;
  time_zone_set: boolean;
  updated_at: string | null;
}

export interface Session {
  org: string;
  token: string;
}

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly parameter?: string;

  constructor(status: number, code: string, message: string, parameter?: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.parameter = parameter;
  }
}

/** A network failure (no HTTP answer at all). */
export class NetworkError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NetworkError';
  }
}

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** The page's base URL (the directory index.html was served from), so a path prefix works. */
export function pageBase(href: string): string {
  return new URL('.', href).toString();
}

export function wsUrl(base: string, session: Session): string {
  const u = new URL('ws/dashboard', base);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.search = '';
  u.searchParams.set('token', session.token);
  u.searchParams.set('org', session.org);
  return u.toString();
}

export interface DashboardInput {
  name: string;
  widgets: Widget[];
}

export class ApiClient {
  constructor(
    private readonly base: string,
    private readonly session: Session,
    private readonly fetchImpl: FetchLike = (i, init) => fetch(i, init),
  ) {}

  private orgPath(rest: string): string {
    return `api/v1/orgs/${encodeURIComponent(this.session.org)}/${rest}`;
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {
      Authorization: `Bearer ${this.session.token}`,
      Accept: 'application/json',
    };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res: Response;
    try {
      res = await this.fetchImpl(new URL(path, this.base).toString(), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (e) {
      throw new NetworkError(e instanceof Error ? e.message : String(e));
    }
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    let json: unknown = null;
    if (text) {
      try {
        json = JSON.parse(text);
      } catch {
        json = null;
      }
    }
    if (!res.ok) {
      const err = (json as ApiErrorBody | null)?.error;
      throw new ApiError(
        res.status,
        err?.code ?? `http_${res.status}`,
        err?.message ?? (res.statusText || `HTTP ${res.status}`),
        err?.parameter,
      );
    }
    return json as T;
  }

  counters(): Promise<CountersBody> {
    return this.request('GET', this.orgPath('counters'));
  }

  async listDashboards(): Promise<Dashboard[]> {
    const body = await this.request<{ dashboards: Dashboard[] }>('GET', this.orgPath('dashboards'));
    return body?.dashboards ?? [];
  }

  createDashboard(input: DashboardInput): Promise<Dashboard> {
    return this.request('POST', this.orgPath('dashboards'), input);
  }

  updateDashboard(id: string, input: DashboardInput): Promise<Dashboard> {
    return this.request('PUT', this.orgPath(`dashboards/${encodeURIComponent(id)}`), input);
  }

  deleteDashboard(id: string): Promise<void> {
    return this.request('DELETE', this.orgPath(`dashboards/${encodeURIComponent(id)}`));
  }

  async listAlerts(): Promise<AlertRule[]> {
    const body = await this.request<{ alerts: AlertRule[] }>('GET', this.orgPath('alerts'));
    return body?.alerts ?? [];
  }

  createAlert(input: AlertRuleInput): Promise<AlertRule> {
    return this.request('POST', this.orgPath('alerts'), input);
  }

  /** The whole rule; a contact point without `secret` keeps the secret of the same URL. */
  updateAlert(id: string, input: AlertRuleInput): Promise<AlertRule> {
    return this.request('PUT', this.orgPath(`alerts/${encodeURIComponent(id)}`), input);
  }

  deleteAlert(id: string): Promise<void> {
    return this.request('DELETE', this.orgPath(`alerts/${encodeURIComponent(id)}`));
  }

  trends(query: string): Promise<TrendsBody> {
    return this.request('GET', this.orgPath(`trends?${query}`));
  }

  /** A page of stored events (the explorer): `query` from `exploreQuery`. */
  explore(query: string): Promise<ExplorePage> {
    return this.request('GET', this.orgPath(`events?${query}`));
  }

  settings(): Promise<OrgSettings> {
    return this.request('GET', this.orgPath('settings'));
  }

  putSettings(timeZone: string | null): Promise<OrgSettings> {
    return this.request('PUT', this.orgPath('settings'), { time_zone: timeZone });
  }

  async alertHistory(limit = 100): Promise<AlertFiring[]> {
    const body = await this.request<{ firings: AlertFiring[] }>('GET', this.orgPath(`alerts/history?limit=${limit}`));
    return body?.firings ?? [];
  }
}

/** The sentence shown when the gateway refuses a token (or the org). */
export function rejectionMessage(status: number, serverMessage?: string): string {
  const detail = serverMessage ? ` The gateway said: “${serverMessage}”` : '';
  switch (status) {
    case 401:
      return `The token was rejected (401 unauthorized): it is wrong, expired or revoked.${detail}`;
    case 403:
      return `This token is not allowed to read this org (403 forbidden): it belongs to another org.${detail}`;
    case 404:
      return `No org with this id (404 not found). Check the org id.${detail}`;
    default:
      return `The gateway refused the sign-in (${status}).${detail}`;
  }
}

/**
 * Checks the token with GET /counters before a socket is opened: 401/403/404 -> rejected (no
 * reconnect loop), network failure or 5xx -> unreachable (retry). Passes the counters on.
 */
export async function checkToken(
  client: ApiClient,
  onCounters?: (c: CountersBody) => void,
): Promise<PreflightResult> {
  try {
    const c = await client.counters();
    onCounters?.(c);
    return { kind: 'ok' };
  } catch (e) {
    if (e instanceof ApiError && e.status === 400) {
      // A malformed org id (not a UUID): retrying cannot help.
      return { kind: 'rejected', status: 400, message: `This org id is not valid (400): ${e.message}` };
    }
    if (e instanceof ApiError && (e.status === 401 || e.status === 403 || e.status === 404)) {
      return { kind: 'rejected', status: e.status, message: rejectionMessage(e.status, e.message) };
    }
    if (e instanceof ApiError) return { kind: 'unreachable', message: `gateway error ${e.status}` };
    return { kind: 'unreachable', message: 'gateway unreachable' };
  }
}
