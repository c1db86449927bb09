// CSV (RFC 4180) of what a dashboard widget shows: the line's buckets, the top events, a
// card's value, the events listed. Trend widgets use the trends' CSV (trendCsv).

import type { LineSeries } from './shape';
import { csvCell } from './trends';
import type { AnalyticsEvent, TopEventsBody } from './types';
import { toZoneInput } from './zone';

const table = (rows: (string | number | null | undefined)[][]) => rows.map((r) => r.map(csvCell).join(',')).join('\r\n') + '\r\n';

/**
 * One row per bucket: its start (RFC 3339, UTC), the same as the zone's clock reads it, events
 * and unique users, and the previous period's when compared.
 */
export function lineCsv(series: LineSeries, zone: string, previous: { events: number[]; users: number[] } | null = null): string {
  const head = ['bucket_start', `bucket_start (${zone})`, 'events', 'unique_users'];
  if (previous) head.push('events_previous_period', 'unique_users_previous_period');
  const rows: (string | number | null)[][] = [head];
  series.xs.forEach((x, i) => {
    const ms = x * 1000;
    const row: (string | number | null)[] = [new Date(ms).toISOString(), toZoneInput(ms, zone).replace('T', ' '), series.events[i] ?? 0, series.users[i] ?? 0];
    if (previous) row.push(previous.events[i] ?? 0, previous.users[i] ?? 0);
    rows.push(row);
  });
  return table(rows);
}

/** The top events of a day: `date,event_name,count`, as listed. */
export function topCsv(top: TopEventsBody): string {
  return table([['date', 'event_name', 'count'], ...top.events.map((e) => [top.date, e.event_name, e.count])]);
}

/** A card: what it counts and its value (empty when not known yet). */
export function statCsv(title: string, value: number | null, note: string | null): string {
  return table([
    ['metric', 'value', 'note'],
    [title, value, note],
  ]);
}

/** The events listed, newest first, with their properties as JSON. */
export function eventsCsv(events: AnalyticsEvent[]): string {
  return table([
    ['timestamp', 'event_name', 'event_type', 'user_id', 'session_id', 'id', 'topic', 'partition', 'offset', 'properties'],
    ...events.map((e) => [
      e.timestamp,
      e.event_name,
      e.event_type,
      e.user_id,
      e.session_id,
      e.id,
      e.topic,
      e.partition,
      e.offset,
      e.properties === null ? '' : JSON.stringify(e.properties),
    ]),
  ]);
}

/** A file name for a widget's CSV: `events-today-2026-12-05.csv`. */
export function widgetFileName(title: string, now: number): string {
  const slug =
    title
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 60) || 'widget';
  return `${slug}-${new Date(now).toISOString().slice(0, 10)}.csv`;
}
