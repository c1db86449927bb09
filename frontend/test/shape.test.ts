import { describe, expect, it } from 'vitest';
import { HOUR_MS, DAY_MS } from '../src/lib/range';
import {
  applyMessage,
  eventTypeSuggestions,
  initialState,
  lineSeries,
  liveBucketCount,
  mergePoints,
  mergeRecent,
  reduce,
  RECENT_LIMIT,
  statValue,
  toBuckets,
  topBars,
  trend,
  type DashState,
} from '../src/lib/shape';
import type { SubscribeCommand, View } from '../src/lib/types';
import { counters, event, events, iso, point, snapshot, topEvents, update, uniqueUsers } from './fixtures';

const T0 = Date.parse('2026-11-27T00:00:00.000Z');
const NOW = T0 + 10 * HOUR_MS + 15 * 60_000; // 10:15 UTC

const live24h: View = { from: iso(T0 + 10 * HOUR_MS - 23 * HOUR_MS), to: null, granularity: 'hour', event_type: null };
const sub24h: SubscribeCommand = { type: 'subscribe', ...live24h };

function hours(n: number, startMs: number, f: (i: number) => number = (i) => i) {
  return Array.from({ length: n }, (_, i) => point(startMs + i * HOUR_MS, f(i)));
}

/** State after subscribe + snapshot of the live 24 h view. */
function subscribed(points = hours(24, Date.parse(live24h.from))): DashState {
  let s = reduce(initialState(), { type: 'subscribed', cmd: sub24h, now: NOW });
  s = reduce(s, { type: 'message', msg: snapshot(live24h, points), now: NOW });
  return s;
}

describe('snapshot -> chart series', () => {
  it('turns the snapshot points into uPlot series in epoch seconds, oldest first', () => {
    const from = Date.parse(live24h.from);
    const s = subscribed(hours(24, from, (i) => i * 10).reverse());
    expect(s.view?.liveBuckets).toBe(24);
    const ls = lineSeries(s.view!, NOW);
    expect(ls.xs).toHaveLength(24);
    expect(ls.xs[0]).toBe(from / 1000);
    expect(ls.xs[23]).toBe((T0 + 10 * HOUR_MS) / 1000);
    expect(ls.events[0]).toBe(0);
    expect(ls.events[23]).toBe(230);
    expect(ls.users[23]).toBe(Math.ceil(230 / 3));
  });

  it('takes counters, lag, top events, unique users and the recent list from the snapshot', () => {
    const s = subscribed();
    expect(s.counters?.events_5m).toBe(120);
    expect(s.lag).toEqual({ events: 0, freshness_ms: 850 });
    expect(s.view?.topEvents?.events[0].event_name).toBe('page_view');
    expect(s.view?.uniqueUsers?.unique_users).toBe(4512);
    expect(s.recent).toHaveLength(3);
    expect(s.awaitingSnapshot).toBe(false);
  });

  it('fills buckets the server did not send with zeros in a live window', () => {
    const from = Date.parse(live24h.from);
    const s = subscribed([point(from + 5 * HOUR_MS, 7)]);
    const ls = lineSeries(s.view!, NOW);
    expect(ls.xs).toHaveLength(24);
    expect(ls.events.filter((v) => v !== 0)).toEqual([7]);
    expect(ls.events[5]).toBe(7);
  });

  it('slides a live window with the clock', () => {
    const s = subscribed(hours(24, Date.parse(live24h.from), () => 1));
    const later = NOW + 2 * HOUR_MS;
    const ls = lineSeries(s.view!, later);
    expect(ls.xs).toHaveLength(24);
    expect(ls.xs[0]).toBe((Date.parse(live24h.from) + 2 * HOUR_MS) / 1000);
    expect(ls.events.slice(-2)).toEqual([0, 0]);
  });

  it('draws a fixed (custom) range as received', () => {
    const view: View = { from: iso(T0), to: iso(T0 + 3 * DAY_MS), granularity: 'day', event_type: 'click' };
    let s = reduce(initialState(), { type: 'subscribed', cmd: { type: 'subscribe', ...view }, now: NOW });
    s = reduce(s, {
      type: 'message',
      msg: snapshot(view, [point(T0, 1), point(T0 + DAY_MS, 2), point(T0 + 2 * DAY_MS, 3)]),
      now: NOW,
    });
    expect(s.view?.liveBuckets).toBeNull();
    expect(lineSeries(s.view!, NOW + 10 * DAY_MS).events).toEqual([1, 2, 3]);
  });
});

describe('merging changed timeseries points', () => {
  it('replaces existing buckets with absolute values and inserts new ones in order', () => {
    const base = toBuckets([point(T0, 1), point(T0 + 2 * HOUR_MS, 3)]);
    const merged = mergePoints(base, [point(T0 + 2 * HOUR_MS, 30), point(T0 + HOUR_MS, 20), point(T0 + 3 * HOUR_MS, 40)]);
    expect(merged.map((b) => [b.t, b.events])).toEqual([
      [T0, 1],
      [T0 + HOUR_MS, 20],
      [T0 + 2 * HOUR_MS, 30],
      [T0 + 3 * HOUR_MS, 40],
    ]);
    expect(base).toHaveLength(2); // not mutated
  });

  it('treats differently written timestamps of one bucket as the same bucket', () => {
    const merged = mergePoints(toBuckets([point('2026-11-27T10:00:00.000Z', 1)]), [point('2026-11-27T10:00:00Z', 5)]);
    expect(merged).toHaveLength(1);
    expect(merged[0].events).toBe(5);
  });

  it('ignores points with unparseable times', () => {
    expect(mergePoints([], [point('yesterday', 5)])).toEqual([]);
  });

  it('applies update.view points, top events and unique users to the chart', () => {
    let s = subscribed(hours(24, Date.parse(live24h.from), () => 1));
    s = applyMessage(
      s,
      update({
        view: {
          timeseries: [point(T0 + 10 * HOUR_MS, 99)],
          top_events: topEvents([['click', 999]]),
          unique_users: uniqueUsers(5000, false),
        },
      }),
      NOW,
    );
    const ls = lineSeries(s.view!, NOW);
    expect(ls.events[23]).toBe(99);
    expect(ls.events[22]).toBe(1);
    expect(topBars(s.view!.topEvents).labels).toEqual(['click']);
    expect(statValue('unique_users_range', s)).toMatchObject({ value: 5000, note: 'approximate (±0.4%)' });
    expect(s.lag).toEqual({ events: 5, freshness_ms: 1200 });
  });

  it('adds the next bucket when the live window slides and drops the one that left', () => {
    let s = subscribed(hours(24, Date.parse(live24h.from), () => 1));
    const later = NOW + HOUR_MS;
    s = applyMessage(s, update({ view: { timeseries: [point(T0 + 11 * HOUR_MS, 8)], top_events: topEvents([]), unique_users: uniqueUsers(1) } }), later);
    expect(s.view!.buckets).toHaveLength(24);
    const ls = lineSeries(s.view!, later);
    expect(ls.xs).toHaveLength(24);
    expect(ls.events[23]).toBe(8);
  });

  it('ignores update.view between a new subscribe and its snapshot (it is for the old view)', () => {
    let s = subscribed(hours(24, Date.parse(live24h.from), () => 1));
    s = reduce(s, { type: 'subscribed', cmd: { ...sub24h, event_type: 'click' }, now: NOW });
    s = applyMessage(
      s,
      update({
        events: [event({ id: 'new-one' })],
        counters: counters({ events_5m: 7 }),
        view: { timeseries: [point(T0 + 10 * HOUR_MS, 12345)], top_events: topEvents([]), unique_users: uniqueUsers(1) },
      }),
      NOW,
    );
    expect(lineSeries(s.view!, NOW).events[23]).toBe(1);
    expect(s.view!.uniqueUsers!.unique_users).toBe(4512);
    // Counters and events are not tied to the view: they still apply.
    expect(s.counters!.events_5m).toBe(7);
    expect(s.recent[0].id).toBe('new-one');
  });

  it('counts the buckets of a live subscribe', () => {
    expect(liveBucketCount(sub24h, NOW)).toBe(24);
    expect(liveBucketCount({ ...sub24h, to: iso(NOW) }, NOW)).toBeNull();
    const week: SubscribeCommand = { type: 'subscribe', from: iso(T0 - 6 * DAY_MS), to: null, granularity: 'day', event_type: null };
    expect(liveBucketCount(week, NOW)).toBe(7);
  });
});

describe('top events bars', () => {
  it('orders by count desc, then name, and keeps at most 10', () => {
    const body = topEvents([
      ...Array.from({ length: 12 }, (_, i): [string, number] => [`e${String(i).padStart(2, '0')}`, i]),
      ['b', 5],
      ['a', 5],
    ]);
    const bars = topBars(body);
    expect(bars.labels).toHaveLength(10);
    expect(bars.labels.slice(0, 3)).toEqual(['e11', 'e10', 'e09']);
    expect(bars.labels.slice(6, 9)).toEqual(['a', 'b', 'e05']);
    expect(bars.values[0]).toBe(11);
  });

  it('is empty without data', () => {
    expect(topBars(null)).toEqual({ labels: [], values: [] });
  });
});

describe('recent events list', () => {
  it('puts new events first, newest first, and keeps the 100 newest', () => {
    const old = events(90);
    const fresh = events(20);
    const merged = mergeRecent(old, fresh);
    expect(merged).toHaveLength(RECENT_LIMIT);
    expect(merged.slice(0, 20)).toEqual(fresh);
    expect(merged[20]).toBe(old[0]);
    expect(merged[99]).toBe(old[79]);
  });

  it('does not show an event twice', () => {
    const a = events(3);
    expect(mergeRecent(a, [event({ id: 'x' }), a[0]]).map((e) => e.id)).toEqual(['x', ...a.map((e) => e.id)]);
    expect(mergeRecent(a, [a[0]])).toHaveLength(3);
  });

  it('caps a large first snapshot and a large update', () => {
    const s = applyMessage(initialState(), snapshot(live24h, [], { recent_events: events(150) }), NOW);
    expect(s.recent).toHaveLength(100);
    const s2 = applyMessage(s, update({ events: events(250) }), NOW);
    expect(s2.recent).toHaveLength(100);
  });

  it('updates grow the list from the snapshot, newest first', () => {
    let s = subscribed();
    const first = s.recent[0];
    const batch = events(2);
    s = applyMessage(s, update({ events: batch }), NOW);
    expect(s.recent.map((e) => e.id)).toEqual([batch[0].id, batch[1].id, first.id, expect.any(String), expect.any(String)]);
  });

  it('suggests the event types seen in the recent list, most frequent first', () => {
    let s = subscribed();
    s = applyMessage(s, update({ events: [event({ event_type: 'page' }), event({ event_type: 'identify' }), event({ event_type: 'page' })] }), NOW);
    expect(eventTypeSuggestions(s)).toEqual(['track', 'page', 'identify']);
  });
});

describe('trend computation', () => {
  it('gives the change against the previous window', () => {
    expect(trend(120, 100)).toEqual({ direction: 'up', pct: 20, text: '+20%' });
    expect(trend(40, 50)).toEqual({ direction: 'down', pct: -20, text: '\u221220%' });
    expect(trend(103, 100).text).toBe('+3%');
    expect(trend(1033, 1000).text).toBe('+3.3%');
    expect(trend(250, 100).text).toBe('+150%');
  });

  it('handles no change and a previous window of zero', () => {
    expect(trend(5, 5)).toEqual({ direction: 'flat', pct: 0, text: 'no change' });
    expect(trend(0, 0)).toEqual({ direction: 'flat', pct: 0, text: 'no change' });
    expect(trend(7, 0)).toEqual({ direction: 'up', pct: null, text: 'new' });
    expect(trend(0, 7)).toMatchObject({ direction: 'down', text: '\u2212100%' });
  });

  it('feeds the 5-minute cards from counters and prev_* fields', () => {
    const s = applyMessage(initialState(), update({ counters: counters() }), NOW);
    expect(statValue('events_5m', s)).toMatchObject({ value: 120, trend: { direction: 'up', text: '+20%' } });
    expect(statValue('active_users_5m', s)).toMatchObject({ value: 40, trend: { direction: 'down', text: '\u221220%' } });
    expect(statValue('events_today', s)).toMatchObject({ value: 5120, trend: null });
    expect(statValue('unique_users_today', s)).toMatchObject({ value: 812 });
    expect(statValue('unique_users_range', s).value).toBeNull();
    expect(statValue('events_5m', initialState())).toEqual({ value: null, trend: null, note: null });
  });
});

describe('other messages', () => {
  it('records hello, errors and pongs', () => {
    let s = applyMessage(initialState(), { type: 'hello', org_id: 'o', server_time: iso(NOW), push_interval_ms: 1000 }, NOW);
    expect(s.pushIntervalMs).toBe(1000);
    s = applyMessage(s, { type: 'error', code: 'bad_command', message: 'nope' }, NOW + 1);
    expect(s.serverError).toBe('bad_command: nope');
    s = applyMessage(s, { type: 'pong' }, NOW + 2);
    expect(s.lastMessageAt).toBe(NOW + 2);
  });
});
