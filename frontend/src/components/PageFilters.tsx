import { useEffect, useState } from 'preact/hooks';
import type { PageFilter } from '../lib/zoneview';

export interface PageFiltersProps {
  filter: PageFilter;
  onChange: (f: PageFilter) => void;
  /** The server's refusal of a filter (a trend's `error` naming `filter` or `event`), shown here. */
  error?: string | null;
}

const split = (text: string) =>
  text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

/**
 * Filters for the whole page: event names (any of them) and conditions (all of them), as the
 * trends take them (`properties.plan = pro`, `properties.amount >= 10`, `user_id is set`). The
 * line, the top events, the "today" cards and the range's unique users follow them; the
 * widgets they do not reach say so.
 */
export function PageFilters({ filter, onChange, error = null }: PageFiltersProps) {
  const [events, setEvents] = useState(filter.events.join(', '));
  const [rows, setRows] = useState<string[]>(filter.filters);
  const [breakdown, setBreakdown] = useState(filter.breakdown ?? '');
  const key = JSON.stringify(filter);
  // Set from outside (back/forward, a shared link): show it.
  useEffect(() => {
    setEvents(filter.events.join(', '));
    setRows(filter.filters);
    setBreakdown(filter.breakdown ?? '');
  }, [key]);

  const apply = (e?: Event) => {
    e?.preventDefault();
    onChange({ ...filter, events: split(events), filters: rows.map((r) => r.trim()).filter(Boolean), breakdown: breakdown.trim() || undefined });
  };
  const clear = () => {
    setEvents('');
    setRows([]);
    setBreakdown('');
    onChange({ ...filter, events: [], filters: [], breakdown: undefined });
  };
  const active = filter.events.length + filter.filters.length + (filter.breakdown ? 1 : 0);
  return (
    <form class="page-filters" role="search" aria-label="Page filters" data-testid="page-filters" data-active={active} onSubmit={apply}>
      <div class="field">
        <label for="page-filter-events">Event names</label>
        <input
          id="page-filter-events"
          data-testid="page-filter-events"
          placeholder="All events (signup, login)"
          value={events}
          onInput={(e) => setEvents((e.currentTarget as HTMLInputElement).value)}
        />
      </div>
      <div class="field">
        <label for="page-breakdown">Break down by</label>
        <input
          id="page-breakdown"
          data-testid="page-breakdown"
          list="page-breakdowns"
          placeholder="none (event_name, properties.plan)"
          value={breakdown}
          onInput={(e) => setBreakdown((e.currentTarget as HTMLInputElement).value)}
        />
        <datalist id="page-breakdowns">
          <option value="event_name" />
          <option value="event_type" />
        </datalist>
      </div>
      {rows.map((r, i) => (
        <div class="field" key={i}>
          <label for={`page-filter-${i}`}>Where</label>
          <div class="filter-row">
            <input
              id={`page-filter-${i}`}
              data-testid="page-filter-condition"
              placeholder="properties.plan = pro"
              value={r}
              aria-invalid={error ? 'true' : undefined}
              onInput={(e) => {
                const v = (e.currentTarget as HTMLInputElement).value;
                setRows(rows.map((x, j) => (j === i ? v : x)));
              }}
            />
            <button type="button" class="tiny" aria-label={`Remove condition ${i + 1}`} onClick={() => setRows(rows.filter((_, j) => j !== i))}>
              ✕
            </button>
          </div>
        </div>
      ))}
      <label class="checkbox">
        <input
          type="checkbox"
          data-testid="page-compare"
          checked={filter.compare === true}
          onChange={(e) => onChange({ ...filter, compare: (e.currentTarget as HTMLInputElement).checked })}
        />{' '}
        Compare with the previous period
      </label>
      <div class="button-row">
        <button type="button" class="secondary" data-testid="page-filter-add" onClick={() => setRows([...rows, ''])}>
          + Condition
        </button>
        <button type="submit" data-testid="page-filter-apply">
          Apply filters
        </button>
        {active > 0 && (
          <button type="button" class="secondary" data-testid="page-filter-clear" onClick={clear}>
            Clear
          </button>
        )}
      </div>
      {filter.breakdown && (
        <p class="small muted" data-testid="page-breakdown-note">
          The breakdown by {filter.breakdown} applies to "Events over time" (top 5 and "other"); the cards, top events and lists are not broken down.
        </p>
      )}
      {error && (
        <p class="error small" role="alert" data-testid="page-filter-error">
          {error}
        </p>
      )}
    </form>
  );
}
