import { useEffect, useRef, useState } from 'preact/hooks';
import { customRangeError, DAY_MS, PRESETS, type RangeKey, type ViewSpec } from '../lib/range';
import { zoneLabel } from '../lib/trends';
import { fromZoneInput, toZoneInput } from '../lib/zone';

export interface ToolbarProps {
  spec: ViewSpec;
  suggestions: string[];
  now: number;
  /** The page's zone: a custom range is typed and shown in it. */
  zone: string;
  onChange: (spec: ViewSpec) => void;
}

/** Time range and event type: every change becomes a new `subscribe`. */
export function Toolbar({ spec, suggestions, now, zone, onChange }: ToolbarProps) {
  const [range, setRange] = useState<RangeKey>(spec.range);
  const [from, setFrom] = useState(() => toZoneInput(spec.range === 'custom' ? spec.from : now - DAY_MS, zone));
  const [to, setTo] = useState(() => toZoneInput(spec.range === 'custom' ? spec.to : now, zone));
  // Another zone: the same instants as that zone's clock reads them.
  const shownIn = useRef(zone);
  useEffect(() => {
    if (shownIn.current === zone) return;
    const was = shownIn.current;
    shownIn.current = zone;
    const f = fromZoneInput(from, was);
    const t = fromZoneInput(to, was);
    if (f !== null) setFrom(toZoneInput(f, zone));
    if (t !== null) setTo(toZoneInput(t, zone));
  }, [zone]);
  const [customError, setCustomError] = useState<string | null>(null);
  const [eventType, setEventType] = useState(spec.eventType ?? '');
  // Enter fires both the input's change and the form's submit: apply a value once.
  const applied = useRef<string | null>(spec.eventType);

  const onRange = (value: RangeKey) => {
    setRange(value);
    setCustomError(null);
    if (value !== 'custom') onChange({ range: value, eventType: spec.eventType });
  };

  const applyCustom = (e: Event) => {
    e.preventDefault();
    const f = fromZoneInput(from, zone);
    const t = fromZoneInput(to, zone);
    const err = customRangeError(f, t);
    setCustomError(err);
    if (!err && f !== null && t !== null) onChange({ range: 'custom', from: f, to: t, eventType: spec.eventType });
  };

  const applyEventType = (e?: Event) => {
    e?.preventDefault();
    const v = eventType.trim() || null;
    if (v === applied.current) return;
    applied.current = v;
    onChange({ ...spec, eventType: v });
  };

  return (
    <div class="toolbar" role="group" aria-label="View">
      <div class="field">
        <label for="range-select">Time range</label>
        <select
          id="range-select"
          data-testid="range-select"
          value={range}
          onChange={(e) => onRange((e.currentTarget as HTMLSelectElement).value as RangeKey)}
        >
          {PRESETS.map((p) => (
            <option key={p.key} value={p.key}>
              {p.label}
            </option>
          ))}
          <option value="custom">Custom…</option>
        </select>
      </div>
      {range === 'custom' && (
        <form class="custom-range" onSubmit={applyCustom} aria-label="Custom time range">
          <div class="field">
            <label for="range-from">
              From <span class="muted">({zoneLabel(zone)})</span>
            </label>
            <input
              id="range-from"
              type="datetime-local"
              value={from}
              onInput={(e) => setFrom((e.currentTarget as HTMLInputElement).value)}
              aria-invalid={customError ? 'true' : undefined}
              aria-describedby={customError ? 'range-error' : undefined}
            />
          </div>
          <div class="field">
            <label for="range-to">
              To <span class="muted">({zoneLabel(zone)})</span>
            </label>
            <input
              id="range-to"
              type="datetime-local"
              value={to}
              onInput={(e) => setTo((e.currentTarget as HTMLInputElement).value)}
              aria-invalid={customError ? 'true' : undefined}
              aria-describedby={customError ? 'range-error' : undefined}
            />
          </div>
          <button type="submit">Apply range</button>
          {customError && (
            <p id="range-error" class="error" role="alert">
              {customError}
            </p>
          )}
        </form>
      )}
      <form class="field filter" onSubmit={applyEventType} role="search" aria-label="Event type filter">
        <label for="event-type-filter">Event type</label>
        <div class="filter-row">
          <input
            id="event-type-filter"
            data-testid="event-type-filter"
            type="search"
            list="event-type-suggestions"
            placeholder="All types"
            autoComplete="off"
            spellcheck={false}
            value={eventType}
            onInput={(e) => setEventType((e.currentTarget as HTMLInputElement).value)}
            onChange={() => applyEventType()}
          />
          <datalist id="event-type-suggestions">
            {suggestions.map((s) => (
              <option key={s} value={s} />
            ))}
          </datalist>
          {spec.eventType && (
            <button
              type="button"
              class="secondary"
              onClick={() => {
                setEventType('');
                applied.current = null;
                onChange({ ...spec, eventType: null });
              }}
            >
              Clear
            </button>
          )}
        </div>
      </form>
    </div>
  );
}
