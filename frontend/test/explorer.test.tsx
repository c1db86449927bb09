// @vitest-environment happy-dom
// The event explorer: the questions it asks GET .../events, and the list that does not move
// under the reader (pause, "N new events", an opened event pauses, search, older pages).

import { render } from 'preact';
import { act } from 'preact/test-utils';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RecentEvents } from '../src/components/RecentEvents';
import { appendPage, exploreQuery, type ExplorePage } from '../src/lib/explorer';
import type { AnalyticsEvent } from '../src/lib/types';

function ev(n: number, props: Record<string, unknown> | null = { plan: 'pro' }): AnalyticsEvent {
  return {
    id: `e${n}`,
    org_id: 'o',
    event_type: 'track',
    event_name: `name_${n}`,
    user_id: `user_${n}`,
    session_id: null,
    properties: props,
    timestamp: new Date(Date.UTC(2026, 11, 5, 12, 0, n)).toISOString(),
    topic: 'events',
    partition: 0,
    offset: n,
    ingested_at: new Date(Date.UTC(2026, 11, 5, 12, 0, n)).toISOString(),
  };
}

describe('exploreQuery', () => {
  it('asks by event name, user id or property, page by page', () => {
    expect(exploreQuery(null, null)).toBe('limit=50');
    expect(exploreQuery({ kind: 'name', text: ' signup ' }, null)).toBe('limit=50&event=signup');
    expect(exploreQuery({ kind: 'user', text: 'user 7' }, 'c1', 20)).toBe('limit=20&after=c1&user_id=user+7');
    expect(new URLSearchParams(exploreQuery({ kind: 'property', text: 'plan = pro' }, null)).get('filter')).toBe('properties.plan = pro');
    expect(new URLSearchParams(exploreQuery({ kind: 'property', text: 'properties.n > 3' }, null)).get('filter')).toBe('properties.n > 3');
    // An empty search is every event.
    expect(exploreQuery({ kind: 'name', text: '  ' }, null)).toBe('limit=50');
  });

  it('appends pages without repeating an event', () => {
    expect(appendPage([ev(3), ev(2)], [ev(2), ev(1)]).map((e) => e.id)).toEqual(['e3', 'e2', 'e1']);
  });
});

describe('RecentEvents', () => {
  let root: HTMLElement;
  beforeEach(() => {
    root = document.createElement('div');
    document.body.appendChild(root);
  });
  afterEach(() => {
    render(null, root);
    root.remove();
  });

  const ids = () => [...root.querySelectorAll('[data-testid="recent-event"]')].map((e) => e.getAttribute('data-id'));
  const q = (id: string) => root.querySelector(`[data-testid="${id}"]`) as HTMLElement | null;
  const show = (events: AnalyticsEvent[], arrived: number, load?: (query: string) => Promise<ExplorePage>) =>
    act(() => {
      render(<RecentEvents events={events} arrived={arrived} now={Date.UTC(2026, 11, 5, 12, 1)} title="Recent events" load={load} />, root);
    });

  it('moves while live; paused it keeps its list and counts the new events until asked', async () => {
    await show([ev(2), ev(1)], 2);
    expect(ids()).toEqual(['e2', 'e1']);
    await show([ev(3), ev(2), ev(1)], 3);
    expect(ids()).toEqual(['e3', 'e2', 'e1']);
    expect(q('explorer-new')).toBeNull();
    await act(() => q('explorer-pause')!.click());
    await show([ev(5), ev(4), ev(3), ev(2), ev(1)], 1_503);
    expect(ids()).toEqual(['e3', 'e2', 'e1']);
    expect(q('explorer-new')!.textContent).toBe('1,500 new events');
    await act(() => q('explorer-new')!.click());
    expect(ids()).toEqual(['e5', 'e4', 'e3', 'e2', 'e1']);
    expect(q('explorer-new')).toBeNull();
  });

  it('pauses when an event is opened', async () => {
    await show([ev(2), ev(1)], 2);
    const details = root.querySelector('details')!;
    await act(() => {
      details.open = true;
      details.dispatchEvent(new Event('toggle'));
    });
    await show([ev(3), ev(2), ev(1)], 3);
    expect(ids()).toEqual(['e2', 'e1']);
    expect(root.querySelector('[data-testid="recent-events"]')!.getAttribute('data-mode')).toBe('paused');
  });

  it('searches the stored events, pages back, and says what the server refused', async () => {
    const load = vi.fn(async (query: string): Promise<ExplorePage> => {
      const p = new URLSearchParams(query);
      if (p.get('filter') === 'properties.plan ~ pro') throw new Error("parameter 'filter': 'plan ~ pro' has no operator");
      if (p.get('after') === 'c1') return { events: [ev(1)], next: null };
      return { events: [ev(9), ev(8)], next: 'c1' };
    });
    await show([ev(20)], 1, load);
    const search = async (kind: string, text: string) => {
      const select = q('explorer-search-kind') as HTMLSelectElement;
      const input = q('explorer-search-input') as HTMLInputElement;
      await act(() => {
        select.value = kind;
        select.dispatchEvent(new Event('change'));
        input.value = text;
        input.dispatchEvent(new Event('input'));
      });
      await act(async () => {
        q('explorer-search')!.click();
      });
    };
    await search('user', 'user_9');
    expect(load).toHaveBeenLastCalledWith('limit=50&user_id=user_9');
    expect(ids()).toEqual(['e9', 'e8']);
    // New live events do not move the results; they are counted.
    await show([ev(21), ev(20)], 2, load);
    expect(ids()).toEqual(['e9', 'e8']);
    expect(q('explorer-new')!.textContent).toBe('1 new event');
    await act(async () => {
      q('explorer-older')!.click();
    });
    expect(load).toHaveBeenLastCalledWith('limit=50&after=c1&user_id=user_9');
    expect(ids()).toEqual(['e9', 'e8', 'e1']);
    expect(q('explorer-older')).toBeNull();
    // A refused search is shown, naming what was refused.
    await search('property', 'plan ~ pro');
    expect(q('explorer-error')!.textContent).toContain("parameter 'filter'");
    await act(() => q('explorer-resume')!.click());
    expect(ids()).toEqual(['e21', 'e20']);
  });
});
