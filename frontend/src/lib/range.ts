// Time ranges: the selector's presets and custom ranges, turned into `subscribe` commands.

import type { Granularity, SubscribeCommand } from './types';
import { formatInZone } from './zone';

export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;

export type PresetKey = '1h' | '24h' | '7d' | '30d';
export type RangeKey = PresetKey | 'custom';

export const PRESETS: { key: PresetKey; label: string; ms: number }[] = [
  { key: '1h', label: 'Last hour', ms: HOUR_MS },
  { key: '24h', label: 'Last 24 hours', ms: 24 * HOUR_MS },
  { key: '7d', label: 'Last 7 days', ms: 7 * DAY_MS },
  { key: '30d', label: 'Last 30 days', ms: 30 * DAY_MS },
];

/** What the user picked: a live preset, or a fixed custom range (epoch ms, `from` < `to`). */
export type ViewSpec =
  | { range: PresetKey; eventType: string | null }
  | { range: 'custom'; from: number; to: number; eventType: string | null };

export const DEFAULT_VIEW: ViewSpec = { range: '24h', eventType: null };

export function bucketMs(g: Granularity): number {
  return g === 'hour' ? HOUR_MS : DAY_MS;
}

/** Hourly buckets for ranges up to 48 h, daily beyond. */
export function granularityFor(durationMs: number): Granularity {
  return durationMs <= 48 * HOUR_MS ? 'hour' : 'day';
}

/** Start of the (UTC) bucket that holds `ms`. */
export function floorToBucket(ms: number, g: Granularity): number {
  const b = bucketMs(g);
  return Math.floor(ms / b) * b;
}

export function presetMs(key: PresetKey): number {
  const p = PRESETS.find((p) => p.key === key);
  if (!p) throw new Error(`unknown range ${key}`);
  return p.ms;
}

export function specGranularity(spec: ViewSpec): Granularity {
  return spec.range === 'custom' ? granularityFor(spec.to - spec.from) : granularityFor(presetMs(spec.range));
}

/**
 * The window a live preset covers at `now`: [now - duration, now] widened to whole (UTC)
 * buckets, the current partial one last. So at 10:15 "last hour" is the 09:00 and 10:00
 * buckets, "last 24 hours" starts at 10:00 yesterday (25 points) and "last 7 days" is 8 days.
 */
export function liveWindow(key: PresetKey, now: number): { from: number; granularity: Granularity } {
  const ms = presetMs(key);
  const g = granularityFor(ms);
  return { from: floorToBucket(now - ms, g), granularity: g };
}

/**
 * Events an update carries to the dashboard: the explorer shows these as they come and counts
 * the rest ("N new events", loaded on demand). 100 whole events a second were ~50 KB/s a tab at
 * 500 events/s; 10 keep it under 10 KB/s.
 */
export const LIVE_EVENTS_PER_UPDATE = 10;

export function subscribeCommand(spec: ViewSpec, now: number): SubscribeCommand {
  const event_type = spec.eventType && spec.eventType.trim() !== '' ? spec.eventType.trim() : null;
  const events = LIVE_EVENTS_PER_UPDATE;
  if (spec.range === 'custom') {
    return {
      type: 'subscribe',
      from: new Date(spec.from).toISOString(),
      to: new Date(spec.to).toISOString(),
      granularity: granularityFor(spec.to - spec.from),
      event_type,
      events,
    };
  }
  const w = liveWindow(spec.range, now);
  return { type: 'subscribe', from: new Date(w.from).toISOString(), to: null, granularity: w.granularity, event_type, events };
}

/** The range as the page labels it; a custom range's ends as the clock reads in `zone`. */
export function describeSpec(spec: ViewSpec, zone = 'UTC'): string {
  if (spec.range === 'custom') {
    const opts: Intl.DateTimeFormatOptions = { day: 'numeric', month: 'short', year: 'numeric', hour: '2-digit', minute: '2-digit', hour12: false };
    return `${formatInZone(spec.from, zone, opts)} – ${formatInZone(spec.to, zone, opts)}`;
  }
  return PRESETS.find((p) => p.key === spec.range)?.label ?? spec.range;
}

/** The period before the view's range, as a comparison names it: "the previous 24 hours". */
export function describePrevious(spec: ViewSpec): string {
  if (spec.range === 'custom') return 'the period before';
  return `the previous ${PRESETS.find((p) => p.key === spec.range)?.label.replace(/^Last /, '') ?? spec.range}`;
}

/** `<input type="datetime-local">` value (local time, minutes) for epoch ms, and back. */
export function toLocalInput(ms: number): string {
  const d = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function fromLocalInput(value: string): number | null {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(value)) return null;
  const ms = new Date(value).getTime(); // no zone suffix: parsed as local time
  return Number.isFinite(ms) ? ms : null;
}

/** Validates a custom range typed by the user: an error message, or null when usable. */
export function customRangeError(from: number | null, to: number | null): string | null {
  if (from === null || to === null) return 'Enter both a start and an end.';
  if (from >= to) return 'The start must be before the end.';
  return null;
}
