// A trend's chart (uPlot): one line per series, the previous period dashed in the same colour,
// aligned bucket for bucket. x is the bucket index, so DST days and weeks need no clock maths
// here, and every tick and label is the bucket string formatted in the answer's zone.

import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import { formatCompact, formatCount } from '../lib/format';
import { bucketLabel, chartData, tickLabel, zoneLabel, type TrendsBody } from '../lib/trends';
import { AXIS, COUNT_INCRS, niceMax, usePlot } from './charts';

export const PALETTE = ['#2563eb', '#d97706', '#059669', '#dc2626', '#7c3aed', '#0891b2', '#db2777', '#65a30d', '#9333ea', '#ea580c', '#0d9488'];
const GRID = 'rgba(100, 116, 139, 0.18)';

function alpha(hex: string, a: number): string {
  const n = Number.parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
}

/** Indices to put ticks at: about one per `px` pixels, evenly spaced. */
export function tickIndices(n: number, width: number, px = 80): number[] {
  if (n <= 0) return [];
  const max = Math.max(1, Math.floor(width / px));
  const step = Math.max(1, Math.ceil(n / max));
  const out: number[] = [];
  for (let i = 0; i < n; i += step) out.push(i);
  return out;
}

export interface TrendChartProps {
  body: TrendsBody;
  stale?: boolean;
  testId?: string;
}

export function TrendChart({ body, stale = false, testId = 'trend-chart' }: TrendChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const data = chartData(body);
  const latest = useRef({ body, data });
  latest.current = { body, data };
  // A new plot when the series (names, count, dashes) or the zone/granularity change.
  const shape = JSON.stringify([body.granularity, body.time_zone, data.series.map((s) => [s.label, s.previous, s.color])]);
  const aligned = (): uPlot.AlignedData => [data.xs, ...data.series.map((s) => s.values)] as uPlot.AlignedData;
  const plot = usePlot(
    box,
    () => ({
      data: aligned(),
      opts: {
        width: 0,
        height: 0,
        cursor: { drag: { x: false, y: false } },
        select: { show: false, left: 0, top: 0, width: 0, height: 0 },
        legend: { show: data.series.length <= 12 },
        scales: {
          // A little room at both ends, so the first and last tick labels are not cut.
          x: { time: false, range: (_u, min, max) => (min === max ? [min - 0.5, max + 0.5] : [min - (max - min) * 0.03, max + (max - min) * 0.03]) },
          y: { range: (_u, _min, max) => [0, niceMax(max)] },
        },
        series: [
          {
            label: zoneLabel(body.time_zone),
            value: (_u, i) => {
              const { body: b } = latest.current;
              return i == null || b.buckets[i] === undefined ? '–' : bucketLabel(b.buckets[i], b.time_zone, b.granularity);
            },
          },
          ...data.series.map((s) => {
            const c = PALETTE[s.color % PALETTE.length];
            return {
              label: s.label,
              stroke: s.previous ? alpha(c, 0.7) : c,
              width: s.previous ? 1.5 : 2,
              dash: s.previous ? [6, 4] : undefined,
              points: { show: data.xs.length <= 60 },
              value: (_u: uPlot, v: number | null) => formatCount(v),
            } as uPlot.Series;
          }),
        ],
        axes: [
          {
            stroke: AXIS,
            grid: { stroke: GRID, width: 1 },
            ticks: { stroke: GRID, width: 1 },
            splits: (u) => tickIndices(latest.current.body.buckets.length, u.bbox.width / (devicePixelRatio || 1)),
            values: (_u, splits) => {
              const b = latest.current.body;
              return splits.map((i) => (b.buckets[i] === undefined ? '' : tickLabel(b.buckets[i], b.time_zone, b.granularity)));
            },
          },
          {
            stroke: AXIS,
            size: 52,
            grid: { stroke: GRID, width: 1 },
            ticks: { stroke: GRID, width: 1 },
            incrs: COUNT_INCRS,
            values: (_u, vals) => vals.map((v) => formatCompact(v)),
          },
        ],
      },
    }),
    [shape],
  );

  useEffect(() => {
    plot.current?.setData(aligned());
  }, [body]);

  const current = data.series.filter((s) => !s.previous);
  const total = body.series.reduce((a, s) => a + (s.total ?? 0), 0);
  const summary =
    body.buckets.length === 0
      ? 'Trend: no buckets.'
      : `${body.measure.replace('_', ' ')} per ${body.granularity} in ${zoneLabel(body.time_zone)}, ${body.buckets.length} buckets from ${bucketLabel(body.buckets[0], body.time_zone, body.granularity)}: ` +
        current.map((s, i) => `${s.label} ${formatCount(body.series[i]?.total)}`).join(', ') +
        '.';
  return (
    <figure
      class={`chart trend-chart${stale ? ' stale' : ''}`}
      data-testid={testId}
      data-buckets={body.buckets.length}
      data-points={body.buckets.length}
      data-lines={data.series.length}
      data-series={body.series.length}
      data-total={total}
      data-previous-total={body.previous ? body.previous.series.reduce((a, s) => a + (s.total ?? 0), 0) : ''}
      data-time-zone={body.time_zone}
      data-granularity={body.granularity}
      data-measure={body.measure}
      data-breakdown={body.breakdown ?? ''}
      data-filters={body.filters.join(' AND ')}
      data-compare={body.previous ? 'true' : 'false'}
      data-stale={stale ? 'true' : 'false'}
      data-first-label={body.buckets.length ? bucketLabel(body.buckets[0], body.time_zone, body.granularity) : ''}
    >
      <div class="chart-area" ref={box} role="img" aria-label={summary} />
      {body.buckets.length === 0 && <p class="chart-empty">No buckets</p>}
    </figure>
  );
}
