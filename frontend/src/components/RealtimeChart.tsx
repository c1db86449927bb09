import { formatCount } from '../lib/format';
import { zoneLabel, type TrendSlot } from '../lib/trends';
import { TrendChart } from './TrendChart';
import { CsvButton } from './TrendsPanel';

/** The last 60 minutes per minute: a live `trend` the server slides every minute. */
export function RealtimeChart({ slot, offline, eventType = null }: { slot: TrendSlot; offline: boolean; eventType?: string | null }) {
  const body = slot.body;
  const total = body ? body.series.reduce((a, s) => a + s.total, 0) : null;
  return (
    <section class="card realtime" data-testid="realtime" aria-labelledby="realtime-title">
      <div class="realtime-head">
        <h2 id="realtime-title" class="widget-title">
          Last 60 minutes, per minute{' '}
          {body && (
            <span class="muted">
              {formatCount(total)} events{eventType ? ` of type ${eventType}` : ''} · {zoneLabel(body.time_zone)}
            </span>
          )}
        </h2>
        <CsvButton body={body} testId="realtime-csv" />
      </div>
      {body ? (
        <TrendChart body={body} stale={offline || slot.stale} testId="chart-realtime" />
      ) : (
        <p class="muted">{slot.error ? slot.error.message : 'Loading…'}</p>
      )}
    </section>
  );
}
