import { useState } from 'preact/hooks';
import { appendPage, exploreQuery, PAGE_SIZE, SEARCH_KINDS, type ExplorePage, type ExplorerSearch, type SearchKind } from '../lib/explorer';
import { formatCount } from '../lib/format';
import { eventTime } from '../lib/zone';
import { eventsCsv, widgetFileName } from '../lib/widgetcsv';
import { downloadText } from './TrendsPanel';
import type { AnalyticsEvent } from '../lib/types';

export interface RecentEventsProps {
  /** The live list (newest first), as the updates bring it. */
  events: AnalyticsEvent[];
  /** Events of the org arrived since the page connected, shown or not. */
  arrived: number;
  now: number;
  title: string;
  /** Reads a page of stored events (GET .../events?<query>). */
  load?: (query: string) => Promise<ExplorePage>;
  /** The page's zone: event times read in it. */
  zone?: string;
}

function hasProperties(p: AnalyticsEvent['properties']): p is Record<string, unknown> {
  return !!p && typeof p === 'object' && Object.keys(p).length > 0;
}

/**
 * What the list shows: the live events (they move), the list as it was when paused, or pages of
 * stored events (a search, or older events); the last two never move under the reader.
 */
type Mode =
  | { kind: 'live' }
  | { kind: 'paused'; list: AnalyticsEvent[]; arrivedAt: number }
  | {
      kind: 'stored';
      search: ExplorerSearch | null;
      list: AnalyticsEvent[];
      next: string | null;
      arrivedAt: number;
      loading: boolean;
      error: string | null;
    };

/**
 * The event explorer: the newest events live; paused (a button, or opening an event) it keeps
 * its list and counts the new events ("N new events" loads them); a search by event name, user
 * id or property, and older events, are read page by page from the stored events.
 */
export function RecentEvents({ events, arrived, now, title, load, zone = 'UTC' }: RecentEventsProps) {
  const [mode, setMode] = useState<Mode>({ kind: 'live' });
  const [kind, setKind] = useState<SearchKind>('name');
  const [text, setText] = useState('');

  const list = mode.kind === 'live' ? events : mode.list;
  const newCount = mode.kind === 'live' ? 0 : Math.max(0, arrived - mode.arrivedAt);

  const pause = () => {
    if (mode.kind === 'live') setMode({ kind: 'paused', list: events, arrivedAt: arrived });
  };
  const resume = () => setMode({ kind: 'live' });

  /** Reads the first page of `search` (null: every stored event), or the next one after `from`. */
  const read = async (search: ExplorerSearch | null, from: Extract<Mode, { kind: 'stored' }> | null, limit = PAGE_SIZE) => {
    if (!load) return;
    const base = from ?? { kind: 'stored' as const, search, list: [], next: null, arrivedAt: arrived, loading: false, error: null };
    setMode({ ...base, loading: true, error: null });
    try {
      const page = await load(exploreQuery(search, from?.next ?? null, limit));
      setMode({ ...base, list: appendPage(base.list, page.events ?? []), next: page.next ?? null, loading: false, error: null });
    } catch (e) {
      setMode({ ...base, loading: false, error: e instanceof Error ? e.message : String(e) });
    }
  };

  const onSearch = (ev: Event) => {
    ev.preventDefault();
    if (text.trim() === '') return;
    void read({ kind, text }, null);
  };

  const loadNew = () => {
    if (mode.kind === 'stored' && mode.search) void read(mode.search, null);
    else resume();
  };

  const status =
    mode.kind === 'live'
      ? 'live'
      : mode.kind === 'paused'
        ? 'paused'
        : mode.search
          ? `search: ${SEARCH_KINDS.find((k) => k.kind === mode.search?.kind)?.label.toLowerCase()} “${mode.search.text.trim()}”`
          : 'stored events';
  const placeholder = SEARCH_KINDS.find((k) => k.kind === kind)?.placeholder ?? '';

  return (
    <div class="recent" data-testid="recent-events" data-count={list.length} data-mode={mode.kind}>
      <h2 class="widget-title">
        {title} <span class="muted">({list.length}, {status})</span>
      </h2>
      <div class="explorer-bar">
        {mode.kind === 'live' ? (
          <button type="button" class="secondary" data-testid="explorer-pause" onClick={pause}>
            Pause
          </button>
        ) : (
          <button type="button" class="secondary" data-testid="explorer-resume" onClick={resume}>
            Back to live
          </button>
        )}
        <button
          type="button"
          class="secondary"
          data-testid="explorer-csv"
          disabled={list.length === 0}
          onClick={() => downloadText(widgetFileName(title, now), eventsCsv(list))}
        >
          CSV
        </button>
        {newCount > 0 && (
          <button type="button" data-testid="explorer-new" onClick={loadNew}>
            {formatCount(newCount)} new {newCount === 1 ? 'event' : 'events'}
          </button>
        )}
        {load && (
          <form class="explorer-search" role="search" onSubmit={onSearch}>
            <label>
              <span class="visually-hidden">Search by</span>
              <select
                data-testid="explorer-search-kind"
                value={kind}
                onChange={(e) => setKind((e.currentTarget as HTMLSelectElement).value as SearchKind)}
              >
                {SEARCH_KINDS.map((k) => (
                  <option value={k.kind} key={k.kind}>
                    {k.label}
                  </option>
                ))}
              </select>
            </label>
            <label>
              <span class="visually-hidden">Search text</span>
              <input
                type="search"
                data-testid="explorer-search-input"
                value={text}
                placeholder={placeholder}
                onInput={(e) => setText((e.currentTarget as HTMLInputElement).value)}
              />
            </label>
            <button type="submit" class="secondary" data-testid="explorer-search">
              Search
            </button>
          </form>
        )}
      </div>
      {mode.kind === 'stored' && mode.error && (
        <p class="error" role="alert" data-testid="explorer-error">
          {mode.error}
        </p>
      )}
      {list.length === 0 ? (
        <p class="muted empty">{mode.kind === 'stored' ? (mode.loading ? 'Loading…' : 'No events match.') : 'No events yet.'}</p>
      ) : (
        <div class="recent-scroll" tabIndex={0} role="region" aria-label={`${title}, newest first`}>
          <ol class="recent-list">
            {list.map((e) => (
              <li key={e.id} class="recent-item" data-testid="recent-event" data-id={e.id}>
                <div class="recent-row">
                  <time dateTime={e.timestamp} class="recent-time">
                    {eventTime(e.timestamp, now, zone)}
                  </time>
                  <span class="recent-name">{e.event_name}</span>
                  <span class="badge">{e.event_type}</span>
                  <span class="recent-user muted">{e.user_id ?? 'anonymous'}</span>
                </div>
                {hasProperties(e.properties) ? (
                  <details
                    class="recent-props"
                    onToggle={(ev) => {
                      // An opened event stays where it is: the list pauses.
                      if ((ev.currentTarget as HTMLDetailsElement).open) pause();
                    }}
                  >
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
          {load && (mode.kind !== 'stored' || mode.next) && (
            <button
              type="button"
              class="secondary explorer-older"
              data-testid="explorer-older"
              disabled={mode.kind === 'stored' && mode.loading}
              onClick={() =>
                mode.kind === 'stored'
                  ? void read(mode.search, mode)
                  : // The stored events from the newest, a page past what the live list shows.
                    void read(null, null, list.length + PAGE_SIZE)
              }
            >
              {mode.kind === 'stored' && mode.loading ? 'Loading…' : 'Older events'}
            </button>
          )}
        </div>
      )}
    </div>
  );
}
