import { formatEventTime } from '../lib/format';
import type { AnalyticsEvent } from '../lib/types';

export interface RecentEventsProps {
  events: AnalyticsEvent[];
  now: number;
  title: string;
}

function hasProperties(p: AnalyticsEvent['properties']): p is Record<string, unknown> {
  return !!p && typeof p === 'object' && Object.keys(p).length > 0;
}

/** The live list: newest first, each event's properties behind a native disclosure. */
export function RecentEvents({ events, now, title }: RecentEventsProps) {
  return (
    <div class="recent" data-testid="recent-events" data-count={events.length}>
      <h2 class="widget-title">
        {title} <span class="muted">({events.length})</span>
      </h2>
      {events.length === 0 ? (
        <p class="muted empty">No events yet.</p>
      ) : (
        <div class="recent-scroll" tabIndex={0} role="region" aria-label={`${title}, newest first`}>
          <ol class="recent-list">
            {events.map((e) => (
              <li key={e.id} class="recent-item" data-testid="recent-event">
                <div class="recent-row">
                  <time dateTime={e.timestamp} class="recent-time">
                    {formatEventTime(e.timestamp, now)}
                  </time>
                  <span class="recent-name">{e.event_name}</span>
                  <span class="badge">{e.event_type}</span>
                  <span class="recent-user muted">{e.user_id ?? 'anonymous'}</span>
                </div>
                {hasProperties(e.properties) ? (
                  <details class="recent-props">
                    <summary>
                      Properties <span class="muted">({Object.keys(e.properties).length})</span>
                    </summary>
                    <pre>{JSON.stringify(e.properties, null, 2)}</pre>
                    <p class="muted small">
                      session {e.session_id ?? '–'} · {e.topic}[{e.partition}]@{e.offset}
                    </p>
                  </details>
                ) : (
                  <p class="muted small recent-noprops">no properties</p>
                )}
              </li>
            ))}
          </ol>
        </div>
      )}
    </div>
  );
}
