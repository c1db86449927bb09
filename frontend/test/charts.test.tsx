// @vitest-environment happy-dom
// The real uPlot with the charts' options, on a canvas stand-in (happy-dom draws nothing): checks
// that uPlot accepts the options (time axis, dual scales, horizontal bars), that data updates
// go through setData without re-creating the plot, and that unmounting cleans up.

import { render } from 'preact';
import { act } from 'preact/test-utils';
import { afterEach, beforeAll, beforeEach, expect, it, vi } from 'vitest';
import { BarChart, LineChart } from '../src/components/charts';
import { TrendChart, tickIndices } from '../src/components/TrendChart';
import { formatCompact, formatPercent } from '../src/lib/format';
import type { TrendsBody } from '../src/lib/trends';

beforeAll(() => {
  // A 2D context that accepts every call; measureText answers something plausible.
  const ctx = new Proxy(
    {},
    {
      get(target: Record<string | symbol, unknown>, prop) {
        if (prop in target) return target[prop];
        if (prop === 'measureText') return (t: string) => ({ width: t.length * 7, actualBoundingBoxAscent: 9, actualBoundingBoxDescent: 2 });
        if (prop === 'canvas') return undefined;
        return () => undefined;
      },
      set(target, prop, value) {
        target[prop] = value;
        return true;
      },
    },
  );
  vi.spyOn(HTMLCanvasElement.prototype, 'getContext').mockImplementation(() => ctx as never);
  if (!('Path2D' in globalThis)) {
    (globalThis as Record<string, unknown>).Path2D = class {
      moveTo() {}
      lineTo() {}
      rect() {}
      arc() {}
      closePath() {}
      bezierCurveTo() {}
      addPath() {}
    };
  }
  // A laid-out box: happy-dom has no layout, so give the chart areas a size.
  Object.defineProperty(HTMLElement.prototype, 'clientWidth', { configurable: true, get: () => 600 });
  Object.defineProperty(HTMLElement.prototype, 'clientHeight', { configurable: true, get: () => 300 });
});

let container: HTMLElement;
let errors: unknown[][];

beforeEach(() => {
  container = document.createElement('div');
  document.body.appendChild(container);
  errors = [];
  vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void errors.push(a));
});

afterEach(() => {
  container.remove();
  expect(errors).toEqual([]);
});

const H = 3600;

it('draws the line chart with real uPlot and updates it in place', () => {
  const series = { xs: [0, H, 2 * H].map((x) => x + 1_795_000_000), events: [1, 5, 3], users: [1, 2, 1] };
  act(() => render(<LineChart series={series} granularity="hour" zone="UTC" />, container));
  const root = container.querySelector('.uplot')!;
  expect(root).not.toBeNull();
  expect(container.querySelectorAll('canvas')).toHaveLength(1);
  expect(container.querySelector('.u-legend')!.textContent).toContain('Unique users');
  const next = { xs: [...series.xs, series.xs[2] + H], events: [1, 5, 3, 9], users: [1, 2, 1, 4] };
  act(() => render(<LineChart series={next} granularity="hour" zone="UTC" />, container));
  expect(container.querySelector('.uplot')).toBe(root); // same plot, new data
  expect(container.querySelector('[data-testid="chart-timeseries"]')!.getAttribute('data-total')).toBe('18');
  // 2026-11-18T11:06:40Z: the first point's label in the page's zone.
  expect(container.querySelector('[data-testid="chart-timeseries"]')!.getAttribute('data-first-label')).toBe('18 Nov, 11:06');
  act(() => render(<LineChart series={next} granularity="hour" zone="+05:30" />, container));
  expect(container.querySelector('.uplot')).not.toBe(root); // another zone, new plot
  expect(container.querySelector('[data-testid="chart-timeseries"]')!.getAttribute('data-first-label')).toBe('18 Nov, 16:36');
  act(() => render(<LineChart series={next} granularity="day" zone="America/New_York" />, container));
  expect(container.querySelector('[data-testid="chart-timeseries"]')!.getAttribute('data-first-label')).toBe('Wed 18 Nov');
  act(() => render(null, container));
  expect(container.querySelector('.uplot')).toBeNull();
});

it('draws the line chart with no data', () => {
  act(() => render(<LineChart series={{ xs: [], events: [], users: [] }} granularity="hour" zone="UTC" />, container));
  expect(container.querySelector('.chart-empty')!.textContent).toBe('No data yet');
  act(() => render(null, container));
});

it('draws horizontal bars with real uPlot', () => {
  const bars = { labels: ['page_view', 'a_very_long_event_name_indeed', 'click'], values: [812, 400, 12] };
  act(() => render(<BarChart bars={bars} date="2026-11-27" />, container));
  const fig = container.querySelector('[data-testid="chart-top-events"]')!;
  expect(fig.getAttribute('data-bars')).toBe('3');
  expect(fig.querySelector('[role="img"]')!.getAttribute('aria-label')).toContain('page_view 812');
  act(() => render(<BarChart bars={{ labels: ['x'], values: [1] }} date="2026-11-27" />, container));
  act(() => render(<BarChart bars={{ labels: [], values: [] }} date={null} />, container));
  expect(container.querySelector('.chart-empty')!.textContent).toBe('No events yet');
  act(() => render(null, container));
});

const trendBody = (over: Partial<TrendsBody> = {}): TrendsBody => ({
  org: 'o',
  measure: 'events',
  granularity: 'hour',
  time_zone: '+05:30',
  from: '2026-12-05T10:30:00+05:30',
  to: '2026-12-05T13:30:00+05:30',
  events: [],
  event_type: null,
  filters: [],
  breakdown: 'event_name',
  breakdown_limit: 10,
  buckets: ['2026-12-05T10:30:00+05:30', '2026-12-05T11:30:00+05:30', '2026-12-05T12:30:00+05:30'],
  series: [
    { breakdown_value: 'signup', other: false, values: [1, 2, 3], total: 6 },
    { breakdown_value: 'login', other: false, values: [0, 0, 4], total: 4 },
  ],
  ...over,
});

it('draws a trend with real uPlot: a line per series, the previous period dashed, updates in place', () => {
  const prev = { from: 'a', to: 'b', buckets: ['p0', 'p1', 'p2'], series: [{ breakdown_value: 'signup', other: false, values: [1, 1, 1], total: 3 }] };
  act(() => render(<TrendChart body={trendBody({ previous: prev })} />, container));
  const root = container.querySelector('.uplot')!;
  const legend = container.querySelector('.u-legend')!.textContent ?? '';
  expect(legend).toContain('signup (previous)');
  expect(legend).toContain('UTC+05:30');
  const fig = container.querySelector('[data-testid="trend-chart"]')!;
  expect(fig.getAttribute('data-total')).toBe('10');
  expect(fig.getAttribute('data-previous-total')).toBe('3');
  expect(fig.getAttribute('data-first-label')).toBe('5 Dec, 10:30');
  // New values, same series: same plot.
  act(() => render(<TrendChart body={trendBody({ previous: prev, series: [{ breakdown_value: 'signup', other: false, values: [1, 2, 9], total: 12 }, { breakdown_value: 'login', other: false, values: [0, 0, 4], total: 4 }] })} />, container));
  expect(container.querySelector('.uplot')).toBe(root);
  expect(fig.getAttribute('data-total')).toBe('16');
  // Other series: a new plot. All zeros: still drawn.
  act(() => render(<TrendChart body={trendBody({ breakdown: null, series: [{ values: [0, 0, 0], total: 0 }] })} stale />, container));
  expect(container.querySelector('.uplot')).not.toBe(root);
  expect(container.querySelector('[data-testid="trend-chart"]')!.getAttribute('data-stale')).toBe('true');
  act(() => render(null, container));
});

it('tick positions and labels do not crowd', () => {
  expect(tickIndices(61, 600)).toEqual([0, 9, 18, 27, 36, 45, 54]);
  expect(tickIndices(3, 600)).toEqual([0, 1, 2]);
  expect(tickIndices(0, 600)).toEqual([]);
  expect(formatCompact(950)).toBe('950');
  expect(formatCompact(1_200)).toMatch(/^1\.2\s?K$/i);
  expect(formatCompact(3_400_000)).toMatch(/^3\.4\s?M$/i);
  expect(formatPercent(1234.56)).toMatch(/^1.234[.,]6%$/);
});
