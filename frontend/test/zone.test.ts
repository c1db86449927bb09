import { describe, expect, it } from 'vitest';
import { describeSpec } from '../src/lib/range';
import { metricLabel, statValue, initialState } from '../src/lib/shape';
import type { TrendsBody, TrendsState } from '../src/lib/trends';
import { effectiveZone, eventTime, fromZoneInput, isUtc, pointLabel, toZoneInput, zoneDate, zoneOffsetMs } from '../src/lib/zone';
import { needsTrends, pageFilterText, ZONE_SLOTS, zoneData, zoneTrendParams } from '../src/lib/zoneview';

const T = (iso: string) => Date.parse(iso);

describe('zones', () => {
  it('picks the chosen zone, else the org default, else UTC', () => {
    expect(effectiveZone('Asia/Tokyo', 'Europe/Berlin')).toBe('Asia/Tokyo');
    expect(effectiveZone(null, 'Europe/Berlin')).toBe('Europe/Berlin');
    expect(effectiveZone(null, null)).toBe('UTC');
    expect(isUtc('UTC')).toBe(true);
    expect(isUtc('+00:00')).toBe(true);
    expect(isUtc('Europe/London')).toBe(false); // UTC in winter only
  });

  it('knows offsets across daylight saving and fixed offsets', () => {
    expect(zoneOffsetMs('Europe/Berlin', T('2026-01-15T12:00:00Z'))).toBe(3_600_000);
    expect(zoneOffsetMs('Europe/Berlin', T('2026-07-15T12:00:00Z'))).toBe(7_200_000);
    expect(zoneOffsetMs('America/New_York', T('2026-07-15T12:00:00Z'))).toBe(-4 * 3_600_000);
    expect(zoneOffsetMs('+05:30', 0)).toBe(330 * 60_000);
    expect(zoneOffsetMs('-09:45', 0)).toBe(-585 * 60_000);
    expect(zoneOffsetMs('Not/AZone', 0)).toBe(0);
  });

  it('reads and writes datetime-local values in a zone, DST gaps and repeats included', () => {
    const ms = T('2026-11-27T09:05:00Z');
    expect(toZoneInput(ms, 'UTC')).toBe('2026-11-27T09:05');
    expect(toZoneInput(ms, 'Asia/Kolkata')).toBe('2026-11-27T14:35');
    expect(toZoneInput(ms, 'America/Los_Angeles')).toBe('2026-11-27T01:05');
    for (const z of ['UTC', 'Asia/Kolkata', 'America/Los_Angeles', 'Europe/Berlin', '+05:45', 'Australia/Lord_Howe']) {
      expect(fromZoneInput(toZoneInput(ms, z), z)).toBe(ms);
    }
    // Berlin, 29 Mar 2026: 02:00-03:00 does not exist; 02:30 reads as 03:30 CEST = 01:30Z.
    expect(fromZoneInput('2026-03-29T02:30', 'Europe/Berlin')).toBe(T('2026-03-29T01:30:00Z'));
    expect(fromZoneInput('2026-03-29T03:30', 'Europe/Berlin')).toBe(T('2026-03-29T01:30:00Z'));
    // 25 Oct 2026: 02:30 happens twice; the first (CEST) is taken.
    expect(fromZoneInput('2026-10-25T02:30', 'Europe/Berlin')).toBe(T('2026-10-25T00:30:00Z'));
    expect(fromZoneInput('2026-10-25T03:30', 'Europe/Berlin')).toBe(T('2026-10-25T02:30:00Z'));
    expect(fromZoneInput('2026-02-30T10:00', 'UTC')).toBeNull();
    expect(fromZoneInput('yesterday', 'UTC')).toBeNull();
    expect(fromZoneInput('2026-11-27T24:00', 'UTC')).toBeNull();
  });

  it('labels points, dates, event times and ranges in the zone', () => {
    const s = T('2026-12-05T20:00:00Z') / 1000;
    expect(pointLabel(s, 'hour', 'UTC')).toBe('5 Dec, 20:00');
    expect(pointLabel(s, 'hour', 'Asia/Kolkata')).toBe('6 Dec, 01:30');
    expect(pointLabel(s, 'day', 'Asia/Tokyo')).toBe('Sun 6 Dec');
    expect(zoneDate(s * 1000, 'America/New_York')).toBe('2026-12-05');
    expect(zoneDate(s * 1000, 'Asia/Tokyo')).toBe('2026-12-06');
    const now = T('2026-12-05T20:30:00Z');
    expect(eventTime('2026-12-05T20:00:00Z', now, 'UTC')).toBe('20:00:00');
    expect(eventTime('2026-12-05T18:00:00Z', now, 'Asia/Kolkata')).toBe('5 Dec, 23:30:00'); // yesterday there
    expect(describeSpec({ range: 'custom', from: T('2026-12-01T00:00:00Z'), to: T('2026-12-02T00:00:00Z'), eventType: null }, 'Asia/Kolkata')).toBe(
      '1 Dec 2026, 05:30 – 2 Dec 2026, 05:30',
    );
    expect(metricLabel('events_today', 'Asia/Kolkata')).toBe('Events today (Asia/Kolkata)');
    expect(metricLabel('unique_users_today', '+05:30')).toBe('Unique users today (UTC+05:30)');
    expect(metricLabel('events_5m', '+05:30')).toBe('Events (5 min)');
  });
});

const body = (over: Partial<TrendsBody>): TrendsBody => ({
  org: 'o',
  measure: 'events',
  granularity: 'day',
  time_zone: 'Asia/Kolkata',
  events: [],
  event_type: null,
  filters: [],
  breakdown: null,
  breakdown_limit: 10,
  from: '',
  to: '',
  buckets: [],
  series: [],
  ...over,
});

const slot = (b: TrendsBody | null, over = {}) => ({ id: 'x', pending: false, body: b, error: null, stale: false, ...over });

describe('the zoned dashboard', () => {
  const now = T('2026-12-05T20:00:00Z');

  it('asks trends in the zone for the view, today and the top events', () => {
    const p = zoneTrendParams({ range: '24h', eventType: 'track' }, 'Asia/Kolkata', now);
    expect(p[ZONE_SLOTS.lineEvents]).toEqual({ from: now - 86_400_000, granularity: 'hour', tz: 'Asia/Kolkata', event_type: 'track' });
    expect(p[ZONE_SLOTS.lineUsers]).toMatchObject({ measure: 'unique_users', event_type: 'track' });
    expect(p[ZONE_SLOTS.top]).toEqual({ from: now - 1000, granularity: 'day', tz: 'Asia/Kolkata', event_type: 'track', breakdown: 'event_name', breakdown_limit: 10 });
    expect(p[ZONE_SLOTS.todayUsers]).toEqual({ from: now - 1000, granularity: 'day', tz: 'Asia/Kolkata', event_type: 'track', measure: 'unique_users' });
    // Page filters narrow every part.
    const f = zoneTrendParams({ range: '7d', eventType: null }, 'UTC', now, { events: ['signup', 'login'], filters: ['properties.plan = pro'] });
    for (const slot of Object.values(ZONE_SLOTS)) expect(f[slot]).toMatchObject({ event: ['signup', 'login'], filter: ['properties.plan = pro'], tz: 'UTC' });
    expect(f[ZONE_SLOTS.lineEvents]).toMatchObject({ granularity: 'day', from: now - 7 * 86_400_000 });
    expect(pageFilterText({ events: ['signup'], filters: ['properties.plan = pro'] }, 'track')).toBe('signup · type track · properties.plan = pro');
    const b = zoneTrendParams({ range: '24h', eventType: null }, 'UTC', now, { events: [], filters: [], breakdown: 'properties.plan' });
    expect(b[ZONE_SLOTS.lineEvents]).toMatchObject({ breakdown: 'properties.plan', breakdown_limit: 5 });
    expect(b[ZONE_SLOTS.lineUsers].breakdown).toBeUndefined();
    expect(b[ZONE_SLOTS.top]).toMatchObject({ breakdown: 'event_name' });
    expect(needsTrends(true, { events: [], filters: [], breakdown: 'event_name' })).toBe(true);
    expect(needsTrends(true, { events: [], filters: [] })).toBe(false);
    const c = zoneTrendParams({ range: '24h', eventType: null }, 'UTC', now, { events: [], filters: [], compare: true });
    for (const slot of Object.values(ZONE_SLOTS)) expect(c[slot]).toMatchObject({ compare: 'previous' });
    const custom = zoneTrendParams({ range: 'custom', from: 1, to: 10 * 86_400_000, eventType: null }, '+05:30', now);
    expect(custom[ZONE_SLOTS.lineEvents]).toEqual({ from: 1, to: 10 * 86_400_000, granularity: 'day', tz: '+05:30' });
  });

  it('draws the answers: line, top events and today (the last day bucket)', () => {
    const buckets = ['2026-12-05T00:00:00+05:30', '2026-12-06T00:00:00+05:30'];
    const slots: TrendsState = {
      [ZONE_SLOTS.lineEvents]: slot(body({ buckets, series: [{ values: [5, 7], total: 12 }] })),
      [ZONE_SLOTS.lineUsers]: slot(body({ measure: 'unique_users', buckets: buckets.slice(1), series: [{ values: [3], total: 3 }] })),
      [ZONE_SLOTS.top]: slot(
        body({
          breakdown: 'event_name',
          buckets,
          series: [
            { breakdown_value: 'signup', values: [9, 4], total: 13 },
            { breakdown_value: 'login', values: [2, 0], total: 2 },
            { other: true, other_values: 3, values: [1, 6], total: 7 },
          ],
        }),
      ),
      [ZONE_SLOTS.todayUsers]: slot(body({ measure: 'unique_users', buckets, series: [{ values: [4, 2], total: 5 }], exact: true })),
    };
    const z = zoneData(slots, 'Asia/Kolkata', now);
    expect(z.line).toEqual({ xs: buckets.map((b) => Date.parse(b) / 1000), events: [5, 7], users: [0, 3] });
    expect(z.top).toEqual({ org_id: 'o', date: '2026-12-06', events: [{ event_name: 'signup', count: 4 }] });
    expect(z.eventsToday).toBe(10);
    expect(z.usersToday).toBe(2);
    const state = initialState();
    expect(statValue('events_today', state, z).value).toBe(10);
    expect(statValue('unique_users_today', state, z).value).toBe(2);
    expect(statValue('unique_users_range', state, z).value).toBe(3);
    expect(statValue('events_today', state, null).value).toBeNull();
    expect(z.stale).toBe(false);
    expect(z.previousLine).toBeNull();
    // Broken down, a bucket's events are every series' together.
    const split = zoneData(
      {
        [ZONE_SLOTS.lineEvents]: slot(
          body({ breakdown: 'event_name', buckets, series: [{ breakdown_value: 'a', values: [3, 1], total: 4 }, { other: true, values: [2, 6], total: 8 }] }),
        ),
      },
      'Asia/Kolkata',
      now,
    );
    expect(split.line?.events).toEqual([5, 7]);
    expect(split.lineBody?.breakdown).toBe('event_name');
    expect(statValue('unique_users_range', state, z).trend).toBeNull();
  });

  it('with compare: the previous line bucket for bucket, yesterday on the cards, the range users change', () => {
    const buckets = ['2026-12-05T10:00:00+00:00', '2026-12-05T11:00:00+00:00'];
    const prev = (values: number[], total: number) => ({ from: '', to: '', buckets: [], series: [{ values, total }] });
    const slots: TrendsState = {
      [ZONE_SLOTS.lineEvents]: slot(body({ buckets, series: [{ values: [5, 7], total: 12 }], previous: prev([4], 4) })),
      [ZONE_SLOTS.lineUsers]: slot(body({ measure: 'unique_users', buckets, series: [{ values: [2, 3], total: 4 }], previous: prev([1, 1], 2) })),
      [ZONE_SLOTS.top]: slot(
        body({
          breakdown: 'event_name',
          buckets: ['2026-12-05T00:00:00+00:00'],
          series: [{ breakdown_value: 'a', values: [6], total: 6 }],
          previous: { from: '', to: '', buckets: [], series: [{ breakdown_value: 'a', values: [30], total: 30 }, { other: true, values: [12], total: 12 }] },
        }),
      ),
      [ZONE_SLOTS.todayUsers]: slot(body({ measure: 'unique_users', buckets: ['2026-12-05T00:00:00+00:00'], series: [{ values: [3], total: 3 }], previous: prev([9], 9) })),
    };
    const z = zoneData(slots, 'UTC', now);
    expect(z.previousLine).toEqual({ events: [4, 0], users: [1, 1] });
    expect(z.eventsYesterday).toBe(42);
    expect(z.usersYesterday).toBe(9);
    const state = initialState();
    expect(statValue('events_today', state, z).note).toBe('yesterday (whole day): 42');
    expect(statValue('unique_users_range', state, z).trend).toMatchObject({ direction: 'up', text: '+100%' });
  });

  it('shows nothing old under a new question, and says when a part is refused or partial', () => {
    const b = body({ buckets: ['2026-12-05T00:00:00+05:30'], series: [{ values: [5], total: 5 }] });
    const pending = zoneData({ [ZONE_SLOTS.lineEvents]: slot(b, { pending: true }) }, 'Asia/Kolkata', now);
    expect(pending.line).toBeNull();
    const refused = zoneData(
      { [ZONE_SLOTS.top]: slot(b, { error: { message: "parameter 'tz': 'X' is not a time zone", parameter: 'tz', value: 'X' }, stale: true }) },
      'X',
      now,
    );
    expect(refused.top).toBeNull();
    expect(refused.error).toContain("parameter 'tz'");
    const partial = zoneData({ [ZONE_SLOTS.lineEvents]: slot({ ...b, complete: false }) }, 'Asia/Kolkata', now);
    expect(partial.stale).toBe(true);
  });
});
