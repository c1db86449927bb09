// Types of the gateway API (docs/API.md, v1). Only what the dashboard reads or sends.

import type { TrendMessage, TrendUpdateMessage } from './trends';

export type Granularity = 'hour' | 'day';

export interface TimePoint {
  /** Bucket start, RFC 3339 UTC. */
  t: string;
  events: number;
  unique_users: number;
  unique_sessions: number;
}

export interface TimeseriesBody {
  org_id: string;
  from: string;
  to: string;
  granularity: Granularity;
  event_type: string | null;
  points: TimePoint[];
}

export interface TopEvent {
  event_name: string;
  count: number;
}

export interface TopEventsBody {
  org_id: string;
  date: string;
  events: TopEvent[];
}

export interface UniqueUsersBody {
  org_id: string;
  from: string;
  to: string;
  unique_users: number;
  unique_sessions: number;
  exact: boolean;
}

export interface CounterWindow {
  window_seconds: number;
  events: number;
  active_users: number;
  prev_events: number;
  prev_active_users: number;
}

export interface CountersBody {
  org_id: string;
  events_5m: number;
  active_users_5m: number;
  prev_events_5m: number;
  prev_active_users_5m: number;
  events_today: number;
  unique_users_today: number;
  windows?: CounterWindow[];
  updated_at: string;
}

export interface AnalyticsEvent {
  id: string;
  org_id: string;
  event_type: string;
  event_name: string;
  user_id: string | null;
  session_id: string | null;
  properties: Record<string, unknown> | null;
  timestamp: string;
  topic: string;
  partition: number;
  offset: number;
  ingested_at: string;
}

export interface Lag {
  /** Events read but not yet stored. */
  events: number;
  /** Age of the newest stored event's ingest, in ms. */
  freshness_ms: number;
}

/** The view a `subscribe` asked for, echoed in the snapshot. */
export interface View {
  from: string;
  to: string | null;
  granularity: Granularity;
  event_type: string | null;
}

export interface HelloMessage {
  type: 'hello';
  org_id: string;
  server_time: string;
  push_interval_ms: number;
}

export interface SnapshotMessage {
  type: 'snapshot';
  view: View;
  timeseries: TimeseriesBody;
  top_events: TopEventsBody;
  unique_users: UniqueUsersBody;
  counters: CountersBody;
  recent_events: AnalyticsEvent[];
  lag: Lag;
}

/** Only what is new: `counters`, `view.top_events` and `view.unique_users` are absent when unchanged. */
export interface UpdateMessage {
  type: 'update';
  /** The newest of the new events, at most the subscribe's `events`. */
  events: AnalyticsEvent[];
  /** How many of the org's events arrived since the last update, carried or not. */
  new_events?: number;
  counters?: CountersBody;
  lag: Lag;
  view?: {
    timeseries: TimePoint[];
    top_events?: TopEventsBody;
    unique_users?: UniqueUsersBody;
  };
}

export interface PongMessage {
  type: 'pong';
}

export interface ErrorMessage {
  type: 'error';
  code: string;
  message: string;
}

export type ServerMessage =
  | HelloMessage
  | SnapshotMessage
  | UpdateMessage
  | PongMessage
  | ErrorMessage
  | AlertMessage
  | TrendMessage
  | TrendUpdateMessage;

export interface SubscribeCommand {
  type: 'subscribe';
  from: string;
  to: string | null;
  granularity: Granularity;
  event_type: string | null;
  /** Most events an update carries (the server's cap when absent). */
  events?: number;
}

export interface PingCommand {
  type: 'ping';
}

export type ClientCommand = SubscribeCommand | PingCommand;

export type WidgetKind = 'stat' | 'line' | 'bar' | 'recent' | 'trend';

/** A trend widget's question: the trends parameters with a `range` (1h, 24h, 7d, 30d, 90d) ending now. */
export type WidgetTrend = Record<string, string | number | string[]>;

export type StatMetric =
  | 'events_5m'
  | 'active_users_5m'
  | 'events_today'
  | 'unique_users_today'
  | 'unique_users_range';

export interface Widget {
  id: string;
  kind: WidgetKind;
  title?: string;
  /** Stat widgets only. */
  metric?: StatMetric;
  /** Trend widgets only. */
  trend?: WidgetTrend;
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface Dashboard {
  id: string;
  org_id: string;
  name: string;
  widgets: Widget[];
  created_at: string;
  updated_at: string;
}

export interface ApiErrorBody {
  error: {
    code: string;
    message: string;
    parameter?: string;
    value?: string;
  };
}

// Alerting (docs/ALERTS.md).

export type AlertMeasure = 'events' | 'unique_users' | 'unique_sessions';

export type AlertCondition =
  | { op: 'above'; threshold: number }
  | { op: 'below'; threshold: number }
  /** A change of at least `percent` % against the previous window (negative: a fall). */
  | { op: 'change'; percent: number };

export type AlertNoData = 'ok' | 'alerting' | 'keep';

export type WebhookFormat = 'json' | 'slack';

/** A contact point as sent: a `PUT` without `secret` keeps the secret of the same `url`. */
export interface ContactPointInput {
  type: 'webhook';
  url: string;
  secret?: string;
  format: WebhookFormat;
}

/** A contact point as the API shows it: never the secret. */
export interface ContactPoint {
  type: 'webhook';
  url: string;
  format: WebhookFormat;
  secret_set: boolean;
}

/** The body of `POST` and `PUT /api/v1/orgs/{org}/alerts[/{id}]`. Unknown fields are refused. */
export interface AlertRuleInput {
  name: string;
  measure: AlertMeasure;
  event_name: string | null;
  event_type: string | null;
  /** `"<N>m"` (N in 1..=60), `"hour"` or `"day"`. */
  window: string;
  condition: AlertCondition;
  for_seconds: number;
  no_data: AlertNoData;
  labels: Record<string, string>;
  contact_points: ContactPointInput[];
  enabled: boolean;
  muted_until: string | null;
}

export type AlertStateName = 'inactive' | 'pending' | 'firing' | 'resolved';

export interface AlertRuleState {
  state: AlertStateName;
  since: string | null;
  value: number | null;
  previous_value: number | null;
  evaluated_at: string | null;
  seq: number;
  /** Deliveries are held back now (`muted_until` is in the future). */
  muted: boolean;
}

export interface AlertRule extends Omit<AlertRuleInput, 'contact_points'> {
  id: string;
  org_id: string;
  contact_points: ContactPoint[];
  created_at: string;
  updated_at: string;
  state: AlertRuleState;
}

/** One firing of a rule (`GET .../alerts/history`), newest first. */
export interface AlertFiring {
  rule_id: string;
  rule_name: string | null;
  seq: number;
  fired_at: string;
  resolved_at: string | null;
  value: number | null;
  resolved_value: number | null;
  late_events: number;
}

/** A rule fired or resolved: the same body on the WebSocket and to webhooks. */
export interface AlertMessage {
  type: 'alert';
  status: 'firing' | 'resolved';
  /** `<rule id>:<seq>`: the same for a firing and its resolution, and for every retry. */
  idempotency_key: string;
  org_id: string;
  rule_id: string;
  rule_name: string;
  seq: number;
  labels: Record<string, string>;
  measure: AlertMeasure;
  event_name: string | null;
  event_type: string | null;
  window: string;
  condition: AlertCondition;
  value: number | null;
  previous_value: number | null;
  window_from: string;
  window_to: string;
  fired_at: string;
  resolved_at: string | null;
  late_events: number;
}
