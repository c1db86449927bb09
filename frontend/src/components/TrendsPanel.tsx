// The Trends panel: the question (range, measure, granularity, event names, property filters,
// breakdown, compare) and its live answer (a `trend` on the socket). A refusal is shown beside
// the control it names; the old answer stays, marked stale, under its own labels.

import { useEffect, useState } from 'preact/hooks';
import { formatCount } from '../lib/format';
import { customRangeError } from '../lib/range';
import { fromZoneInput, toZoneInput } from '../lib/zone';
import {
  controlOf,
  csvFileName,
  FILTER_FIELDS,
  FILTER_OPS,
  filterRowOf,
  GRANULARITIES,
  grandTotal,
  previousTotals,
  MEASURES,
  percentChange,
  seriesLabel,
  TREND_RANGES,
  trendCsv,
  zoneLabel,
  type FilterOp,
  type FilterRow,
  type TrendControl,
  type TrendQuery,
  type TrendSlot,
  type TrendsBody,
} from '../lib/trends';
import { PALETTE, TrendChart } from './TrendChart';

/** Saves `text` as a file through a temporary link (no server round trip). */
export function downloadText(name: string, text: string, type = 'text/csv;charset=utf-8'): boolean {
  if (typeof URL === 'undefined' || typeof URL.createObjectURL !== 'function') return false;
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.style.display = 'none';
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
  return true;
}

export function CsvButton({ body, testId = 'trend-csv' }: { body: TrendsBody | null; testId?: string }) {
  return (
    <button
      type="button"
      class="secondary tiny"
      data-testid={testId}
      disabled={!body}
      onClick={() => body && downloadText(csvFileName(body), trendCsv(body, true))}
    >
      Download CSV
    </button>
  );
}

const BREAKDOWN_PROPERTY = 'properties.';

function FieldError({ slot, control, row }: { slot: TrendSlot; control: TrendControl; row?: number }) {
  const e = slot.error;
  if (!e || controlOf(e.parameter) !== control) return null;
  return (
    <p class="error small" role="alert" data-testid="trend-error" data-control={control} data-row={row ?? ''}>
      {e.message}
    </p>
  );
}

export interface TrendsPanelProps {
  query: TrendQuery;
  slot: TrendSlot;
  /** The zone asked for (null: the org's default). */
  offline: boolean;
  /** Event names to offer as toggles (today's top events, the recent ones). */
  eventNames?: string[];
  onQuery: (q: TrendQuery) => void;
  /**
   * Saves the applied question as a trend widget of the selected dashboard; absent when the
   * overview (not a saved dashboard) is shown. `addState` says how the last save went.
   */
  onAddToDashboard?: () => void;
  addState?: string | null;
  /** The page's zone: a custom range is typed in it. */
  zone: string;
}

export function TrendsPanel({ query, slot, offline, zone, eventNames = [], onQuery, onAddToDashboard, addState = null }: TrendsPanelProps) {
  const [draft, setDraft] = useState<TrendQuery>(query);
  const [events, setEvents] = useState(query.events.join(', '));
  const [customFrom, setCustomFrom] = useState(() => toZoneInput(query.from ?? Date.now() - 86_400_000, zone));
  const [customTo, setCustomTo] = useState(() => toZoneInput(query.to ?? Date.now(), zone));
  const [rangeError, setRangeError] = useState<string | null>(null);
  const key = JSON.stringify(query);
  // A question set from outside (back/forward, a shared link) replaces the draft.
  useEffect(() => {
    setDraft(query);
    setEvents(query.events.join(', '));
  }, [key]);

  const withEvents = (q: TrendQuery, text = events): TrendQuery => ({
    ...q,
    events: text
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
  });
  const apply = (q: TrendQuery, eventsText?: string) => {
    let next = withEvents(q, eventsText);
    if (next.range === 'custom') {
      const f = fromZoneInput(customFrom, zone);
      const t = fromZoneInput(customTo, zone);
      const err = customRangeError(f, t);
      setRangeError(err);
      if (err || f === null || t === null) return;
      next = { ...next, from: f, to: t };
    } else {
      setRangeError(null);
      next = { ...next, from: undefined, to: undefined };
    }
    setDraft(next);
    onQuery(next);
  };
  /** Selects and checkboxes apply at once. */
  const set = (patch: Partial<TrendQuery>) => apply({ ...draft, ...patch });
  const setRow = (i: number, patch: Partial<FilterRow>) =>
    setDraft({ ...draft, filters: draft.filters.map((f, j) => (j === i ? { ...f, ...patch } : f)) });

  const body = slot.body;
  const stale = slot.stale || (offline && body !== null);
  const state = slot.error ? (body ? 'stale' : 'error') : slot.pending ? 'loading' : body ? 'ready' : 'idle';
  const errRow = slot.error && controlOf(slot.error.parameter) === 'filter' ? filterRowOf(query, slot.error.value) : -1;
  const breakdownKind = draft.breakdown.startsWith(BREAKDOWN_PROPERTY) ? 'property' : draft.breakdown;

  return (
    <section class="card trends-panel" data-testid="trends-panel" data-state={state} aria-labelledby="trends-title">
      <h2 id="trends-title" class="widget-title">
        Trends{' '}
        {body && (
          <span class="muted" data-testid="trend-zone">
            times in {zoneLabel(body.time_zone)}
          </span>
        )}
      </h2>
      <form
        class="trend-controls"
        aria-label="Trend question"
        onSubmit={(e) => {
          e.preventDefault();
          apply(draft);
        }}
      >
        <div class="field">
          <label for="trend-range">Range</label>
          <select id="trend-range" data-testid="trend-range" value={draft.range} onChange={(e) => {
            const range = (e.currentTarget as HTMLSelectElement).value as TrendQuery['range'];
            if (range === 'custom') setDraft({ ...draft, range });
            else set({ range });
          }}>
            {TREND_RANGES.map((r) => (
              <option key={r.key} value={r.key}>
                {r.label}
              </option>
            ))}
            <option value="custom">Custom…</option>
          </select>
          <FieldError slot={slot} control="range" />
        </div>
        {draft.range === 'custom' && (
          <>
            <div class="field">
              <label for="trend-from">
                From <span class="muted">({zoneLabel(zone)})</span>
              </label>
              <input id="trend-from" data-testid="trend-from" type="datetime-local" value={customFrom} onInput={(e) => setCustomFrom((e.currentTarget as HTMLInputElement).value)} />
            </div>
            <div class="field">
              <label for="trend-to">
                To <span class="muted">({zoneLabel(zone)})</span>
              </label>
              <input id="trend-to" data-testid="trend-to" type="datetime-local" value={customTo} onInput={(e) => setCustomTo((e.currentTarget as HTMLInputElement).value)} />
            </div>
            {rangeError && (
              <p class="error small" role="alert">
                {rangeError}
              </p>
            )}
          </>
        )}
        <div class="field">
          <label for="trend-measure">Measure</label>
          <select id="trend-measure" data-testid="trend-measure" value={draft.measure} onChange={(e) => set({ measure: (e.currentTarget as HTMLSelectElement).value as TrendQuery['measure'] })}>
            {MEASURES.map((m) => (
              <option key={m.key} value={m.key}>
                {m.label}
              </option>
            ))}
          </select>
          <FieldError slot={slot} control="measure" />
        </div>
        <div class="field">
          <label for="trend-granularity">Per</label>
          <select id="trend-granularity" data-testid="trend-granularity" value={draft.granularity} onChange={(e) => set({ granularity: (e.currentTarget as HTMLSelectElement).value as TrendQuery['granularity'] })}>
            {GRANULARITIES.map((g) => (
              <option key={g} value={g}>
                {g === 'auto' ? 'Auto' : g}
              </option>
            ))}
          </select>
          <FieldError slot={slot} control="granularity" />
        </div>
        <div class="field">
          <label for="trend-events">Event names</label>
          <input id="trend-events" data-testid="trend-events" placeholder="all (comma-separated)" value={events} spellcheck={false} onInput={(e) => setEvents((e.currentTarget as HTMLInputElement).value)} />
          {eventNames.length > 0 && (
            <div class="event-toggles" role="group" aria-label="Known event names" data-testid="trend-event-toggles">
              {eventNames.map((n) => {
                const list = events.split(',').map((s) => s.trim()).filter(Boolean);
                const on = list.includes(n);
                return (
                  <button
                    type="button"
                    key={n}
                    class={`tiny chip${on ? '' : ' secondary'}`}
                    aria-pressed={on}
                    data-testid="trend-event-toggle"
                    onClick={() => {
                      const next = on ? list.filter((x) => x !== n) : [...list, n];
                      setEvents(next.join(', '));
                      apply(draft, next.join(', '));
                    }}
                  >
                    {n}
                  </button>
                );
              })}
            </div>
          )}
          <FieldError slot={slot} control="events" />
        </div>
        <div class="field">
          <label for="trend-breakdown">Breakdown</label>
          <div class="filter-row">
            <select
              id="trend-breakdown"
              data-testid="trend-breakdown"
              value={breakdownKind}
              onChange={(e) => {
                const v = (e.currentTarget as HTMLSelectElement).value;
                if (v === 'property') setDraft({ ...draft, breakdown: BREAKDOWN_PROPERTY });
                else set({ breakdown: v });
              }}
            >
              <option value="">None</option>
              <option value="event_name">event_name</option>
              <option value="event_type">event_type</option>
              <option value="property">property…</option>
            </select>
            {breakdownKind === 'property' && (
              <input
                aria-label="Breakdown property key"
                data-testid="trend-breakdown-key"
                placeholder="key"
                spellcheck={false}
                value={draft.breakdown.slice(BREAKDOWN_PROPERTY.length)}
                onInput={(e) => setDraft({ ...draft, breakdown: BREAKDOWN_PROPERTY + (e.currentTarget as HTMLInputElement).value.trim() })}
              />
            )}
            {draft.breakdown && (
              <input
                aria-label="Breakdown limit (top values)"
                data-testid="trend-breakdown-limit"
                class="narrow"
                type="number"
                min={1}
                max={100}
                value={draft.breakdownLimit}
                // Taken as typed: a re-render between typing and the change event (a live
                // update) would otherwise put the old value back.
                onInput={(e) => {
                  const v = (e.currentTarget as HTMLInputElement).value;
                  if (v !== '' && Number.isFinite(Number(v))) set({ breakdownLimit: Math.max(1, Math.min(100, Math.round(Number(v)))) });
                }}
                onChange={(e) => set({ breakdownLimit: Math.max(1, Math.min(100, Number((e.currentTarget as HTMLInputElement).value) || 10)) })}
              />
            )}
          </div>
          <FieldError slot={slot} control="breakdown" />
        </div>
        <label class="checkbox">
          <input type="checkbox" data-testid="trend-compare" checked={draft.compare} onChange={(e) => set({ compare: (e.currentTarget as HTMLInputElement).checked })} />
          Compare with previous period
        </label>
        <fieldset class="trend-filters" data-testid="trend-filters">
          <legend>Filters (all must hold)</legend>
          {draft.filters.map((f, i) => {
            const prop = f.field.startsWith('properties.');
            return (
              <div class="filter-row" data-testid="trend-filter" key={i}>
                <select
                  aria-label={`Filter ${i + 1} field`}
                  data-testid="trend-filter-field"
                  value={prop ? 'property' : f.field}
                  onChange={(e) => {
                    const v = (e.currentTarget as HTMLSelectElement).value;
                    setRow(i, { field: v === 'property' ? 'properties.' : v });
                  }}
                >
                  <option value="property">property…</option>
                  {FILTER_FIELDS.map((x) => (
                    <option key={x} value={x}>
                      {x}
                    </option>
                  ))}
                </select>
                {prop && (
                  <input
                    aria-label={`Filter ${i + 1} property key`}
                    data-testid="trend-filter-key"
                    placeholder="key"
                    spellcheck={false}
                    value={f.field.slice('properties.'.length)}
                    onInput={(e) => setRow(i, { field: `properties.${(e.currentTarget as HTMLInputElement).value.trim()}` })}
                  />
                )}
                <select aria-label={`Filter ${i + 1} operator`} data-testid="trend-filter-op" value={f.op} onChange={(e) => setRow(i, { op: (e.currentTarget as HTMLSelectElement).value as FilterOp })}>
                  {FILTER_OPS.map((o) => (
                    <option key={o} value={o}>
                      {o}
                    </option>
                  ))}
                </select>
                {f.op !== 'is set' && f.op !== 'is not set' && (
                  <input aria-label={`Filter ${i + 1} value`} data-testid="trend-filter-value" placeholder="value" value={f.value} onInput={(e) => setRow(i, { value: (e.currentTarget as HTMLInputElement).value })} />
                )}
                <button type="button" class="secondary tiny" aria-label={`Remove filter ${i + 1}`} onClick={() => apply({ ...draft, filters: draft.filters.filter((_, j) => j !== i) })}>
                  ✕
                </button>
                {errRow === i && <FieldError slot={slot} control="filter" row={i} />}
              </div>
            );
          })}
          {errRow < 0 && <FieldError slot={slot} control="filter" />}
          <button type="button" class="secondary tiny" data-testid="trend-filter-add" onClick={() => setDraft({ ...draft, filters: [...draft.filters, { field: 'properties.', op: '=', value: '' }] })}>
            Add filter
          </button>
        </fieldset>
        <div class="button-row">
          <button type="submit" data-testid="trend-apply">
            Apply
          </button>
          <CsvButton body={body} />
          {onAddToDashboard && (
            <button
              type="button"
              class="secondary"
              data-testid="trend-add-widget"
              disabled={query.range === 'custom'}
              title={query.range === 'custom' ? "A widget's range ends now: choose a preset range" : undefined}
              onClick={onAddToDashboard}
            >
              Add to dashboard
            </button>
          )}
          {addState && (
            <span class="muted small" role="status" data-testid="trend-add-state">
              {addState}
            </span>
          )}
        </div>
        <FieldError slot={slot} control="tz" />
        <FieldError slot={slot} control="compare" />
        <FieldError slot={slot} control="other" />
      </form>
      {stale && (
        <p class="stale-note small" data-testid="trend-stale">
          {slot.stale ? 'Showing the last accepted question’s answer (the new one was refused).' : 'Not live: the connection is down.'}
        </p>
      )}
      {body ? <TrendAnswer body={body} stale={stale} /> : <p class="muted">{slot.pending ? 'Loading…' : slot.error ? '' : 'No answer yet.'}</p>}
    </section>
  );
}

/** The total, its change against the previous period, the chart and the per-series legend. */
export function TrendAnswer({ body, stale }: { body: TrendsBody; stale: boolean }) {
  const total = grandTotal(body.series, body.measure, body.breakdown);
  const prevTotal = body.previous ? grandTotal(body.previous.series, body.measure, body.breakdown) : null;
  const change = total !== null && prevTotal !== null ? percentChange(total, prevTotal) : null;
  const prev = body.previous ? previousTotals(body) : null;
  const measure = MEASURES.find((m) => m.key === body.measure)?.label ?? body.measure;
  return (
    <div class="trend-answer">
      <p class="trend-summary">
        <span class="muted">
          {measure} per {body.granularity}
          {body.breakdown ? ` by ${body.breakdown}` : ''}
          {body.filters.length ? ` where ${body.filters.join(' and ')}` : ''}
          {body.events.length ? ` (${body.events.join(', ')})` : ''}:{' '}
        </span>
        {total !== null && (
          <strong data-testid="trend-total" data-value={total}>
            {formatCount(total)}
          </strong>
        )}
        {change && (
          <span class={`trend-change ${change.pct === null || change.pct > 0 ? 'up' : change.pct < 0 ? 'down' : 'flat'}`} data-testid="trend-change" data-previous={prevTotal ?? ''}>
            {' '}
            {change.text} <span class="muted">vs previous period ({formatCount(prevTotal)})</span>
          </span>
        )}
        {body.exact === false && <span class="muted"> (approximate)</span>}
      </p>
      <TrendChart body={body} stale={stale} />
      {body.series.length > 1 && (
        <table class="trend-legend small" data-testid="trend-legend">
          <thead>
            <tr>
              <th scope="col">{body.breakdown ?? 'Series'}</th>
              <th scope="col">Total</th>
              {prev && <th scope="col">Change</th>}
            </tr>
          </thead>
          <tbody>
            {body.series.map((s, i) => (
              <tr key={`${s.other ? 'o' : 'v'}${s.breakdown_value ?? ''}`} data-testid="trend-series" data-value={s.breakdown_value ?? ''} data-other={s.other ? 'true' : 'false'} data-total={s.total}>
                <td>
                  <span class="swatch" style={{ background: PALETTE[i % PALETTE.length] }} aria-hidden="true" /> {seriesLabel(s, body.breakdown)}
                </td>
                <td>{formatCount(s.total)}</td>
                {prev && <td>{prev[i] !== null ? percentChange(s.total, prev[i]!).text : '–'}</td>}
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
