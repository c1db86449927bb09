// Trends (docs/API.md, "Trends" and the WebSocket `trend`/`trend_update`/`untrend`): the
// query the panel builds -> the `params` of a `trend` command (or the REST query), the answers
// -> state (a `trend_update` replaces series, and buckets/from/to when present), chart data,
// labels in the answer's zone, % change, CSV, and the server's refusals -> the control they name.

import { DAY_MS, HOUR_MS } from './range';
import type { WidgetTrend } from './types';

export type TrendMeasure = 'events' | 'unique_users' | 'unique_sessions';
export type TrendGranularity = 'auto' | 'minute' | 'hour' | 'day' | 'week';
export type FilterOp = '=' | '!=' | '>' | '>=' | '<' | '<=' | 'is set' | 'is not set';

export const MEASURES: { key: TrendMeasure; label: string }[] = [
  { key: 'events', label: 'Events' },
  { key: 'unique_users', label: 'Unique users' },
  { key: 'unique_sessions', label: 'Unique sessions' },
];
export const GRANULARITIES: TrendGranularity[] = ['auto', 'minute', 'hour', 'day', 'week'];
export const FILTER_OPS: FilterOp[] = ['=', '!=', '>', '>=', '<', '<=', 'is set', 'is not set'];
export const FILTER_FIELDS = ['event_name', 'event_type', 'user_id', 'session_id'] as const;

export type TrendRangeKey = '1h' | '24h' | '7d' | '30d' | '90d' | 'custom';
export const TREND_RANGES: { key: Exclude<TrendRangeKey, 'custom'>; label: string; ms: number }[] = [
  { key: '1h', label: 'Last hour', ms: HOUR_MS },
  { key: '24h', label: 'Last 24 hours', ms: 24 * HOUR_MS },
  { key: '7d', label: 'Last 7 days', ms: 7 * DAY_MS },
  { key: '30d', label: 'Last 30 days', ms: 30 * DAY_MS },
  { key: '90d', label: 'Last 90 days', ms: 90 * DAY_MS },
];

export interface FilterRow {
  /** `event_name`, `event_type`, `user_id`, `session_id` or `properties.<key>`. */
  field: string;
  op: FilterOp;
  value: string;
}

export interface TrendQuery {
  range: TrendRangeKey;
  /** Custom ranges only (epoch ms). */
  from?: number;
  to?: number;
  measure: TrendMeasure;
  granularity: TrendGranularity;
  events: string[];
  filters: FilterRow[];
  /** '' (none), `event_name`, `event_type` or `properties.<key>`. */
  breakdown: string;
  breakdownLimit: number;
  compare: boolean;
}

export const DEFAULT_QUERY: TrendQuery = {
  range: '24h',
  measure: 'events',
  granularity: 'auto',
  events: [],
  filters: [],
  breakdown: '',
  breakdownLimit: 10,
  compare: false,
};

export type TrendParams = Record<string, string | number | string[]>;

export function filterText(f: FilterRow): string {
  const field = f.field.trim();
  return f.op === 'is set' || f.op === 'is not set' ? `${field} ${f.op}` : `${field} ${f.op} ${f.value}`;
}

/** Rows the user left empty are not sent. */
export function usedFilters(q: TrendQuery): FilterRow[] {
  return q.filters.filter((f) => f.field.trim() !== '' && f.field.trim() !== 'properties.');
}

/**
 * The `params` of a `trend` command: a live preset has `from` (epoch ms) and no `to`, so the
 * server slides it; a custom range is fixed. `tz` null: the org's default zone.
 */
export function trendParams(q: TrendQuery, tz: string | null, now: number): TrendParams {
  const p: TrendParams = {};
  if (q.range === 'custom' && q.from !== undefined && q.to !== undefined) {
    p.from = q.from;
    p.to = q.to;
  } else {
    const r = TREND_RANGES.find((x) => x.key === q.range) ?? TREND_RANGES[1];
    p.from = now - r.ms;
  }
  if (q.measure !== 'events') p.measure = q.measure;
  if (q.granularity !== 'auto') p.granularity = q.granularity;
  const events = q.events.map((e) => e.trim()).filter(Boolean);
  if (events.length) p.event = events;
  const filters = usedFilters(q).map(filterText);
  if (filters.length) p.filter = filters;
  if (q.breakdown) {
    p.breakdown = q.breakdown;
    p.breakdown_limit = q.breakdownLimit;
  }
  if (q.compare) p.compare = 'previous';
  if (tz) p.tz = tz;
  return p;
}

/** The question a trend widget keeps (null for a custom range: a widget's range ends now). */
export function widgetTrend(q: TrendQuery): WidgetTrend | null {
  if (q.range === 'custom') return null;
  const { from: _from, tz: _tz, ...rest } = trendParams(q, null, 0);
  return { range: q.range, ...rest };
}

/** A trend widget's `trend` command params: its range back from `now`, in zone `tz`. */
export function widgetTrendParams(t: WidgetTrend, tz: string | null, now: number): TrendParams {
  const { range, ...rest } = t;
  const r = TREND_RANGES.find((x) => x.key === range) ?? TREND_RANGES[1];
  const p: TrendParams = { ...rest, from: now - r.ms };
  if (tz) p.tz = tz;
  return p;
}

/** A widget's title for the question: "Unique users of signup, login by properties.plan, last 7 days". */
export function trendTitle(q: TrendQuery): string {
  const measure = MEASURES.find((m) => m.key === q.measure)?.label ?? q.measure;
  const events = q.events.map((e) => e.trim()).filter(Boolean);
  const range = TREND_RANGES.find((r) => r.key === q.range)?.label.toLowerCase() ?? q.range;
  return `${measure}${events.length ? ` of ${events.join(', ')}` : ''}${q.breakdown ? ` by ${q.breakdown}` : ''}, ${range}`;
}

/** The same question as a REST query string (`to` = now for a live range). */
export function trendQueryString(params: TrendParams, now: number): string {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    for (const x of Array.isArray(v) ? v : [v]) u.append(k, String(x));
  }
  if (!u.has('to')) u.set('to', String(now));
  return u.toString();
}

export interface TrendSeries {
  breakdown_value?: string | null;
  other?: boolean;
  other_values?: number;
  values: number[];
  total: number;
}

export interface TrendPeriod {
  from: string;
  to: string;
  buckets: string[];
  series: TrendSeries[];
  source?: string;
  exact?: boolean;
  events_scanned?: number;
}

export interface TrendsBody extends TrendPeriod {
  org: string;
  measure: TrendMeasure;
  granularity: Exclude<TrendGranularity, 'auto'>;
  time_zone: string;
  events: string[];
  event_type: string | null;
  filters: string[];
  breakdown: string | null;
  breakdown_limit: number;
  previous?: TrendPeriod;
  complete?: boolean;
}

export interface TrendMessage {
  type: 'trend';
  id: string;
  trend: TrendsBody;
}

export interface TrendUpdateMessage {
  type: 'trend_update';
  id: string;
  series: TrendSeries[];
  /** Asked with `deltas`: each series' values start at this bucket (earlier ones unchanged). */
  from_bucket?: number;
  buckets?: string[];
  from?: string;
  to?: string;
  previous?: TrendPeriod;
}

/** A `trend_update` applied: series replaced; buckets/from/to/previous when present. */
export function applyTrendUpdate(body: TrendsBody, u: TrendUpdateMessage): TrendsBody {
  // `from_bucket`: the values from that bucket on; the earlier ones are the ones held.
  const k = u.from_bucket;
  const series =
    u.series && k !== undefined && k > 0
      ? u.series.map((s, i) => ({ ...s, values: [...(body.series[i]?.values ?? []).slice(0, k), ...s.values] }))
      : (u.series ?? body.series);
  return {
    ...body,
    series,
    buckets: u.buckets ?? body.buckets,
    from: u.from ?? body.from,
    to: u.to ?? body.to,
    previous: u.previous ?? body.previous,
  };
}

export interface TrendError {
  message: string;
  /** The parameter the server named (`filter`, `breakdown`, `tz`, ...), when it named one. */
  parameter: string | null;
  value: string | null;
}

/** `trend '<id>': parameter 'filter': 'x ~ 1' is ...` -> the id and the error. */
export function parseTrendError(message: string): { id: string; error: TrendError } | null {
  const m = /^trend '([^']*)': ([\s\S]*)$/.exec(message);
  if (!m) return null;
  return { id: m[1], error: parseParameterError(m[2]) };
}

export function parseParameterError(message: string): TrendError {
  const p = /^parameter '([^']+)': '([\s\S]*?)' /.exec(message) ?? /^parameter '([^']+)'/.exec(message);
  return { message, parameter: p ? p[1] : null, value: p && p[2] !== undefined ? p[2] : null };
}

export interface TrendSlot {
  /** The id of the current `trend` command; answers for other ids are an older question's. */
  id: string | null;
  /** Sent and not answered yet. */
  pending: boolean;
  body: TrendsBody | null;
  error: TrendError | null;
  /** `body` answers an older question (the newer one was refused). */
  stale: boolean;
}

export type TrendsState = Record<string, TrendSlot>;

export type TrendAction =
  | { type: 'request'; slot: string; id: string }
  | { type: 'message'; msg: { type: string } }
  | { type: 'rest-error'; slot: string; id: string; error: TrendError };

export const emptySlot: TrendSlot = { id: null, pending: false, body: null, error: null, stale: false };

export function reduceTrends(state: TrendsState, action: TrendAction): TrendsState {
  const slotOf = (id: string) => Object.keys(state).find((k) => state[k].id === id) ?? null;
  switch (action.type) {
    case 'request': {
      const old = state[action.slot] ?? emptySlot;
      return { ...state, [action.slot]: { ...old, id: action.id, pending: true, error: null } };
    }
    case 'rest-error': {
      const old = state[action.slot];
      if (!old || old.id !== action.id) return state;
      return { ...state, [action.slot]: { ...old, pending: false, error: action.error, stale: old.body !== null } };
    }
    case 'message': {
      const msg = action.msg as { type: string; message?: unknown };
      if (msg.type === 'trend') {
        const m = msg as unknown as TrendMessage;
        const slot = slotOf(m.id);
        if (!slot || !m.trend) return state;
        return { ...state, [slot]: { ...state[slot], pending: false, body: m.trend, error: null, stale: false } };
      }
      if (msg.type === 'trend_update') {
        const m = msg as unknown as TrendUpdateMessage;
        const slot = slotOf(m.id);
        const s = slot ? state[slot] : null;
        if (!slot || !s || !s.body || s.pending || s.error) return state;
        return { ...state, [slot]: { ...s, body: applyTrendUpdate(s.body, m) } };
      }
      if (msg.type === 'error' && typeof msg.message === 'string') {
        const parsed = parseTrendError(msg.message);
        const slot = parsed ? slotOf(parsed.id) : null;
        if (!parsed || !slot) return state;
        const s = state[slot];
        return { ...state, [slot]: { ...s, pending: false, error: parsed.error, stale: s.body !== null } };
      }
      return state;
    }
  }
}

/** Is `msg` (an `error`) about a trend? Those are shown beside the trend's controls, not as a banner. */
export function isTrendError(msg: { type: string; message?: unknown }): boolean {
  return msg.type === 'error' && typeof msg.message === 'string' && msg.message.startsWith("trend '");
}

// Zones and labels.

export const COMMON_ZONES = [
  'UTC',
  'Europe/London',
  'Europe/Berlin',
  'Europe/Paris',
  'Europe/Moscow',
  'America/New_York',
  'America/Chicago',
  'America/Denver',
  'America/Los_Angeles',
  'America/Sao_Paulo',
  'Asia/Kolkata',
  'Asia/Shanghai',
  'Asia/Tokyo',
  'Asia/Singapore',
  'Australia/Sydney',
  'Pacific/Auckland',
];

export function browserZone(): string {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}

/** The zone choices: the browser's, UTC, the common ones and the org default, each once. */
export function zoneOptions(orgDefault: string | null, selected: string | null): string[] {
  const out: string[] = [];
  for (const z of [browserZone(), 'UTC', ...(orgDefault ? [orgDefault] : []), ...(selected ? [selected] : []), ...COMMON_ZONES]) {
    if (!out.includes(z)) out.push(z);
  }
  return out;
}

import { offsetMinutes } from './zone';
export { offsetMinutes };

const fmtCache = new Map<string, Intl.DateTimeFormat>();
function dtf(zone: string, opts: Intl.DateTimeFormatOptions): Intl.DateTimeFormat {
  const key = `${zone}|${JSON.stringify(opts)}`;
  let f = fmtCache.get(key);
  if (!f) {
    try {
      f = new Intl.DateTimeFormat('en-GB', { ...opts, timeZone: zone === 'UTC' ? 'UTC' : zone });
    } catch {
      f = new Intl.DateTimeFormat('en-GB', { ...opts, timeZone: 'UTC' });
    }
    fmtCache.set(key, f);
  }
  return f;
}

/**
 * A bucket start (`2026-03-28T00:00:00+01:00`) as the chart labels it, in the answer's zone:
 * minutes and hours as `28 Mar 14:30`, days as `Sat 28 Mar`, weeks as `w/c 23 Mar 2026`.
 */
export function bucketLabel(bucket: string, zone: string, granularity: string): string {
  const ms = Date.parse(bucket);
  if (!Number.isFinite(ms)) return bucket;
  const off = offsetMinutes(zone);
  const d = new Date(off === null ? ms : ms + off * 60_000);
  const z = off === null ? zone : 'UTC';
  switch (granularity) {
    case 'minute':
    case 'hour':
      return dtf(z, { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', hour12: false }).format(d);
    case 'day':
      return dtf(z, { weekday: 'short', day: 'numeric', month: 'short' }).format(d);
    default:
      return `w/c ${dtf(z, { day: 'numeric', month: 'short', year: 'numeric' }).format(d)}`;
  }
}

/** A short tick label: time only for minutes/hours within a day. */
export function tickLabel(bucket: string, zone: string, granularity: string): string {
  const ms = Date.parse(bucket);
  if (!Number.isFinite(ms)) return bucket;
  if (granularity !== 'minute' && granularity !== 'hour') return bucketLabel(bucket, zone, granularity).replace(/^w\/c /, '');
  const off = offsetMinutes(zone);
  const d = new Date(off === null ? ms : ms + off * 60_000);
  return dtf(off === null ? zone : 'UTC', { hour: '2-digit', minute: '2-digit', hour12: false }).format(d);
}

export function zoneLabel(zone: string): string {
  return offsetMinutes(zone) !== null ? `UTC${zone}` : zone;
}

// Series, totals, change.

export function seriesLabel(s: TrendSeries, breakdown: string | null): string {
  if (!breakdown) return 'All';
  if (s.other) return `Other (${s.other_values ?? 0} ${s.other_values === 1 ? 'value' : 'values'})`;
  if (s.breakdown_value === null || s.breakdown_value === undefined) return '(not set)';
  return s.breakdown_value;
}

const seriesKey = (s: TrendSeries) => `${s.other ? 'o' : 'v'}:${s.breakdown_value ?? '\u0000'}`;

/** The previous period's series matching each current one (by breakdown value), or null. */
export function matchPrevious(body: TrendsBody): (TrendSeries | null)[] {
  const prev = body.previous?.series ?? [];
  const byKey = new Map(prev.map((s) => [seriesKey(s), s]));
  return body.series.map((s, i) => byKey.get(seriesKey(s)) ?? (body.breakdown ? null : (prev[i] ?? null)));
}

/**
 * The previous period's total of each current series: its matching series' total; 0 when the
 * previous period lists every value it saw (no "other" series) and this one is not among them;
 * else null (it may be inside the previous "other").
 */
export function previousTotals(body: TrendsBody): (number | null)[] {
  if (!body.previous) return body.series.map(() => null);
  const complete = !body.previous.series.some((s) => s.other);
  return matchPrevious(body).map((p, i) => (p ? p.total : complete && !body.series[i].other ? 0 : null));
}

/**
 * The total over every series: a sum for events; for distinct measures only without a
 * breakdown (users in two series would be counted twice), else null.
 */
export function grandTotal(series: TrendSeries[], measure: TrendMeasure, breakdown: string | null): number | null {
  if (series.length === 0) return 0;
  if (measure !== 'events' && breakdown && series.length > 1) return null;
  return series.reduce((a, s) => a + (s.total ?? 0), 0);
}

const pctFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1, minimumFractionDigits: 0 });

/** "+1,234.5%", "−12%", "no change", "new" (nothing before). */
export function percentChange(current: number, previous: number): { pct: number | null; text: string } {
  if (current === previous) return { pct: 0, text: 'no change' };
  if (previous === 0) return { pct: null, text: 'new' };
  const pct = ((current - previous) / previous) * 100;
  return { pct, text: `${pct > 0 ? '+' : '\u2212'}${pctFmt.format(Math.abs(pct))}%` };
}

export interface TrendChartData {
  /** Bucket index 0..n-1 (the x of the chart). */
  xs: number[];
  labels: string[];
  series: { label: string; values: (number | null)[]; previous: boolean; color: number }[];
}

/** The chart's series: the current ones, then (compare) each previous one aligned bucket for bucket. */
export function chartData(body: TrendsBody): TrendChartData {
  const n = body.buckets.length;
  const xs = Array.from({ length: n }, (_, i) => i);
  const series: TrendChartData['series'] = body.series.map((s, i) => ({
    label: seriesLabel(s, body.breakdown),
    values: xs.map((j) => s.values[j] ?? null),
    previous: false,
    color: i,
  }));
  if (body.previous) {
    matchPrevious(body).forEach((p, i) => {
      if (!p) return;
      series.push({
        label: `${seriesLabel(body.series[i], body.breakdown)} (previous)`,
        values: xs.map((j) => p.values[j] ?? null),
        previous: true,
        color: i,
      });
    });
  }
  return { xs, labels: body.buckets, series };
}

// CSV (RFC 4180).

export function csvCell(v: string | number | null | undefined): string {
  const s = v === null || v === undefined ? '' : String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** One row per bucket: the bucket start, each series, and (when shown) the previous period's. */
export function trendCsv(body: TrendsBody, withPrevious = true): string {
  const head = ['bucket', ...body.series.map((s) => seriesLabel(s, body.breakdown))];
  const prev = withPrevious && body.previous ? matchPrevious(body) : null;
  if (prev) {
    head.push('previous_bucket');
    body.series.forEach((s, i) => prev[i] && head.push(`${seriesLabel(s, body.breakdown)} (previous)`));
  }
  const rows = [head];
  body.buckets.forEach((b, j) => {
    const row: (string | number | null)[] = [b, ...body.series.map((s) => s.values[j] ?? null)];
    if (prev) {
      row.push(body.previous?.buckets[j] ?? null);
      prev.forEach((p) => p && row.push(p.values[j] ?? null));
    }
    rows.push(row as string[]);
  });
  const total: (string | number | null)[] = ['total', ...body.series.map((s) => s.total)];
  if (prev) {
    total.push(null);
    prev.forEach((p) => p && total.push(p.total));
  }
  rows.push(total as string[]);
  return rows.map((r) => r.map(csvCell).join(',')).join('\r\n') + '\r\n';
}

export function csvFileName(body: TrendsBody): string {
  const day = (s: string) => s.slice(0, 10);
  return `trend-${body.measure}-${body.granularity}-${day(body.from)}-${day(body.to)}.csv`;
}

// Which control a refusal names.

export type TrendControl = 'range' | 'measure' | 'granularity' | 'events' | 'filter' | 'breakdown' | 'compare' | 'tz' | 'other';

export function controlOf(parameter: string | null): TrendControl {
  switch (parameter) {
    case 'from':
    case 'to':
      return 'range';
    case 'event':
    case 'event_type':
      return 'events';
    case 'breakdown':
    case 'breakdown_limit':
      return 'breakdown';
    case 'measure':
    case 'granularity':
    case 'filter':
    case 'compare':
    case 'tz':
      return parameter;
    default:
      return 'other';
  }
}

/** The filter row a `filter` refusal's value names, or -1. */
export function filterRowOf(q: TrendQuery, value: string | null): number {
  if (value === null) return -1;
  const rows = q.filters;
  for (let i = 0; i < rows.length; i++) if (filterText(rows[i]) === value || filterText(rows[i]).trim() === value.trim()) return i;
  return -1;
}
