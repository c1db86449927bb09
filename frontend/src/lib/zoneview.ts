// The dashboard as live trends: in a zone other than UTC, or with page filters (event names,
// conditions on fields and properties). The live view (`subscribe`) is in UTC buckets (its
// hours are the zone's hours only for whole-hour offsets, its days and "today" are UTC days)
// and narrows by event type only. In another zone, or filtered, the line chart, the top events,
// the "today" cards and the range's unique users come from live trends asked in that zone with
// those filters instead (the server builds local days from hourly rollups, unique users as
// unions of hourly sets, and scans the event blocks where rollups cannot answer).

import { presetMs, specGranularity, type ViewSpec } from './range';
import type { LineSeries } from './shape';
import type { TrendParams, TrendSlot, TrendsBody, TrendSeries, TrendsState } from './trends';
import type { TopEventsBody } from './types';
import { zoneDate } from './zone';

/** The trend slots the zoned dashboard keeps. */
export const ZONE_SLOTS = {
  lineEvents: 'zone:line-events',
  lineUsers: 'zone:line-users',
  top: 'zone:top',
  todayUsers: 'zone:today-users',
} as const;

/** Top events listed (as the live view's). */
const TOP_LIMIT = 10;

/**
 * A live range that is "today" in the zone: one second back from now, at day granularity the
 * server widens it to the local day (for a second after midnight, yesterday too: the last
 * bucket is today's).
 */
const TODAY_FROM_MS = 1000;

/** Filters of the whole page: event names (any of them) and conditions (all of them). */
export interface PageFilter {
  events: string[];
  /** The trends' conditions as text: `properties.plan = pro`, `user_id != bot`. */
  filters: string[];
  /** Compare with the previous period (the line, the range's users, "today" with yesterday). */
  compare?: boolean;
  /** Break the line down by `event_name`, `event_type` or `properties.<key>` (top 5 and "other"). */
  breakdown?: string;
}

/** Lines the page's breakdown draws besides "other". */
export const PAGE_BREAKDOWN_LIMIT = 5;

export const NO_PAGE_FILTER: PageFilter = { events: [], filters: [] };

export function hasPageFilter(pf: PageFilter): boolean {
  return pf.events.length > 0 || pf.filters.length > 0;
}

/** The page needs trends: a zone other than UTC, filters, a comparison or a breakdown. */
export function needsTrends(zoneIsUtc: boolean, pf: PageFilter): boolean {
  return !zoneIsUtc || hasPageFilter(pf) || pf.compare === true || !!pf.breakdown;
}

/** What the page filters by, as labels say it: `signup, login · properties.plan = pro`. */
export function pageFilterText(pf: PageFilter, eventType: string | null = null): string {
  return [pf.events.join(', '), eventType ? `type ${eventType}` : '', ...pf.filters].filter(Boolean).join(' · ');
}

/**
 * The `trend` params of each slot for `spec` in `zone` at `now`, filtered by `pf` and the
 * view's event type; with `compare`, each asks for the previous period alongside (the line:
 * the range before; "today": yesterday, the whole day).
 */
export function zoneTrendParams(spec: ViewSpec, zone: string, now: number, pf: PageFilter = NO_PAGE_FILTER): Record<string, TrendParams> {
  const compare = pf.compare === true;
  const range: TrendParams =
    spec.range === 'custom' ? { from: spec.from, to: spec.to } : { from: now - presetMs(spec.range) };
  const eventType = spec.eventType?.trim();
  const narrow: TrendParams = {
    ...(eventType ? { event_type: eventType } : {}),
    ...(pf.events.length ? { event: pf.events } : {}),
    ...(pf.filters.length ? { filter: pf.filters } : {}),
    ...(compare ? { compare: 'previous' } : {}),
  };
  const line: TrendParams = { ...range, granularity: specGranularity(spec), tz: zone, ...narrow };
  const today: TrendParams = { from: now - TODAY_FROM_MS, granularity: 'day', tz: zone, ...narrow };
  const by = pf.breakdown?.trim();
  return {
    [ZONE_SLOTS.lineEvents]: by ? { ...line, breakdown: by, breakdown_limit: PAGE_BREAKDOWN_LIMIT } : line,
    [ZONE_SLOTS.lineUsers]: { ...line, measure: 'unique_users' },
    [ZONE_SLOTS.top]: { ...today, breakdown: 'event_name', breakdown_limit: TOP_LIMIT },
    [ZONE_SLOTS.todayUsers]: { ...today, measure: 'unique_users' },
  };
}

/** What the zoned dashboard draws; null parts have not been answered yet. */
export interface ZoneData {
  zone: string;
  /** The line's events trend as answered (drawn per series when the page is broken down). */
  lineBody: TrendsBody | null;
  line: LineSeries | null;
  /** With compare: the previous period's line, bucket for bucket with `line`. */
  previousLine: { events: number[]; users: number[] } | null;
  /** With compare: yesterday's events and distinct users (whole day), the previous range's users. */
  eventsYesterday: number | null;
  usersYesterday: number | null;
  usersPreviousRange: number | null;
  top: TopEventsBody | null;
  eventsToday: number | null;
  usersToday: number | null;
  /** Distinct users over the view's range (the users trend's total). */
  usersRange: number | null;
  /** False when a sketch took part in today's unique users. */
  usersExact: boolean;
  /** Some part answers an older question, or the group did not answer in full. */
  stale: boolean;
  /** The first refusal of a zone trend (the server's message). */
  error: string | null;
}

const last = (s: TrendSeries | undefined): number => (s && s.values.length ? (s.values[s.values.length - 1] ?? 0) : 0);

/** A slot's answer to its current question (none while a new question is out: no old data under new labels). */
const body = (slot: TrendSlot | undefined): TrendsBody | null => (slot && !slot.pending && !slot.error ? slot.body : null);

/** The zoned dashboard's data from the kept trends. */
export function zoneData(slots: TrendsState, zone: string, now: number): ZoneData {
  const ev = body(slots[ZONE_SLOTS.lineEvents]);
  const us = body(slots[ZONE_SLOTS.lineUsers]);
  const top = body(slots[ZONE_SLOTS.top]);
  const users = body(slots[ZONE_SLOTS.todayUsers]);
  let line: LineSeries | null = null;
  if (ev) {
    // The users' trend may lag one bucket behind the events' while a live range slides.
    const byBucket = new Map((us?.buckets ?? []).map((b, i) => [b, us?.series[0]?.values[i] ?? 0]));
    // Broken down, the events of a bucket are every series' (values and "other" add up).
    const sum = (series: TrendSeries[], i: number) => series.reduce((a, x) => a + (x.values[i] ?? 0), 0);
    line = {
      xs: ev.buckets.map((b) => Date.parse(b) / 1000),
      events: ev.buckets.map((_, i) => sum(ev.series, i)),
      users: ev.buckets.map((b) => byBucket.get(b) ?? 0),
    };
  }
  let previousLine: ZoneData['previousLine'] = null;
  if (ev?.previous) {
    const ps = ev.previous.series;
    const pu = us?.previous?.series[0]?.values ?? [];
    previousLine = {
      events: ev.buckets.map((_, i) => ps.reduce((a, x) => a + (x.values[i] ?? 0), 0)),
      users: ev.buckets.map((_, i) => pu[i] ?? 0),
    };
  }
  const lastTotal = (b: TrendsBody | null) => (b?.previous ? b.previous.series.reduce((a, s) => a + last(s), 0) : null);
  let topBody: TopEventsBody | null = null;
  let eventsToday: number | null = null;
  if (top) {
    const named = top.series.filter((s) => !s.other);
    topBody = {
      org_id: top.org,
      date: zoneDate(now, zone),
      events: named
        .map((s) => ({ event_name: s.breakdown_value ?? '(not set)', count: last(s) }))
        .filter((e) => e.count > 0),
    };
    eventsToday = top.series.reduce((a, s) => a + last(s), 0);
  }
  const slotList = Object.values(ZONE_SLOTS).map((k) => slots[k]);
  const error = slotList.find((s) => s?.error)?.error?.message ?? null;
  const incomplete = [ev, us, top, users].some((b) => b && b.complete === false);
  return {
    zone,
    lineBody: ev,
    line,
    top: topBody,
    eventsToday,
    usersToday: users ? last(users.series[0]) : null,
    usersRange: us ? (us.series[0]?.total ?? 0) : null,
    previousLine,
    eventsYesterday: lastTotal(top),
    usersYesterday: users?.previous ? last(users.previous.series[0]) : null,
    usersPreviousRange: us?.previous ? (us.previous.series[0]?.total ?? 0) : null,
    usersExact: users ? users.exact !== false : true,
    stale: incomplete || slotList.some((s) => s?.stale),
    error,
  };
}
