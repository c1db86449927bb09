import { describe, expect, it } from 'vitest';
import {
  applyTrendUpdate,
  bucketLabel,
  chartData,
  controlOf,
  csvCell,
  DEFAULT_QUERY,
  emptySlot,
  filterRowOf,
  grandTotal,
  offsetMinutes,
  parseTrendError,
  percentChange,
  previousTotals,
  reduceTrends,
  tickLabel,
  trendCsv,
  trendParams,
  trendQueryString,
  zoneLabel,
  zoneOptions,
  type TrendQuery,
  type TrendsBody,
  type TrendsState,
} from '../src/lib/trends';
import { decodeHash, encodeHash, parseFilter } from '../src/lib/urlstate';

export function body(over: Partial<TrendsBody> = {}): TrendsBody {
  return {
    org: 'o',
    measure: 'events',
    granularity: 'day',
    time_zone: 'Europe/Berlin',
    from: '2026-03-28T00:00:00+01:00',
    to: '2026-03-30T00:00:00+02:00',
    events: [],
    event_type: null,
    filters: ['properties.plan = pro'],
    breakdown: 'properties.country',
    breakdown_limit: 10,
    buckets: ['2026-03-28T00:00:00+01:00', '2026-03-29T00:00:00+01:00'],
    series: [
      { breakdown_value: 'de', other: false, values: [12, 9], total: 21 },
      { breakdown_value: null, other: true, other_values: 4, values: [3, 1], total: 4 },
    ],
    source: 'events',
    exact: true,
    events_scanned: 25,
    ...over,
  };
}

const NOW = Date.parse('2026-12-05T10:15:00Z');

describe('trend params', () => {
  it('a live preset has from = now - duration and no to; the rest only when not the default', () => {
    expect(trendParams(DEFAULT_QUERY, null, NOW)).toEqual({ from: NOW - 86_400_000 });
    const q: TrendQuery = {
      ...DEFAULT_QUERY,
      range: '7d',
      measure: 'unique_users',
      granularity: 'hour',
      events: ['signup', ' login ', ''],
      filters: [
        { field: 'properties.plan', op: '=', value: 'pro' },
        { field: 'properties.n', op: 'is set', value: 'ignored' },
        { field: 'properties.', op: '=', value: 'empty row' },
      ],
      breakdown: 'properties.country',
      breakdownLimit: 5,
      compare: true,
    };
    expect(trendParams(q, 'Asia/Kolkata', NOW)).toEqual({
      from: NOW - 7 * 86_400_000,
      measure: 'unique_users',
      granularity: 'hour',
      event: ['signup', 'login'],
      filter: ['properties.plan = pro', 'properties.n is set'],
      breakdown: 'properties.country',
      breakdown_limit: 5,
      compare: 'previous',
      tz: 'Asia/Kolkata',
    });
  });

  it('a custom range is fixed; the REST query repeats list parameters and adds to = now when live', () => {
    const p = trendParams({ ...DEFAULT_QUERY, range: 'custom', from: 1000, to: 2000, events: ['a', 'b'] }, null, NOW);
    expect(p).toEqual({ from: 1000, to: 2000, event: ['a', 'b'] });
    expect(trendQueryString(p, NOW)).toBe('from=1000&to=2000&event=a&event=b');
    expect(trendQueryString({ from: 5, filter: ['properties.plan = pro'] }, NOW)).toBe(`from=5&filter=properties.plan+%3D+pro&to=${NOW}`);
  });
});

describe('trend state', () => {
  const trend = (id: string, b = body()) => ({ type: 'message' as const, msg: { type: 'trend', id, trend: b } });

  it('answers for an older id are ignored; updates replace series and, when present, buckets/from/to', () => {
    let s: TrendsState = {};
    s = reduceTrends(s, { type: 'request', slot: 'panel', id: 'panel-1' });
    expect(s.panel).toMatchObject({ id: 'panel-1', pending: true, body: null });
    s = reduceTrends(s, trend('panel-0'));
    expect(s.panel.body).toBeNull();
    s = reduceTrends(s, trend('panel-1'));
    expect(s.panel).toMatchObject({ pending: false, stale: false, error: null });
    const series = [{ breakdown_value: 'de', other: false, values: [12, 10], total: 22 }];
    s = reduceTrends(s, { type: 'message', msg: { type: 'trend_update', id: 'panel-1', series } as never });
    expect(s.panel.body?.series).toEqual(series);
    expect(s.panel.body?.buckets).toEqual(body().buckets);
    s = reduceTrends(s, {
      type: 'message',
      msg: { type: 'trend_update', id: 'panel-1', series, buckets: ['b2', 'b3'], from: 'f2', to: 't2' } as never,
    });
    expect(s.panel.body).toMatchObject({ buckets: ['b2', 'b3'], from: 'f2', to: 't2' });
  });

  it('a refused question keeps the old answer marked stale, and ignores its updates', () => {
    let s: TrendsState = { panel: { ...emptySlot } };
    s = reduceTrends(s, { type: 'request', slot: 'panel', id: 'p1' });
    s = reduceTrends(s, trend('p1'));
    s = reduceTrends(s, { type: 'request', slot: 'panel', id: 'p2' });
    // An update of the old question while the new one is pending: not applied (old data, new labels).
    s = reduceTrends(s, { type: 'message', msg: { type: 'trend_update', id: 'p1', series: [] } as never });
    expect(s.panel.body?.series.length).toBe(2);
    s = reduceTrends(s, {
      type: 'message',
      msg: { type: 'error', code: 'bad_command', message: "trend 'p2': parameter 'filter': 'user_id > 5' is not allowed" } as never,
    });
    expect(s.panel).toMatchObject({ pending: false, stale: true, error: { parameter: 'filter', value: 'user_id > 5' } });
    s = reduceTrends(s, { type: 'message', msg: { type: 'trend_update', id: 'p2', series: [] } as never });
    expect(s.panel.body?.series.length).toBe(2);
    // Errors of other commands are not the trend's.
    expect(reduceTrends(s, { type: 'message', msg: { type: 'error', code: 'bad_command', message: 'x' } as never })).toBe(s);
  });

  it('parses a refusal: id, parameter and value; maps it to its control and filter row', () => {
    expect(parseTrendError("trend 'w1': parameter 'tz': 'Mars/Base' is not a time zone")).toEqual({
      id: 'w1',
      error: { message: "parameter 'tz': 'Mars/Base' is not a time zone", parameter: 'tz', value: 'Mars/Base' },
    });
    expect(parseTrendError("trend 'w1': a session keeps at most 20 trends")?.error.parameter).toBeNull();
    expect(parseTrendError('something else')).toBeNull();
    expect(controlOf('breakdown_limit')).toBe('breakdown');
    expect(controlOf('from')).toBe('range');
    expect(controlOf('event')).toBe('events');
    expect(controlOf(null)).toBe('other');
    const q = { ...DEFAULT_QUERY, filters: [{ field: 'properties.a', op: '=' as const, value: '1' }, { field: 'user_id', op: '>' as const, value: '5' }] };
    expect(filterRowOf(q, 'user_id > 5')).toBe(1);
    expect(filterRowOf(q, 'nope')).toBe(-1);
  });
});

describe('labels in the answer zone', () => {
  it('IANA zones through Intl, offsets by the offset, whatever the browser zone', () => {
    expect(bucketLabel('2026-03-29T00:00:00+01:00', 'Europe/Berlin', 'day')).toBe('Sun 29 Mar');
    expect(bucketLabel('2026-03-29T03:00:00+02:00', 'Europe/Berlin', 'hour')).toBe('29 Mar, 03:00');
    expect(bucketLabel('2026-12-05T10:30:00+05:30', '+05:30', 'hour')).toBe('5 Dec, 10:30');
    expect(tickLabel('2026-12-05T10:30:00+05:30', '+05:30', 'minute')).toBe('10:30');
    expect(tickLabel('2026-12-05T05:00:00Z', 'Asia/Kolkata', 'hour')).toBe('10:30');
    expect(bucketLabel('2026-11-30T00:00:00-05:00', 'America/New_York', 'week')).toBe('w/c 30 Nov 2026');
    expect(offsetMinutes('-03:30')).toBe(-210);
    expect(offsetMinutes('Europe/Berlin')).toBeNull();
    expect(zoneLabel('+05:30')).toBe('UTC+05:30');
  });

  it('zone choices: the browser zone, UTC, the org default and the selected one, each once', () => {
    const z = zoneOptions('Europe/Berlin', '+05:30');
    expect(z).toContain('UTC');
    expect(z).toContain('+05:30');
    expect(z.filter((x) => x === 'Europe/Berlin').length).toBe(1);
  });
});

describe('totals, change, chart data, CSV', () => {
  it('% change with thousands separators; a distinct measure broken down has no grand total', () => {
    expect(percentChange(25_000, 10)).toEqual({ pct: 249_900, text: '+249,900%' });
    expect(percentChange(2_345.5, 100).text).toBe('+2,245.5%');
    expect(percentChange(90, 100).text).toBe('\u221210%');
    expect(percentChange(5, 0).text).toBe('new');
    expect(percentChange(0, 0).text).toBe('no change');
    const b = body();
    expect(grandTotal(b.series, 'events', b.breakdown)).toBe(25);
    expect(grandTotal(b.series, 'unique_users', b.breakdown)).toBeNull();
    expect(grandTotal([b.series[0]], 'unique_users', null)).toBe(21);
  });

  it('the previous period is drawn aligned bucket for bucket, matched by breakdown value', () => {
    const b = body({
      previous: {
        from: 'a',
        to: 'b',
        buckets: ['p0', 'p1'],
        series: [
          { breakdown_value: null, other: true, other_values: 2, values: [1, 1], total: 2 },
          { breakdown_value: 'de', other: false, values: [5, 6], total: 11 },
        ],
      },
    });
    const d = chartData(b);
    expect(d.xs).toEqual([0, 1]);
    expect(d.series.map((s) => [s.label, s.previous, s.color, s.values])).toEqual([
      ['de', false, 0, [12, 9]],
      ['Other (4 values)', false, 1, [3, 1]],
      ['de (previous)', true, 0, [5, 6]],
      ['Other (4 values) (previous)', true, 1, [1, 1]],
    ]);
  });

  it("each series' previous total: matched, 0 when the previous period lists every value, else unknown", () => {
    const prev = (series: TrendsBody['series']) => ({ from: 'a', to: 'b', buckets: ['p0', 'p1'], series });
    const b = body({ previous: prev([{ breakdown_value: 'de', other: false, values: [1, 1], total: 2 }]) });
    expect(previousTotals(b)).toEqual([2, null]); // the current "other" has no counterpart
    const c = body({ series: [body().series[0], { breakdown_value: 'fr', other: false, values: [1, 0], total: 1 }], previous: prev([{ breakdown_value: 'de', other: false, values: [1, 1], total: 2 }]) });
    expect(previousTotals(c)).toEqual([2, 0]);
    const d = body({ series: c.series, previous: prev([{ breakdown_value: null, other: true, other_values: 3, values: [1, 1], total: 2 }]) });
    expect(previousTotals(d)).toEqual([null, null]);
    expect(previousTotals(body())).toEqual([null, null]);
  });

  it('CSV: RFC 4180 quoting, a row per bucket, the previous period and the totals', () => {
    expect(csvCell('a,b')).toBe('"a,b"');
    expect(csvCell('say "hi"')).toBe('"say ""hi"""');
    expect(csvCell('line\nbreak')).toBe('"line\nbreak"');
    expect(csvCell(null)).toBe('');
    const b = body({
      series: [
        { breakdown_value: 'a,"b"', other: false, values: [1, 2], total: 3 },
        { breakdown_value: null, other: false, values: [0, 1], total: 1 },
      ],
      previous: { from: 'x', to: 'y', buckets: ['p0', 'p1'], series: [{ breakdown_value: 'a,"b"', other: false, values: [4, 5], total: 9 }] },
    });
    expect(trendCsv(b)).toBe(
      [
        'bucket,"a,""b""",(not set),previous_bucket,"a,""b"" (previous)"',
        '2026-03-28T00:00:00+01:00,1,0,p0,4',
        '2026-03-29T00:00:00+01:00,2,1,p1,5',
        'total,3,1,,9',
        '',
      ].join('\r\n'),
    );
    expect(trendCsv(b, false).split('\r\n')[0]).toBe('bucket,"a,""b""",(not set)');
  });
});

describe('the view in the URL', () => {
  it('round-trips range, filters, breakdown, measure, tz and the dashboard; never anything else', () => {
    const query: TrendQuery = {
      ...DEFAULT_QUERY,
      range: '7d',
      measure: 'unique_sessions',
      granularity: 'week',
      events: ['signup', 'a&b'],
      filters: [
        { field: 'properties.plan', op: '!=', value: 'free tier' },
        { field: 'properties.n', op: 'is not set', value: '' },
      ],
      breakdown: 'properties.country',
      breakdownLimit: 3,
      compare: true,
    };
    const page = { events: ['signup', 'log in'], filters: ['properties.plan = pro & co', 'user_id is set'], compare: true };
    const state = { dashboard: 'd1', view: { range: '7d' as const, eventType: 'track' }, query, tz: 'Asia/Kolkata', page };
    const hash = encodeHash(state);
    expect(hash).not.toContain('token');
    expect(decodeHash(`#${hash}`)).toEqual(state);
    const custom = { dashboard: null, view: { range: 'custom' as const, from: 1, to: 2, eventType: null }, query: { ...DEFAULT_QUERY, range: 'custom' as const, from: 10, to: 20 }, tz: null, page: null };
    expect(decodeHash(encodeHash(custom))).toEqual(custom);
  });

  it('ignores what it does not know', () => {
    expect(decodeHash('#r=5y&tr=nope&m=x&tz=&pe=&pf=')).toEqual({ dashboard: null, view: null, query: null, tz: null, page: null });
    expect(decodeHash('#tr=24h&g=fortnight&bl=500&f=garbage').query).toEqual(DEFAULT_QUERY);
    expect(parseFilter('properties.x >= 10')).toEqual({ field: 'properties.x', op: '>=', value: '10' });
    expect(parseFilter('user_id is set')).toEqual({ field: 'user_id', op: 'is set', value: '' });
  });
});

describe('trend_update', () => {
  it('keeps previous unless sent', () => {
    const b = body({ previous: { from: 'a', to: 'b', buckets: [], series: [] } });
    expect(applyTrendUpdate(b, { type: 'trend_update', id: 'x', series: [] }).previous).toBe(b.previous);
  });

  it('from_bucket: the values from that bucket replace the held ones', () => {
    const b = body({ series: [{ breakdown_value: 'a', values: [1, 2, 3], total: 6 }, { breakdown_value: 'b', values: [4, 5, 6], total: 15 }] });
    const u = applyTrendUpdate(b, {
      type: 'trend_update',
      id: 'x',
      from_bucket: 2,
      series: [
        { breakdown_value: 'a', values: [9], total: 12 },
        { breakdown_value: 'b', values: [7], total: 16 },
      ],
    });
    expect(u.series.map((s) => [s.values, s.total])).toEqual([
      [[1, 2, 9], 12],
      [[4, 5, 7], 16],
    ]);
    // Without it, the series are whole.
    expect(applyTrendUpdate(b, { type: 'trend_update', id: 'x', series: [{ values: [0], total: 0 }] }).series).toEqual([{ values: [0], total: 0 }]);
  });
});

describe('trend widgets', () => {
  it('keep the panel question with a range that ends now, and ask it back from now in the zone shown', async () => {
    const { widgetTrend, widgetTrendParams, trendTitle, DEFAULT_QUERY } = await import('../src/lib/trends');
    const q = {
      ...DEFAULT_QUERY,
      range: '7d' as const,
      measure: 'unique_users' as const,
      events: ['signup', ' login '],
      filters: [{ field: 'properties.plan', op: '=' as const, value: 'pro' }],
      breakdown: 'properties.plan',
      breakdownLimit: 5,
      compare: true,
    };
    const t = widgetTrend(q)!;
    expect(t).toEqual({
      range: '7d',
      measure: 'unique_users',
      event: ['signup', 'login'],
      filter: ['properties.plan = pro'],
      breakdown: 'properties.plan',
      breakdown_limit: 5,
      compare: 'previous',
    });
    expect(widgetTrend({ ...q, range: 'custom', from: 1, to: 2 })).toBeNull();
    const now = Date.parse('2026-12-05T12:00:00Z');
    const p = widgetTrendParams(t, 'Asia/Kolkata', now);
    expect(p.from).toBe(now - 7 * 86_400_000);
    expect(p.tz).toBe('Asia/Kolkata');
    expect(p.range).toBeUndefined();
    expect(p.to).toBeUndefined();
    expect(trendTitle(q)).toBe('Unique users of signup, login by properties.plan, last 7 days');
  });

  it('are kept by sanitize and checked by validate', async () => {
    const { addTrendWidget, sanitize, validate } = await import('../src/lib/layout');
    const ws = addTrendWidget([{ id: 'w1', kind: 'line', x: 0, y: 0, w: 8, h: 5 }], { range: '24h' }, 'Events, last 24 hours');
    expect(ws[1]).toMatchObject({ id: 'w2', kind: 'trend', trend: { range: '24h' }, y: 5, w: 6, h: 5 });
    expect(sanitize(ws)).toEqual(ws);
    expect(sanitize([{ id: 'x', kind: 'trend', x: 0, y: 0, w: 6, h: 5 }])).toEqual([]);
    expect(validate('D', ws)).toEqual([]);
    expect(validate('D', [{ ...ws[0], trend: { range: '1h' } }])).toHaveLength(1);
  });
});
