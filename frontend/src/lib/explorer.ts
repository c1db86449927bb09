// The event explorer's questions to GET /api/v1/orgs/{org}/events (docs/API.md, "Event
// explorer"): a search by event name, user id or property, one page at a time.

import type { AnalyticsEvent } from './types';

export type SearchKind = 'name' | 'user' | 'property';

export interface ExplorerSearch {
  kind: SearchKind;
  text: string;
}

export interface ExplorePage {
  events: AnalyticsEvent[];
  /** The cursor of the next (older) page; null: no more. */
  next: string | null;
  complete?: boolean;
}

export const SEARCH_KINDS: { kind: SearchKind; label: string; placeholder: string }[] = [
  { kind: 'name', label: 'Event name', placeholder: 'signup' },
  { kind: 'user', label: 'User id', placeholder: 'user_42' },
  { kind: 'property', label: 'Property', placeholder: 'plan = pro' },
];

/** Events per page of stored events. */
export const PAGE_SIZE = 50;

/**
 * The query string of one page: `search` (null: every event), after the page ending at `after`.
 * A property search is a trends condition on `properties.` ("plan = pro", "amount > 10",
 * "coupon is set"); the server names what it refuses.
 */
export function exploreQuery(search: ExplorerSearch | null, after: string | null, limit = PAGE_SIZE): string {
  const q = new URLSearchParams();
  q.set('limit', String(limit));
  if (after) q.set('after', after);
  const text = search?.text.trim() ?? '';
  if (search && text) {
    switch (search.kind) {
      case 'name':
        q.append('event', text);
        break;
      case 'user':
        q.set('user_id', text);
        break;
      case 'property':
        q.append('filter', text.startsWith('properties.') ? text : `properties.${text}`);
        break;
    }
  }
  return q.toString();
}

/** `more` appended to `list`, without ids already there (a page may repeat none, but be safe). */
export function appendPage(list: AnalyticsEvent[], more: AnalyticsEvent[]): AnalyticsEvent[] {
  const seen = new Set(list.map((e) => e.id));
  return [...list, ...more.filter((e) => !seen.has(e.id))];
}
