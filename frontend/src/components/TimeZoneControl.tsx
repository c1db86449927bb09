import { zoneLabel, zoneOptions } from '../lib/trends';

export interface TimeZoneControlProps {
  /** The zone chosen; null: the org's default. */
  tz: string | null;
  /** The org's default (GET settings), null until known. */
  orgZone: string | null;
  busy: boolean;
  message: string | null;
  onChange: (tz: string | null) => void;
  onMakeDefault: (tz: string) => void;
}

/** The zone of every trend: the browser's, UTC, common IANA zones and the org default. */
export function TimeZoneControl({ tz, orgZone, busy, message, onChange, onMakeDefault }: TimeZoneControlProps) {
  const options = zoneOptions(orgZone, tz);
  const effective = tz ?? orgZone;
  return (
    <div class="field tz-control" role="group" aria-label="Time zone">
      <label for="tz-select">Time zone</label>
      <div class="filter-row">
        <select id="tz-select" data-testid="tz-select" value={tz ?? ''} onChange={(e) => onChange((e.currentTarget as HTMLSelectElement).value || null)}>
          <option value="">Org default{orgZone ? ` (${zoneLabel(orgZone)})` : ''}</option>
          {options.map((z) => (
            <option key={z} value={z}>
              {zoneLabel(z)}
            </option>
          ))}
        </select>
        <button
          type="button"
          class="secondary"
          data-testid="tz-make-default"
          disabled={busy || !tz || tz === orgZone}
          title={effective ? `Make ${zoneLabel(effective)} the org's default zone` : undefined}
          onClick={() => tz && onMakeDefault(tz)}
        >
          Make default for org
        </button>
      </div>
      {message && (
        <p class="small muted" role="status" data-testid="tz-message">
          {message}
        </p>
      )}
    </div>
  );
}
