// The page's time zone: the one chosen in the control, else the org's default, else UTC.
// Every time the page shows or reads (chart axes, "today", the custom range's inputs, event
// times) is in it. Zones are IANA names (`Europe/Berlin`, daylight saving included), `UTC`,
// or fixed offsets (`+05:30`), as the trends API takes them.

const OFFSET = /^([+-])(\d{2}):?(\d{2})$/;

/** Minutes east of UTC for an offset zone (`+05:30`), else null. */
export function offsetMinutes(zone: string): number | null {
  const m = OFFSET.exec(zone);
  if (!m) return null;
  return (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3]));
}

/** The zone the page shows: `tz` (chosen), else the org's default, else UTC. */
export function effectiveZone(tz: string | null, orgZone: string | null): string {
  return tz || orgZone || 'UTC';
}

/** UTC itself (the rollups' days and the live view's buckets are UTC: no conversion needed). */
export function isUtc(zone: string): boolean {
  return zone === 'UTC' || zone === 'Etc/UTC' || zone === 'Z' || offsetMinutes(zone) === 0;
}

const partsCache = new Map<string, Intl.DateTimeFormat | null>();
function partsFormat(zone: string): Intl.DateTimeFormat | null {
  if (!partsCache.has(zone)) {
    let f: Intl.DateTimeFormat | null = null;
    try {
      f = new Intl.DateTimeFormat('en-US', {
        timeZone: zone,
        hourCycle: 'h23',
        year: 'numeric',
        month: 'numeric',
        day: 'numeric',
        hour: 'numeric',
        minute: 'numeric',
        second: 'numeric',
      });
    } catch {
      f = null;
    }
    partsCache.set(zone, f);
  }
  return partsCache.get(zone) ?? null;
}

/** The zone's offset from UTC at instant `ms`, in ms (an unknown zone counts as UTC). */
export function zoneOffsetMs(zone: string, ms: number): number {
  const fixed = offsetMinutes(zone);
  if (fixed !== null) return fixed * 60_000;
  if (isUtc(zone)) return 0;
  const f = partsFormat(zone);
  if (!f || !Number.isFinite(ms)) return 0;
  const p: Record<string, number> = {};
  for (const part of f.formatToParts(new Date(ms))) if (part.type !== 'literal') p[part.type] = Number(part.value);
  const wall = Date.UTC(p.year, p.month - 1, p.day, p.hour % 24, p.minute, p.second);
  return wall - Math.floor(ms / 1000) * 1000;
}

/** The wall-clock fields of instant `ms` in `zone`, as the UTC fields of a Date. */
export function wallClock(ms: number, zone: string): Date {
  return new Date(ms + zoneOffsetMs(zone, ms));
}

/**
 * A Date whose *local* fields are the zone's wall clock at `tSeconds` (what uPlot's `tzDate`
 * wants: its axis labels read local fields).
 */
export function chartDate(tSeconds: number, zone: string): Date {
  const w = wallClock(tSeconds * 1000, zone);
  return new Date(w.getUTCFullYear(), w.getUTCMonth(), w.getUTCDate(), w.getUTCHours(), w.getUTCMinutes(), w.getUTCSeconds());
}

const pad = (n: number) => String(n).padStart(2, '0');

/** `<input type="datetime-local">` value (minutes) for epoch ms, as the clock reads in `zone`. */
export function toZoneInput(ms: number, zone: string): string {
  const d = wallClock(ms, zone);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
}

const INPUT = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?$/;

/**
 * The instant a datetime-local value names in `zone`, or null when it is not one. A time
 * skipped by a DST change (02:30 on the spring-forward night) reads as the same clock time in
 * the offset before the change, i.e. just after the gap; a repeated one as its first instance.
 */
export function fromZoneInput(value: string, zone: string): number | null {
  const m = INPUT.exec(value);
  if (!m) return null;
  const [y, mo, d, h, mi, s] = m.slice(1).map((x) => (x === undefined ? 0 : Number(x)));
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 59) return null;
  const wall = Date.UTC(y, mo - 1, d, h, mi, s);
  if (!Number.isFinite(wall) || new Date(wall).getUTCDate() !== d) return null;
  // The offsets the zone has within a day of it: an instant matches when the clock reads the
  // value there; the earliest match wins, and in a gap the offset before the change is taken.
  const offsets = [wall - 86_400_000, wall, wall + 86_400_000].map((t) => zoneOffsetMs(zone, t));
  const matches = offsets
    .map((o) => wall - o)
    .filter((t) => toZoneInput(t, zone) === value.slice(0, 16))
    .sort((a, b) => a - b);
  return matches[0] ?? wall - offsets[0];
}

const fmtCache = new Map<string, Intl.DateTimeFormat>();
function fmt(opts: Intl.DateTimeFormatOptions): Intl.DateTimeFormat {
  const key = JSON.stringify(opts);
  let f = fmtCache.get(key);
  if (!f) {
    f = new Intl.DateTimeFormat('en-GB', { ...opts, timeZone: 'UTC' });
    fmtCache.set(key, f);
  }
  return f;
}

/** Instant `ms` formatted with `opts` as the clock reads in `zone`. */
export function formatInZone(ms: number, zone: string, opts: Intl.DateTimeFormatOptions): string {
  if (!Number.isFinite(ms)) return '–';
  return fmt(opts).format(wallClock(ms, zone));
}

/** The zone's calendar date at `ms`: `2026-03-29`. */
export function zoneDate(ms: number, zone: string): string {
  return toZoneInput(ms, zone).slice(0, 10);
}

/** A chart point's label: `Sat 28 Mar` for days, `28 Mar 14:00` for hours and minutes. */
export function pointLabel(tSeconds: number, granularity: string, zone: string): string {
  const ms = tSeconds * 1000;
  return granularity === 'day'
    ? formatInZone(ms, zone, { weekday: 'short', day: 'numeric', month: 'short' })
    : formatInZone(ms, zone, { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', hour12: false });
}

/** An event's time: time of day when on `now`'s date in `zone`, else date and time. */
export function eventTime(iso: string, now: number, zone: string): string {
  const ms = Date.parse(iso);
  if (!Number.isFinite(ms)) return iso;
  const sameDay = zoneDate(ms, zone) === zoneDate(now, zone);
  return sameDay
    ? formatInZone(ms, zone, { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false })
    : formatInZone(ms, zone, { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
}
