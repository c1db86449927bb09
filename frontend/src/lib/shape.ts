// Data shaping: WebSocket snapshot/update messages -> the dashboard's state -> what the
// cards, charts and the recent list draw. Plain functions, no DOM: see test/shape.test.ts.

import { formatCount, formatPercent } from './format';
import { bucketMs, floorToBucket } from './range';
import { isTrendError, zoneLabel } from './trends';
import type { ZoneData } from './zoneview';
import type {
  AnalyticsEvent,
  CountersBody,
  Granularity,
  Lag,
  ServerMessage,
  StatMetric,
  SubscribeCommand,
  TimePoint,
  TopEventsBody,
  UniqueUsersBody,
  View,
} from './types';

export const RECENT_LIMIT = 100;
export const TOP_EVENTS_LIMIT = 10;

/** A timeseries point keyed by its bucket start in epoch ms. */
export interface Bucket {
  t: number;
  events: number;
  unique_users: number;
  unique_sessions: number;
}

export interface ViewData {
  view: View;
  granularity: Granularity;
  /** Sorted by `t`, one per bucket start. */
  buckets: Bucket[];
  topEvents: TopEventsBody | null;
  uniqueUsers: UniqueUsersBody | null;
  /** For a live view (`to: null`): how many buckets the sliding window holds. */
  liveBuckets: number | null;
}

export interface DashState {
  counters: CountersBody | null;
  lag: Lag | null;
  /** Newest first, at most RECENT_LIMIT. */
  recent: AnalyticsEvent[];
  /** Events of the org that arrived since the page connected (updates' `new_events`), carried or not. */
  arrived: number;
  view: ViewData | null;
  /** A subscribe was sent and its snapshot has not come yet: `update.view` parts are for the old view. */
  awaitingSnapshot: boolean;
  /** Live bucket count of the subscribe in flight. */
  pendingLiveBuckets: number | null;
  lastMessageAt: number | null;
  pushIntervalMs: number | null;
  /** Last `error` message from the server (the connection stays open). */
  serverError: string | null;
}

export type Action =
  | { type: 'message'; msg: ServerMessage; now: number }
  | { type: 'subscribed'; cmd: SubscribeCommand; now: number }
  | { type: 'counters'; counters: CountersBody; now: number }
  | { type: 'reset' };

export function initialState(): DashState {
  return {
    counters: null,
    lag: null,
    recent: [],
    arrived: 0,
    view: null,
    awaitingSnapshot: false,
    pendingLiveBuckets: null,
    lastMessageAt: null,
    pushIntervalMs: null,
    serverError: null,
  };
}

export function parseTime(s: string): number {
  const ms = Date.parse(s);
  return Number.isFinite(ms) ? ms : NaN;
}

function toBucket(p: TimePoint): Bucket | null {
  const t = parseTime(p.t);
  if (Number.isNaN(t)) return null;
  return { t, events: p.events, unique_users: p.unique_users, unique_sessions: p.unique_sessions };
}

/** Buckets from a list of points: parsed, de-duplicated (last wins), oldest first. */
export function toBuckets(points: TimePoint[]): Bucket[] {
  return mergePoints([], points);
}

/**
 * Merges changed points (absolute values) into the series: a point for an existing bucket
 * replaces it, a new bucket is inserted in order. Returns a new array; `existing` is untouched.
 */
export function mergePoints(existing: Bucket[], changed: TimePoint[]): Bucket[] {
  if (changed.length === 0) return existing;
  const byT = new Map<number, Bucket>();
  for (const b of existing) byT.set(b.t, b);
  for (const p of changed) {
    const b = toBucket(p);
    if (b) byT.set(b.t, b);
  }
  return [...byT.values()].sort((a, b) => a.t - b.t);
}

/**
 * Prepends new events (newest first, as the server sends them) to the list, drops ids already
 * shown, keeps the `limit` newest.
 */
export function mergeRecent(
  existing: AnalyticsEvent[],
  incoming: AnalyticsEvent[],
  limit = RECENT_LIMIT,
): AnalyticsEvent[] {
  const seen = new Set<string>();
  const out: AnalyticsEvent[] = [];
  for (const list of [incoming, existing]) {
    for (const e of list) {
      if (out.length >= limit) return out;
      if (seen.has(e.id)) continue;
      seen.add(e.id);
      out.push(e);
    }
  }
  return out;
}

/** Buckets a live subscribe covers: from its (bucket-aligned) `from` through the bucket holding `now`. */
export function liveBucketCount(cmd: SubscribeCommand, now: number): number | null {
  if (cmd.to !== null) return null;
  const from = parseTime(cmd.from);
  if (Number.isNaN(from)) return null;
  const b = bucketMs(cmd.granularity);
  return Math.max(1, Math.round((floorToBucket(now, cmd.granularity) - floorToBucket(from, cmd.granularity)) / b) + 1);
}

export function reduce(state: DashState, action: Action): DashState {
  switch (action.type) {
    case 'reset':
      return initialState();
    case 'subscribed':
      return { ...state, awaitingSnapshot: true, pendingLiveBuckets: liveBucketCount(action.cmd, action.now) };
    case 'counters':
      return { ...state, counters: action.counters };
    case 'message':
      return applyMessage(state, action.msg, action.now);
  }
}

export function applyMessage(state: DashState, msg: ServerMessage, now: number): DashState {
  const base = { ...state, lastMessageAt: now };
  switch (msg.type) {
    case 'hello':
      return { ...base, pushIntervalMs: msg.push_interval_ms, serverError: null };
    case 'snapshot': {
      const granularity = msg.view?.granularity ?? msg.timeseries.granularity;
      return {
        ...base,
        counters: msg.counters,
        lag: msg.lag,
        recent: mergeRecent([], msg.recent_events ?? []),
        view: {
          view: msg.view,
          granularity,
          buckets: toBuckets(msg.timeseries.points ?? []),
          topEvents: msg.top_events ?? null,
          uniqueUsers: msg.unique_users ?? null,
          liveBuckets: msg.view?.to === null ? state.pendingLiveBuckets : null,
        },
        awaitingSnapshot: false,
        serverError: null,
      };
    }
    case 'update': {
      let view = state.view;
      if (msg.view && view && !state.awaitingSnapshot) {
        view = pruneLive(
          {
            ...view,
            buckets: mergePoints(view.buckets, msg.view.timeseries ?? []),
            topEvents: msg.view.top_events ?? view.topEvents,
            uniqueUsers: msg.view.unique_users ?? view.uniqueUsers,
          },
          now,
        );
      }
      return {
        ...base,
        counters: msg.counters ?? state.counters,
        lag: msg.lag ?? state.lag,
        recent: mergeRecent(state.recent, msg.events ?? []),
        arrived: state.arrived + (msg.new_events ?? msg.events?.length ?? 0),
        view,
      };
    }
    case 'pong':
      return base;
    case 'alert':
      // Banners and history are the alerts state's (lib/alerts.ts); here it only proves the line is alive.
      return base;
    case 'trend':
    case 'trend_update':
      return base;
    case 'error':
      // A refused trend is shown beside the trend's controls (lib/trends.ts), not as a banner.
      if (isTrendError(msg)) return base;
      return { ...base, serverError: `${msg.code}: ${msg.message}` };
    default:
      return state;
  }
}

/** uPlot's aligned data for the line chart: [x (epoch seconds), events, unique users]. */
export interface LineSeries {
  xs: number[];
  events: number[];
  users: number[];
}

/**
 * The line chart's series. A live view slides: its window is the `liveBuckets` buckets ending
 * with the one holding `now`, and buckets nobody reported yet are zeros (the server only sends
 * changed points). A fixed view draws the points as received.
 */
export function lineSeries(data: ViewData, now: number): LineSeries {
  let buckets = data.buckets;
  if (data.liveBuckets !== null) {
    const b = bucketMs(data.granularity);
    const last = floorToBucket(now, data.granularity);
    const first = last - (data.liveBuckets - 1) * b;
    const byT = new Map(buckets.map((x) => [x.t, x]));
    // Keep the latest bucket the server sent even if the local clock lags behind it.
    const end = Math.max(last, buckets.length ? buckets[buckets.length - 1].t : last);
    const filled: Bucket[] = [];
    for (let t = first; t <= end; t += b) {
      filled.push(byT.get(t) ?? { t, events: 0, unique_users: 0, unique_sessions: 0 });
    }
    buckets = filled;
  }
  return {
    xs: buckets.map((x) => x.t / 1000),
    events: buckets.map((x) => x.events),
    users: buckets.map((x) => x.unique_users),
  };
}

/** Drops buckets that slid out of a live window, so state does not grow for ever. */
export function pruneLive(data: ViewData, now: number): ViewData {
  if (data.liveBuckets === null || data.buckets.length === 0) return data;
  const first = floorToBucket(now, data.granularity) - (data.liveBuckets - 1) * bucketMs(data.granularity);
  if (data.buckets[0].t >= first) return data;
  return { ...data, buckets: data.buckets.filter((b) => b.t >= first) };
}

export interface Bars {
  labels: string[];
  values: number[];
}

/** The top events bar chart: count desc (name asc on ties), at most `limit`. */
export function topBars(body: TopEventsBody | null, limit = TOP_EVENTS_LIMIT): Bars {
  const events = [...(body?.events ?? [])]
    .sort((a, b) => b.count - a.count || (a.event_name < b.event_name ? -1 : a.event_name > b.event_name ? 1 : 0))
    .slice(0, limit);
  return { labels: events.map((e) => e.event_name), values: events.map((e) => e.count) };
}

export interface Trend {
  direction: 'up' | 'down' | 'flat';
  /** Change in percent against the previous window; null when the previous one was 0. */
  pct: number | null;
  /** Short text: "+20%", "−12.5%", "no change", "new". */
  text: string;
}

export function trend(current: number, previous: number): Trend {
  if (current === previous) return { direction: 'flat', pct: 0, text: 'no change' };
  if (previous === 0) return { direction: 'up', pct: null, text: 'new' };
  const pct = ((current - previous) / previous) * 100;
  const abs = Math.abs(pct);
  const rounded = abs < 10 ? Math.round(abs * 10) / 10 : Math.round(abs);
  return {
    direction: pct > 0 ? 'up' : 'down',
    pct,
    text: `${pct > 0 ? '+' : '\u2212'}${formatPercent(rounded)}`,
  };
}

export interface StatValue {
  value: number | null;
  trend: Trend | null;
  /** A qualifier, e.g. "approximate" for a sketch-based unique count. */
  note: string | null;
}

/**
 * A card's value. "Today" is the UTC day of the live counters, or with `zoned` (the page in
 * another zone, or filtered) the zone's day from its trends, filtered as the page is.
 */
export function statValue(metric: StatMetric, state: DashState, zoned: ZoneData | null = null): StatValue {
  const c = state.counters;
  const yesterday = (n: number | null) => (n === null ? null : `yesterday (whole day): ${formatCount(n)}`);
  if (zoned && metric === 'events_today') return { value: zoned.eventsToday, trend: null, note: yesterday(zoned.eventsYesterday) };
  if (zoned && metric === 'unique_users_today') {
    const notes = [zoned.usersExact ? null : 'approximate (±0.4%)', yesterday(zoned.usersYesterday)].filter(Boolean);
    return { value: zoned.usersToday, trend: null, note: notes.join(' · ') || null };
  }
  if (zoned && metric === 'unique_users_range') {
    const [now, before] = [zoned.usersRange, zoned.usersPreviousRange];
    return { value: now, trend: now !== null && before !== null ? trend(now, before) : null, note: null };
  }
  switch (metric) {
    case 'events_5m':
      return { value: c ? c.events_5m : null, trend: c ? trend(c.events_5m, c.prev_events_5m) : null, note: null };
    case 'active_users_5m':
      return {
        value: c ? c.active_users_5m : null,
        trend: c ? trend(c.active_users_5m, c.prev_active_users_5m) : null,
        note: null,
      };
    case 'events_today':
      return { value: c ? c.events_today : null, trend: null, note: null };
    case 'unique_users_today':
      return { value: c ? c.unique_users_today : null, trend: null, note: null };
    case 'unique_users_range': {
      const u = state.view?.uniqueUsers ?? null;
      return { value: u ? u.unique_users : null, trend: null, note: u && !u.exact ? 'approximate (±0.4%)' : null };
    }
  }
}

export const METRIC_LABELS: Record<StatMetric, string> = {
  events_5m: 'Events (5 min)',
  active_users_5m: 'Active users (5 min)',
  events_today: 'Events today',
  unique_users_today: 'Unique users today',
  unique_users_range: 'Unique users (selected range)',
};

/** A card's default title; "today" names the zone it is counted in. */
export function metricLabel(metric: StatMetric, zone: string): string {
  const label = METRIC_LABELS[metric];
  return metric === 'events_today' || metric === 'unique_users_today' ? `${label} (${zoneLabel(zone)})` : label;
}

/**
 * Suggestions for the event-type filter: the `event_type` values (track, page, ...) of the
 * events in the recent list, most frequent first. The filter matches Event.event_type, not
 * event_name (the stats rollups are keyed by type; top events are by name).
 */
export function eventTypeSuggestions(state: DashState, max = 50): string[] {
  const counts = new Map<string, number>();
  for (const e of state.recent) counts.set(e.event_type, (counts.get(e.event_type) ?? 0) + 1);
  return [...counts.entries()]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .map(([t]) => t)
    .slice(0, max);
}
