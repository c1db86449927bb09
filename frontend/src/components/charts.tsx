// The two charts, drawn by uPlot (canvas). A chart is created once per shape (granularity) and
// then only fed new data with setData, which is what makes redraws every second cheap.

import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import { formatCompact, formatCount } from '../lib/format';
import type { Bars, LineSeries } from '../lib/shape';
import type { Granularity } from '../lib/types';
import { chartDate, pointLabel } from '../lib/zone';

const BLUE = '#2563eb';
const BLUE_FILL = 'rgba(37, 99, 235, 0.14)';
const AMBER = '#b45309';
/** A colour from the page's CSS variables (light or dark scheme), read at draw time. */
export function cssVar(name: string, fallback: string): string {
  try {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
  } catch {
    return fallback;
  }
}

/** Axis labels in the page's muted text colour (readable in light and dark mode). */
export const AXIS = () => cssVar('--muted', '#475569');
const GRID = 'rgba(71, 85, 105, 0.15)';

/** Size the plot to its box; the box's size comes from the layout, never from the plot. */
export function measure(el: HTMLElement, u: uPlot | null): { width: number; height: number } | null {
  const width = Math.floor(el.clientWidth);
  const boxHeight = Math.floor(el.clientHeight);
  if (width <= 0 || boxHeight <= 0) return null;
  const legend = u?.root.querySelector('.u-legend') as HTMLElement | null;
  const legendHeight = legend ? Math.ceil(legend.getBoundingClientRect().height) : 28;
  return { width, height: Math.max(80, boxHeight - legendHeight - 4) };
}

/** Creates the plot in `box` when `deps` change, resizes it with the box, destroys it at the end. */
export function usePlot(
  box: { current: HTMLDivElement | null },
  make: (size: { width: number; height: number }) => { opts: uPlot.Options; data: uPlot.AlignedData },
  deps: unknown[],
): { current: uPlot | null } {
  const plot = useRef<uPlot | null>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const size = measure(el, null) ?? { width: 300, height: 200 };
    const { opts, data } = make(size);
    const u = new uPlot({ ...opts, ...size }, data, el);
    plot.current = u;
    const fit = () => {
      const s = measure(el, u);
      if (s && (s.width !== u.width || s.height !== u.height)) u.setSize(s);
    };
    fit();
    const ro = typeof ResizeObserver === 'undefined' ? null : new ResizeObserver(fit);
    ro?.observe(el);
    return () => {
      ro?.disconnect();
      u.destroy();
      plot.current = null;
    };
  }, deps);
  return plot;
}

/** Tick steps of count axes: whole numbers only (no "0 0 0 1 1 1" when every value is 0 or 1). */
export const COUNT_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 2.5e3, 5e3, 1e4, 2e4, 2.5e4, 5e4, 1e5, 2e5, 2.5e5, 5e5, 1e6, 2e6, 2.5e6, 5e6, 1e7, 2e7, 5e7, 1e8, 2e8, 5e8, 1e9, 2e9, 5e9, 1e10];

export function niceMax(max: number): number {
  if (!(max > 0)) return 1;
  return uPlot.rangeNum(0, max, 0.1, true)[1] ?? max;
}

/** A point's label in the page's zone: `Sat 28 Mar` for days, `28 Mar, 14:00` for hours. */
export function bucketLabel(tSeconds: number, g: Granularity, zone: string): string {
  return pointLabel(tSeconds, g, zone);
}

export interface LineChartProps {
  series: LineSeries;
  granularity: Granularity;
  /** The zone the axis and the labels read in (the buckets are the zone's when it is not UTC). */
  zone: string;
  stale?: boolean;
  /** The previous period, bucket for bucket (drawn dashed). */
  previous?: { events: number[]; users: number[] } | null;
  testId?: string;
}

export function LineChart({ series, granularity, zone, stale = false, previous = null, testId = 'chart-timeseries' }: LineChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const latest = useRef(series);
  latest.current = series;
  const data = (): uPlot.AlignedData => (previous ? [series.xs, series.events, series.users, previous.events, previous.users] : [series.xs, series.events, series.users]);
  const withPrevious = previous !== null;
  const plot = usePlot(
    box,
    () => ({
      data: data(),
      opts: {
        width: 0,
        height: 0,
        // The axis reads the zone's wall clock, so each point sits on its hour or day there.
        tzDate: (ts: number) => chartDate(ts, zone),
        cursor: { drag: { x: false, y: false } },
        select: { show: false, left: 0, top: 0, width: 0, height: 0 },
        scales: {
          x: { time: true },
          y: { range: (_u, _min, max) => [0, niceMax(max)] },
          users: { range: (_u, _min, max) => [0, niceMax(max)] },
        },
        series: [
          { label: granularity === 'day' ? 'Day' : 'Hour', value: (_u, v) => (v == null ? '–' : bucketLabel(v, granularity, zone)) },
          {
            label: 'Events',
            scale: 'y',
            stroke: BLUE,
            fill: BLUE_FILL,
            width: 2,
            value: (_u, v) => formatCount(v),
          },
          { label: 'Unique users', scale: 'users', stroke: AMBER, width: 2, dash: [6, 4], value: (_u, v) => formatCount(v) },
          ...(withPrevious
            ? [
                { label: 'Events (previous period)', scale: 'y', stroke: BLUE, width: 1, dash: [2, 3], value: (_u: uPlot, v: number | null) => formatCount(v) },
                { label: 'Unique users (previous period)', scale: 'users', stroke: AMBER, width: 1, dash: [2, 3], value: (_u: uPlot, v: number | null) => formatCount(v) },
              ]
            : []),
        ],
        axes: [
          { stroke: AXIS, grid: { stroke: GRID, width: 1 }, ticks: { stroke: GRID, width: 1 } },
          {
            scale: 'y',
            stroke: BLUE,
            size: 52,
            grid: { stroke: GRID, width: 1 },
            ticks: { stroke: GRID, width: 1 },
            incrs: COUNT_INCRS,
            values: (_u, vals) => vals.map((v) => formatCompact(v)),
          },
          {
            scale: 'users',
            side: 1,
            stroke: AMBER,
            size: 52,
            grid: { show: false },
            ticks: { stroke: GRID, width: 1 },
            incrs: COUNT_INCRS,
            values: (_u, vals) => vals.map((v) => formatCompact(v)),
          },
        ],
      },
    }),
    [granularity, zone, withPrevious],
  );

  useEffect(() => {
    plot.current?.setData(data());
  }, [series, previous]);

  const total = series.events.reduce((a, b) => a + b, 0);
  const peak = series.events.reduce((a, b) => Math.max(a, b), 0);
  const unit = granularity === 'day' ? 'day' : 'hour';
  const summary =
    series.xs.length === 0
      ? 'Events over time: no data yet.'
      : `Events per ${unit} in ${zone}: ${series.xs.length} ${unit}s from ${bucketLabel(series.xs[0], granularity, zone)}, ${formatCount(total)} events in all, at most ${formatCount(peak)} in one ${unit}.`;
  return (
    <figure
      class={`chart${stale ? ' stale' : ''}`}
      data-testid={testId}
      data-points={series.xs.length}
      data-total={total}
      data-granularity={granularity}
      data-zone={zone}
      data-previous-total={previous ? previous.events.reduce((a, b) => a + b, 0) : ''}
      data-first-label={series.xs.length ? bucketLabel(series.xs[0], granularity, zone) : ''}
    >
      <div class="chart-area" ref={box} role="img" aria-label={summary} />
      {series.xs.length === 0 && <p class="chart-empty">No data yet</p>}
    </figure>
  );
}

function truncate(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

export interface BarChartProps {
  bars: Bars;
  date: string | null;
  testId?: string;
}

export function BarChart({ bars, date, testId = 'chart-top-events' }: BarChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const labels = useRef(bars.labels);
  labels.current = bars.labels;
  const xs = (b: Bars) => b.labels.map((_, i) => i);
  const plot = usePlot(
    box,
    () => ({
      data: [xs(bars), bars.values],
      opts: {
        width: 0,
        height: 0,
        cursor: { drag: { x: false, y: false }, points: { show: false } },
        select: { show: false, left: 0, top: 0, width: 0, height: 0 },
        // Horizontal bars: the category scale runs top to bottom, counts left to right.
        scales: {
          x: { time: false, ori: 1, dir: -1, range: (_u, min, max) => [min - 0.5, max + 0.5] },
          y: { ori: 0, dir: 1, range: (_u, _min, max) => [0, niceMax(max)] },
        },
        series: [
          { label: 'Event', value: (_u, i) => (i == null ? '–' : (labels.current[i] ?? '')) },
          {
            label: 'Count',
            fill: BLUE,
            stroke: BLUE,
            width: 0,
            points: { show: false },
            paths: uPlot.paths.bars!({ size: [0.7, 36] }),
            value: (_u, v) => formatCount(v),
          },
        ],
        axes: [
          {
            side: 3,
            stroke: AXIS,
            grid: { show: false },
            ticks: { show: false },
            gap: 6,
            splits: (u) => (u.data[0] as number[]).slice(),
            values: (_u, splits) => splits.map((i) => truncate(labels.current[i] ?? '', 18)),
            size: () => Math.min(150, 12 + 7 * Math.max(4, ...labels.current.map((l) => Math.min(18, l.length)))),
          },
          {
            side: 2,
            stroke: AXIS,
            grid: { stroke: GRID, width: 1 },
            ticks: { stroke: GRID, width: 1 },
            incrs: COUNT_INCRS,
            values: (_u, vals) => vals.map((v) => formatCompact(v)),
          },
        ],
      },
    }),
    [],
  );

  useEffect(() => {
    plot.current?.setData([xs(bars), bars.values]);
  }, [bars]);

  const summary =
    bars.labels.length === 0
      ? 'Top events: none yet.'
      : `Top events${date ? ` on ${date}` : ''}: ` +
        bars.labels.map((l, i) => `${l} ${formatCount(bars.values[i])}`).join(', ') +
        '.';
  return (
    <figure class="chart" data-testid={testId} data-bars={bars.labels.length}>
      <div class="chart-area" ref={box} role="img" aria-label={summary} />
      {bars.labels.length === 0 && <p class="chart-empty">No events yet</p>}
    </figure>
  );
}
