import type {
  AlertMessage,
  AlertRule,
  AnalyticsEvent,
  CountersBody,
  SnapshotMessage,
  TimePoint,
  TopEventsBody,
  UniqueUsersBody,
  UpdateMessage,
  View,
} from '../src/lib/types';

export const ORG = '7d0c7f2e-6a39-4d7e-8b1a-0c5f2d9e4a11';

export function iso(ms: number): string {
  return new Date(ms).toISOString();
}

export function point(t: string | number, events: number, users = Math.ceil(events / 3)): TimePoint {
  return { t: typeof t === 'number' ? iso(t) : t, events, unique_users: users, unique_sessions: users + 1 };
}

export function counters(over: Partial<CountersBody> = {}): CountersBody {
  return {
    org_id: ORG,
    events_5m: 120,
    active_users_5m: 40,
    prev_events_5m: 100,
    prev_active_users_5m: 50,
    events_today: 5120,
    unique_users_today: 812,
    windows: [{ window_seconds: 300, events: 120, active_users: 40, prev_events: 100, prev_active_users: 50 }],
    updated_at: '2026-11-27T10:15:00.000Z',
    ...over,
  };
}

let seq = 0;
export function event(over: Partial<AnalyticsEvent> = {}): AnalyticsEvent {
  seq++;
  return {
    id: `00000000-0000-4000-8000-${String(seq).padStart(12, '0')}`,
    org_id: ORG,
    event_type: 'track',
    event_name: 'page_view',
    user_id: `u${seq}`,
    session_id: `s${seq}`,
    properties: { path: `/p/${seq}` },
    timestamp: '2026-11-27T10:15:00.000Z',
    topic: 'events',
    partition: 0,
    offset: seq,
    ingested_at: '2026-11-27T10:15:00.100Z',
    ...over,
  };
}

export function events(n: number, over: Partial<AnalyticsEvent> = {}): AnalyticsEvent[] {
  return Array.from({ length: n }, () => event(over));
}

export function topEvents(list: [string, number][], date = '2026-11-27'): TopEventsBody {
  return { org_id: ORG, date, events: list.map(([event_name, count]) => ({ event_name, count })) };
}

export function uniqueUsers(n: number, exact = true): UniqueUsersBody {
  return { org_id: ORG, from: '2026-11-26T11:00:00.000Z', to: '2026-11-27T11:00:00.000Z', unique_users: n, unique_sessions: n + 10, exact };
}

export function snapshot(view: View, points: TimePoint[], over: Partial<SnapshotMessage> = {}): SnapshotMessage {
  return {
    type: 'snapshot',
    view,
    timeseries: { org_id: ORG, from: view.from, to: view.to ?? iso(Date.parse(view.from)), granularity: view.granularity, event_type: view.event_type, points },
    top_events: topEvents([
      ['page_view', 812],
      ['click', 400],
      ['signup', 12],
    ]),
    unique_users: uniqueUsers(4512),
    counters: counters(),
    recent_events: events(3),
    lag: { events: 0, freshness_ms: 850 },
    ...over,
  };
}

export function update(over: Partial<UpdateMessage> = {}): UpdateMessage {
  return { type: 'update', events: [], counters: counters(), lag: { events: 5, freshness_ms: 1200 }, ...over };
}

export const RULE_ID = '3f0c2a51-9b7e-4c1d-8e2f-5a6b7c8d9e01';

export function alertRule(over: Partial<AlertRule> = {}): AlertRule {
  return {
    id: RULE_ID,
    org_id: ORG,
    name: 'Checkout spike',
    measure: 'events',
    event_name: 'checkout',
    event_type: null,
    window: '5m',
    condition: { op: 'above', threshold: 100 },
    for_seconds: 30,
    no_data: 'ok',
    labels: { team: 'growth' },
    contact_points: [{ type: 'webhook', url: 'https://hooks.example.com/a', format: 'json', secret_set: true }],
    enabled: true,
    muted_until: null,
    created_at: '2026-12-05T10:00:00.000000Z',
    updated_at: '2026-12-05T10:00:00.000000Z',
    state: { state: 'inactive', since: '2026-12-05T10:00:00.000000Z', value: 12, previous_value: 10, evaluated_at: '2026-12-05T10:00:01.000000Z', seq: 0, muted: false },
    ...over,
  };
}

export function alertMessage(over: Partial<AlertMessage> = {}): AlertMessage {
  return {
    type: 'alert',
    status: 'firing',
    idempotency_key: `${RULE_ID}:1`,
    org_id: ORG,
    rule_id: RULE_ID,
    rule_name: 'Checkout spike',
    seq: 1,
    labels: { team: 'growth' },
    measure: 'events',
    event_name: 'checkout',
    event_type: null,
    window: '5m',
    condition: { op: 'above', threshold: 100 },
    value: 812,
    previous_value: 90,
    window_from: '2026-12-05T10:00:00.000000Z',
    window_to: '2026-12-05T10:05:00.000000Z',
    fired_at: '2026-12-05T10:05:00.000000Z',
    resolved_at: null,
    late_events: 0,
    ...over,
  };
}
