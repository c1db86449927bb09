import { useMemo, useState } from 'preact/hooks';
import { formatCount } from '../lib/format';
import {
  addWidget,
  compact,
  dropOn,
  moveWidget,
  removeWidget,
  resizeWidget,
  sortWidgets,
  stepWidget,
  STAT_METRICS,
  updateWidget,
  WIDGET_KINDS,
  MAX_WIDGETS,
} from '../lib/layout';
import { describeSpec, type ViewSpec } from '../lib/range';
import { lineSeries, METRIC_LABELS, metricLabel, statValue, topBars, type DashState } from '../lib/shape';
import { describePrevious, specGranularity } from '../lib/range';
import { MEASURES, TREND_RANGES, trendCsv, zoneLabel } from '../lib/trends';
import { lineCsv, statCsv, topCsv, widgetFileName } from '../lib/widgetcsv';
import { downloadText } from './TrendsPanel';
import { hasPageFilter, NO_PAGE_FILTER, pageFilterText, type PageFilter, type ZoneData } from '../lib/zoneview';
import type { StatMetric, Widget, WidgetKind, WidgetTrend } from '../lib/types';
import { emptySlot, type TrendSlot, type TrendsState } from '../lib/trends';
import type { ExplorePage } from '../lib/explorer';
import { BarChart, LineChart } from './charts';
import { TrendChart } from './TrendChart';
import { RecentEvents } from './RecentEvents';
import { StatCard } from './StatCard';

export function widgetTitle(w: Widget, zone = 'UTC'): string {
  if (w.title) return w.title;
  switch (w.kind) {
    case 'stat':
      return metricLabel(w.metric ?? 'events_5m', zone);
    case 'line':
      return 'Events over time';
    case 'bar':
      return 'Top events';
    case 'recent':
      return 'Recent events';
    case 'trend':
      return 'Trend';
  }
}

export interface WidgetGridProps {
  widgets: Widget[];
  state: DashState;
  spec: ViewSpec;
  now: number;
  editing: boolean;
  onChange: (widgets: Widget[]) => void;
  /** The last 60 minutes per minute (a live trend): what the line shows for "Last hour". */
  perMinute?: TrendSlot;
  offline?: boolean;
  /** Reads a page of stored events for the explorer (GET .../events). */
  loadEvents?: (query: string) => Promise<ExplorePage>;
  /** The kept trends by slot: a trend widget's is `widget:<id>`. */
  trendSlots?: TrendsState;
  /** The page's zone. */
  zone?: string;
  /** In a zone other than UTC, or filtered: the line, top events and "today" from trends. */
  zoned?: ZoneData | null;
  /** The page's filters (with `zoned`, every trend-fed widget follows them). */
  pageFilter?: PageFilter;
}

export function WidgetGrid({
  widgets,
  state,
  spec,
  now,
  editing,
  onChange,
  perMinute,
  offline = false,
  loadEvents,
  trendSlots = {},
  zone = 'UTC',
  zoned = null,
  pageFilter = NO_PAGE_FILTER,
}: WidgetGridProps) {
  // The live window slides with the clock: recompute when the data or the minute changes.
  const minute = Math.floor(now / 60_000);
  const series = useMemo(
    () => (zoned ? (zoned.line ?? { xs: [], events: [], users: [] }) : state.view ? lineSeries(state.view, now) : { xs: [], events: [], users: [] }),
    [state.view, minute, zoned?.line],
  );
  const topBody = zoned ? zoned.top : (state.view?.topEvents ?? null);
  const bars = useMemo(() => topBars(topBody), [topBody]);
  const granularity = zoned ? specGranularity(spec) : (state.view?.granularity ?? 'hour');
  const rangeOnly = describeSpec(spec, zone);
  const rangeText = rangeOnly + (spec.eventType ? ` · ${spec.eventType}` : '');
  const rangeUsers = state.view?.uniqueUsers ?? null;
  const inZone = zoneLabel(zone);
  // What narrows the page, and which widgets it does not reach (they say so).
  const eventType = spec.eventType?.trim() || null;
  const narrowed = zoned ? pageFilterText(pageFilter, eventType) : '';
  const pageFiltered = hasPageFilter(pageFilter) || eventType !== null;
  const notNarrowed = (what: string) => (pageFiltered ? `${what}: the page's filters do not apply` : null);
  const join = (...parts: (string | null | false)[]) => parts.filter(Boolean).join(' · ') || null;

  /** What a widget shows, as CSV (null: nothing yet). */
  const csvOf = (w: Widget): string | null => {
    switch (w.kind) {
      case 'stat': {
        const metric = w.metric ?? 'events_5m';
        const v = statValue(metric, state, zoned);
        return statCsv(widgetTitle(w, zone), v.value, v.note);
      }
      case 'line':
        if (spec.range === '1h' && perMinute?.body) return trendCsv(perMinute.body);
        if (zoned?.lineBody?.breakdown) return trendCsv(zoned.lineBody);
        return lineCsv(series, zone, zoned?.previousLine ?? null);
      case 'bar':
        return topBody ? topCsv(topBody) : null;
      case 'trend': {
        const body = trendSlots[`widget:${w.id}`]?.body;
        return body ? trendCsv(body) : null;
      }
      case 'recent':
        return null;
    }
  };

  const render = (w: Widget) => {
    const title = widgetTitle(w, zone);
    switch (w.kind) {
      case 'stat': {
        const metric = w.metric ?? 'events_5m';
        const realtime = metric === 'events_5m' || metric === 'active_users_5m';
        // The range's unique users: the view's (every event), or the filtered trend's.
        const inRange = zoned
          ? zoned.usersRange !== null && `${formatCount(zoned.usersRange)} in ${rangeOnly.toLowerCase()}`
          : rangeUsers && `${formatCount(rangeUsers.unique_users)} in ${rangeOnly.toLowerCase()}${rangeUsers.exact ? '' : ' (approx.)'}`;
        const extra = join(
          metric === 'unique_users_today' && inRange,
          metric === 'unique_users_range' && rangeOnly,
          realtime ? notNarrowed('All events') : narrowed ? `Only ${narrowed}` : !zoned && notNarrowed('All event types'),
        );
        return (
          <StatCard
            metric={metric}
            title={title}
            stat={statValue(metric, state, zoned)}
            extra={extra}
            trendLabel={realtime ? undefined : `vs ${describePrevious(spec)}`}
          />
        );
      }
      case 'line':
        // "Last hour" per minute (the live trend) instead of two hourly points.
        if (spec.range === '1h' && perMinute?.body)
          return (
            <>
              <h2 class="widget-title">
                {title} <span class="muted">{rangeText}, per minute</span>
              </h2>
              <TrendChart body={perMinute.body} stale={offline || perMinute.stale} testId="chart-timeseries" />
            </>
          );
        return (
          <>
            <h2 class="widget-title">
              {title}{' '}
              <span class="muted">
                {zoned ? join(rangeOnly, narrowed) : rangeText}, per {granularity}
                {zoned?.lineBody?.breakdown ? ` by ${zoned.lineBody.breakdown}` : ''} ({inZone})
              </span>
            </h2>
            {zoned?.error && !hasPageFilter(pageFilter) && (
              <p class="error small" role="alert">
                {zoned.error}
              </p>
            )}
            {zoned?.lineBody?.breakdown ? (
              // Broken down: events per value (top 5 and "other"), the previous period dashed.
              <TrendChart body={zoned.lineBody} stale={offline || zoned.stale} testId="chart-timeseries" />
            ) : (
              <LineChart
                series={series}
                granularity={granularity}
                zone={zone}
                stale={offline || (zoned?.stale ?? false)}
                previous={zoned?.previousLine ?? null}
              />
            )}
            {zoned?.previousLine && <p class="small muted">Dashed: {describePrevious(spec)}.</p>}
          </>
        );
      case 'bar':
        return (
          <>
            <h2 class="widget-title">
              {title}{' '}
              {topBody?.date && (
                <span class="muted">
                  {topBody.date} ({inZone}){narrowed ? ` · ${narrowed}` : !zoned && eventType ? ' · all event types' : ''}
                </span>
              )}
            </h2>
            <BarChart bars={bars} date={topBody?.date ?? null} />
          </>
        );
      case 'trend': {
        const slot = trendSlots[`widget:${w.id}`] ?? emptySlot;
        return (
          <>
            <h2 class="widget-title">{title}</h2>
            {hasPageFilter(pageFilter) && <p class="small muted">Its own question: the page's filters do not apply.</p>}
            {slot.error ? (
              <p class="error" role="alert">
                {slot.error.message}
              </p>
            ) : slot.body ? (
              <TrendChart body={slot.body} stale={offline || slot.stale} testId={`widget-trend-${w.id}`} />
            ) : (
              <p class="muted">Loading…</p>
            )}
          </>
        );
      }
      case 'recent':
        // While editing, a placeholder: the full list would make the rows as tall as 100 events.
        return editing ? (
          <h2 class="widget-title">
            {title} <span class="muted">(list of the 100 newest events)</span>
          </h2>
        ) : (
          <>
            {pageFiltered && <p class="small muted">The live list shows every event: the page's filters do not apply (search to narrow it).</p>}
            <RecentEvents events={state.recent} arrived={state.arrived} now={now} title={title} load={loadEvents} zone={zone} />
          </>
        );
    }
  };

  return (
    <>
      <div class={`grid${editing ? ' editing' : ''}`}>
        {sortWidgets(widgets).map((w) => (
          <section
            key={w.id}
            class={`widget widget-${w.kind}`}
            style={{ '--x': w.x + 1, '--y': w.y + 1, '--w': w.w, '--h': w.h } as Record<string, number>}
            aria-label={widgetTitle(w, zone)}
            data-widget-id={w.id}
            // Editing: drag a widget onto another to take its place (the buttons do the same
            // from the keyboard); the layout closes up behind it.
            draggable={editing}
            onDragStart={(e) => e.dataTransfer?.setData('text/plain', w.id)}
            onDragOver={(e) => editing && e.preventDefault()}
            onDrop={(e) => {
              if (!editing) return;
              e.preventDefault();
              const dragged = e.dataTransfer?.getData('text/plain');
              if (dragged) onChange(dropOn(widgets, dragged, w.id));
            }}
          >
            {render(w)}
            {!editing && w.kind !== 'recent' && (
              <button
                type="button"
                class="secondary tiny widget-csv"
                data-testid={`widget-csv-${w.id}`}
                aria-label={`Download CSV: ${widgetTitle(w, zone)}`}
                onClick={() => {
                  const text = csvOf(w);
                  if (text) downloadText(widgetFileName(widgetTitle(w, zone), now), text);
                }}
              >
                CSV
              </button>
            )}
            {editing && <WidgetEditor widget={w} widgets={widgets} zone={zone} onChange={onChange} />}
          </section>
        ))}
      </div>
      {editing && <AddWidget widgets={widgets} onChange={onChange} />}
    </>
  );
}

function WidgetEditor({ widget: w, widgets, zone, onChange }: { widget: Widget; widgets: Widget[]; zone: string; onChange: (ws: Widget[]) => void }) {
  const name = widgetTitle(w, zone);
  const btn = (label: string, text: string, f: () => Widget[], disabled = false) => (
    <button type="button" class="tiny" aria-label={`${label}: ${name}`} title={label} disabled={disabled} onClick={() => onChange(f())}>
      {text}
    </button>
  );
  return (
    <div class="widget-editor" role="group" aria-label={`Layout of ${name}`}>
      <div class="button-row">
        {btn('Move left', '←', () => moveWidget(widgets, w.id, -1, 0), w.x === 0)}
        {btn('Move right', '→', () => moveWidget(widgets, w.id, 1, 0), w.x + w.w >= 12)}
        {btn('Move up', '↑', () => stepWidget(widgets, w.id, -1), sortWidgets(widgets)[0]?.id === w.id)}
        {btn('Move down', '↓', () => stepWidget(widgets, w.id, 1), sortWidgets(widgets).at(-1)?.id === w.id)}
        {btn('Narrower', '−W', () => resizeWidget(widgets, w.id, -1, 0), w.w <= 1)}
        {btn('Wider', '+W', () => resizeWidget(widgets, w.id, 1, 0), w.x + w.w >= 12)}
        {btn('Shorter', '−H', () => resizeWidget(widgets, w.id, 0, -1), w.h <= 1)}
        {btn('Taller', '+H', () => resizeWidget(widgets, w.id, 0, 1))}
        {btn('Remove', '✕', () => compact(removeWidget(widgets, w.id)))}
      </div>
      <div class="editor-fields">
        <label>
          Title
          <input
            value={w.title ?? ''}
            placeholder={widgetTitle({ ...w, title: undefined }, zone)}
            maxLength={100}
            onChange={(e) => onChange(updateWidget(widgets, w.id, { title: (e.currentTarget as HTMLInputElement).value }))}
          />
        </label>
        {w.kind === 'stat' && (
          <label>
            Metric
            <select
              value={w.metric}
              onChange={(e) =>
                onChange(updateWidget(widgets, w.id, { metric: (e.currentTarget as HTMLSelectElement).value as StatMetric }))
              }
            >
              {STAT_METRICS.map((m) => (
                <option key={m} value={m}>
                  {METRIC_LABELS[m]}
                </option>
              ))}
            </select>
          </label>
        )}
        {w.kind === 'trend' && w.trend && <TrendFields widget={w} widgets={widgets} onChange={onChange} />}
        <span class="muted small">
          x {w.x}, y {w.y}, {w.w}×{w.h}
        </span>
      </div>
    </div>
  );
}

/**
 * A trend widget's question, editable in place: its range (ending now), measure, event names
 * and breakdown. Saving checks it as the trends request would (a 400 names
 * `widgets[i].trend.<parameter>`).
 */
function TrendFields({ widget: w, widgets, onChange }: { widget: Widget; widgets: Widget[]; onChange: (ws: Widget[]) => void }) {
  const t = w.trend ?? {};
  const set = (k: string, v: string | string[] | null) => {
    const next: WidgetTrend = { ...t };
    if (v === null || v === '' || (Array.isArray(v) && v.length === 0)) delete next[k];
    else next[k] = v;
    onChange(updateWidget(widgets, w.id, { trend: next }));
  };
  const events = Array.isArray(t.event) ? t.event : typeof t.event === 'string' ? [t.event] : [];
  return (
    <>
      <label>
        Range
        <select data-testid="widget-trend-range" value={String(t.range ?? '7d')} onChange={(e) => set('range', (e.currentTarget as HTMLSelectElement).value)}>
          {TREND_RANGES.map((r) => (
            <option key={r.key} value={r.key}>
              {r.label}
            </option>
          ))}
        </select>
      </label>
      <label>
        Measure
        <select data-testid="widget-trend-measure" value={String(t.measure ?? 'events')} onChange={(e) => set('measure', (e.currentTarget as HTMLSelectElement).value)}>
          {MEASURES.map((m) => (
            <option key={m.key} value={m.key}>
              {m.label}
            </option>
          ))}
        </select>
      </label>
      <label>
        Event names
        <input
          data-testid="widget-trend-events"
          value={events.join(', ')}
          placeholder="all"
          onChange={(e) =>
            set(
              'event',
              (e.currentTarget as HTMLInputElement).value
                .split(',')
                .map((x) => x.trim())
                .filter(Boolean),
            )
          }
        />
      </label>
      <label>
        Breakdown
        <input
          data-testid="widget-trend-breakdown"
          value={String(t.breakdown ?? '')}
          placeholder="none, event_name, properties.plan"
          list="widget-breakdowns"
          onChange={(e) => set('breakdown', (e.currentTarget as HTMLInputElement).value.trim())}
        />
        <datalist id="widget-breakdowns">
          <option value="event_name" />
          <option value="event_type" />
        </datalist>
      </label>
    </>
  );
}

function AddWidget({ widgets, onChange }: { widgets: Widget[]; onChange: (ws: Widget[]) => void }) {
  const [kind, setKind] = useState<WidgetKind>('stat');
  const [metric, setMetric] = useState<StatMetric>('events_5m');
  const full = widgets.length >= MAX_WIDGETS;
  return (
    <form
      class="add-widget card"
      aria-label="Add a widget"
      onSubmit={(e) => {
        e.preventDefault();
        onChange(addWidget(widgets, kind, kind === 'stat' ? metric : undefined));
      }}
    >
      <div class="field">
        <label for="add-kind">Widget</label>
        <select id="add-kind" value={kind} onChange={(e) => setKind((e.currentTarget as HTMLSelectElement).value as WidgetKind)}>
          {WIDGET_KINDS.map((k) => (
            <option key={k.kind} value={k.kind}>
              {k.label}
            </option>
          ))}
        </select>
      </div>
      {kind === 'stat' && (
        <div class="field">
          <label for="add-metric">Metric</label>
          <select id="add-metric" value={metric} onChange={(e) => setMetric((e.currentTarget as HTMLSelectElement).value as StatMetric)}>
            {STAT_METRICS.map((m) => (
              <option key={m} value={m}>
                {METRIC_LABELS[m]}
              </option>
            ))}
          </select>
        </div>
      )}
      <button type="submit" disabled={full}>
        Add widget
      </button>
      {full && <p class="muted small">At most {MAX_WIDGETS} widgets.</p>}
    </form>
  );
}
