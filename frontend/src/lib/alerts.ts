// Alerting in the dashboard (docs/ALERTS.md): rule summaries, the rule form <-> the API's
// request body, the server's 400s mapped to form fields, and the state of the banners and
// the firing history fed by `alert` messages and GET .../alerts/history. Plain functions, no
// DOM: see test/alerts.test.ts.

import { fromZoneInput, toZoneInput } from './zone';
import type {
  AlertCondition,
  AlertFiring,
  AlertMeasure,
  AlertMessage,
  AlertNoData,
  AlertRule,
  AlertRuleInput,
  ContactPointInput,
  WebhookFormat,
} from './types';

export const MEASURES: { value: AlertMeasure; label: string }[] = [
  { value: 'events', label: 'Events (count)' },
  { value: 'unique_users', label: 'Unique users' },
  { value: 'unique_sessions', label: 'Unique sessions' },
];

export const CONDITION_OPS: { value: AlertCondition['op']; label: string }[] = [
  { value: 'above', label: 'above' },
  { value: 'below', label: 'below' },
  { value: 'change', label: 'changes by %' },
];

export const NO_DATA: { value: AlertNoData; label: string }[] = [
  { value: 'ok', label: 'ok (condition false)' },
  { value: 'alerting', label: 'alerting (condition true)' },
  { value: 'keep', label: 'keep the state' },
];

export const WINDOW_SUGGESTIONS = ['1m', '5m', '15m', '30m', '60m', 'hour', 'day'];

/** The API's limits (docs/ALERTS.md, "Rules"); the server checks them all again. */
export const RULE_NAME_MAX_CHARS = 100;
export const SECRET_MIN_CHARS = 16;
export const SECRET_MAX_CHARS = 256;
export const FOR_SECONDS_MAX = 86_400;

/** How long a `resolved` banner stays up. */
export const RESOLVED_BANNER_MS = 10_000;
/** Firings kept in the in-page history. */
export const HISTORY_LIMIT = 100;

/** A number as the messages and summaries show it: integers plain, others to 2 decimals. */
export function formatValue(v: number | null | undefined): string {
  if (v === null || v === undefined) return '–';
  if (!Number.isFinite(v)) return String(v);
  return Number.isInteger(v) ? String(v) : String(Math.round(v * 100) / 100);
}

/** "above 100", "below 5", "a change of +50 %" (the server's wording). */
export function describeCondition(c: AlertCondition): string {
  switch (c.op) {
    case 'above':
      return `above ${formatValue(c.threshold)}`;
    case 'below':
      return `below ${formatValue(c.threshold)}`;
    case 'change':
      return `a change of ${c.percent > 0 ? '+' : ''}${formatValue(c.percent)} %`;
  }
}

/** "events (event_name checkout, event_type track) over 5m" (the server's wording). */
export function describeMeasure(r: {
  measure: AlertMeasure;
  event_name: string | null;
  event_type: string | null;
  window: string;
}): string {
  const filters: string[] = [];
  if (r.event_name) filters.push(`event_name ${r.event_name}`);
  if (r.event_type) filters.push(`event_type ${r.event_type}`);
  return `${r.measure}${filters.length ? ` (${filters.join(', ')})` : ''} over ${r.window}`;
}

/** One line per rule: "events (event_name checkout) over 5m, above 100, for 30 s". */
export function summarizeRule(r: Pick<AlertRuleInput, 'measure' | 'event_name' | 'event_type' | 'window' | 'condition' | 'for_seconds'>): string {
  const held = r.for_seconds > 0 ? `, for ${r.for_seconds} s` : '';
  return `${describeMeasure(r)}, ${describeCondition(r.condition)}${held}`;
}

/** Whether a rule's deliveries are held back at `now` (its `muted_until` is in the future). */
export function mutedUntil(r: Pick<AlertRuleInput, 'muted_until'>, now: number): number | null {
  if (!r.muted_until) return null;
  const t = Date.parse(r.muted_until);
  return Number.isFinite(t) && t > now ? t : null;
}

// The form.

/** What the rule form holds: the inputs' text, as typed. */
export interface RuleForm {
  name: string;
  measure: AlertMeasure;
  eventName: string;
  eventType: string;
  window: string;
  op: AlertCondition['op'];
  /** The threshold, or the percent of a `change`. */
  value: string;
  forSeconds: string;
  noData: AlertNoData;
  enabled: boolean;
  webhookUrl: string;
  /** Empty when editing: the server keeps the secret of the same URL. */
  webhookSecret: string;
  webhookFormat: WebhookFormat;
  /** One `key=value` a line. */
  labels: string;
}

/** The form's fields, for errors: each has an input with the id `alert-<field>`. */
export type FormField =
  | 'name'
  | 'measure'
  | 'event-name'
  | 'event-type'
  | 'window'
  | 'op'
  | 'value'
  | 'for-seconds'
  | 'no-data'
  | 'enabled'
  | 'webhook-url'
  | 'webhook-secret'
  | 'webhook-format'
  | 'labels';

/** An error for one field of the form (`field` null: the rule as a whole). */
export interface FormError {
  field: FormField | null;
  message: string;
}

export function emptyForm(): RuleForm {
  return {
    name: '',
    measure: 'events',
    eventName: '',
    eventType: '',
    window: '5m',
    op: 'above',
    value: '',
    forSeconds: '0',
    noData: 'ok',
    enabled: true,
    webhookUrl: '',
    webhookSecret: '',
    webhookFormat: 'json',
    labels: '',
  };
}

/** The form filled from a saved rule (its first contact point; secrets are never shown). */
export function formFromRule(r: AlertRule): RuleForm {
  const cp = r.contact_points[0];
  return {
    name: r.name,
    measure: r.measure,
    eventName: r.event_name ?? '',
    eventType: r.event_type ?? '',
    window: r.window,
    op: r.condition.op,
    value: String(r.condition.op === 'change' ? r.condition.percent : r.condition.threshold),
    forSeconds: String(r.for_seconds),
    noData: r.no_data,
    enabled: r.enabled,
    webhookUrl: cp?.url ?? '',
    webhookSecret: '',
    webhookFormat: cp?.format ?? 'json',
    labels: Object.entries(r.labels ?? {})
      .map(([k, v]) => `${k}=${v}`)
      .join('\n'),
  };
}

/** `key=value` lines -> labels; blank lines are skipped. */
export function parseLabels(text: string): { labels: Record<string, string> } | { error: string } {
  const labels: Record<string, string> = {};
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    const eq = line.indexOf('=');
    const key = (eq < 0 ? line : line.slice(0, eq)).trim();
    if (eq < 0 || !key) return { error: `line ${i + 1} (“${line}”) is not key=value` };
    if (key in labels) return { error: `the key “${key}” appears twice` };
    labels[key] = line.slice(eq + 1).trim();
  }
  return { labels };
}

/** The rule as a PUT body: the API's answer without what it added (unknown fields are refused). */
export function ruleToInput(r: AlertRule): AlertRuleInput {
  return {
    name: r.name,
    measure: r.measure,
    event_name: r.event_name,
    event_type: r.event_type,
    window: r.window,
    condition: r.condition,
    for_seconds: r.for_seconds,
    no_data: r.no_data,
    labels: r.labels ?? {},
    // Without `secret`: a PUT keeps the secret of the contact point with the same URL.
    contact_points: r.contact_points.map((c) => ({ type: 'webhook', url: c.url, format: c.format })),
    enabled: r.enabled,
    muted_until: r.muted_until,
  };
}

/**
 * The POST/PUT body from the form, or the first field the page can already tell is wrong
 * (numbers, labels; the server checks everything and its 400 names the field too). `editing`
 * is the rule a PUT replaces: its `muted_until` and its other contact points are kept, and an
 * empty secret is left out (the server keeps the one of the same URL).
 */
export function buildRuleBody(form: RuleForm, editing: AlertRule | null = null): { body: AlertRuleInput } | { error: FormError } {
  const fail = (field: FormField, message: string) => ({ error: { field, message } });
  const name = form.name.trim();
  if (!name) return fail('name', 'Enter a name.');
  const value = form.value.trim() === '' ? NaN : Number(form.value);
  if (!Number.isFinite(value)) {
    return fail('value', form.op === 'change' ? 'Enter a percent (negative: a fall).' : 'Enter a number.');
  }
  if (form.op === 'change' && value === 0) return fail('value', 'The percent must not be 0 (positive: a rise, negative: a fall).');
  const forSeconds = form.forSeconds.trim() === '' ? 0 : Number(form.forSeconds);
  if (!Number.isInteger(forSeconds) || forSeconds < 0 || forSeconds > FOR_SECONDS_MAX) {
    return fail('for-seconds', `Enter whole seconds from 0 to ${FOR_SECONDS_MAX}.`);
  }
  const labels = parseLabels(form.labels);
  if ('error' in labels) return fail('labels', `Labels: ${labels.error}.`);

  const contactPoints: ContactPointInput[] = [];
  const url = form.webhookUrl.trim();
  const secret = form.webhookSecret;
  if (url) {
    const cp: ContactPointInput = { type: 'webhook', url, format: form.webhookFormat };
    const kept = editing?.contact_points[0]?.url === url && editing.contact_points[0].secret_set;
    if (secret) cp.secret = secret;
    else if (!kept) return fail('webhook-secret', `Enter a secret of at least ${SECRET_MIN_CHARS} characters: the receiver verifies the signature with it.`);
    contactPoints.push(cp);
  } else if (secret) {
    return fail('webhook-url', 'Enter the webhook URL the secret is for, or clear the secret.');
  }
  // The form edits the first contact point; the others stay as they are.
  for (const c of editing?.contact_points.slice(1) ?? []) contactPoints.push({ type: 'webhook', url: c.url, format: c.format });

  const condition: AlertCondition = form.op === 'change' ? { op: 'change', percent: value } : { op: form.op, threshold: value };
  return {
    body: {
      name,
      measure: form.measure,
      event_name: form.eventName.trim() || null,
      event_type: form.eventType.trim() || null,
      window: form.window.trim(),
      condition,
      for_seconds: forSeconds,
      no_data: form.noData,
      labels: labels.labels,
      contact_points: contactPoints,
      enabled: form.enabled,
      muted_until: editing?.muted_until ?? null,
    },
  };
}

/**
 * The form field a server 400 names (`condition.threshold`, `contact_points[0].url`,
 * `labels.team`), or null when it is not one the form shows.
 */
export function fieldForParameter(parameter: string | undefined | null): FormField | null {
  if (!parameter) return null;
  const direct: Record<string, FormField> = {
    name: 'name',
    measure: 'measure',
    event_name: 'event-name',
    event_type: 'event-type',
    window: 'window',
    'condition.op': 'op',
    condition: 'value',
    'condition.threshold': 'value',
    'condition.percent': 'value',
    for_seconds: 'for-seconds',
    no_data: 'no-data',
    enabled: 'enabled',
    labels: 'labels',
    contact_points: 'webhook-url',
  };
  if (parameter in direct) return direct[parameter];
  if (parameter.startsWith('labels.')) return 'labels';
  const cp = /^contact_points\[0\](?:\.(\w+))?$/.exec(parameter);
  if (cp) {
    if (cp[1] === 'secret') return 'webhook-secret';
    if (cp[1] === 'format') return 'webhook-format';
    return 'webhook-url';
  }
  return null;
}

/** The PUT body that mutes a rule until `until` (ms), or unmutes it (null). */
export function muteBody(r: AlertRule, until: number | null): AlertRuleInput {
  return { ...ruleToInput(r), muted_until: until === null ? null : new Date(until).toISOString() };
}

/** The mute form's default: an hour from now, as a datetime-local value in `zone`. */
export function defaultMuteInput(now: number, zone = 'UTC'): string {
  return toZoneInput(now + 3_600_000, zone);
}

/** A datetime-local value in `zone` -> a time in the future (ms), or an error. */
export function parseMuteInput(value: string, now: number, zone = 'UTC'): { until: number } | { error: string } {
  const t = fromZoneInput(value, zone);
  if (t === null) return { error: 'Enter a date and time.' };
  if (t <= now) return { error: 'Pick a time in the future.' };
  return { until: t };
}

// Banners and history.

export interface Banner {
  /** The firing's idempotency key (`<rule id>:<seq>`). */
  key: string;
  status: 'firing' | 'resolved';
  ruleId: string;
  ruleName: string;
  value: number | null;
  condition: string;
  measure: string;
  /** When the page received it (ms): a resolved banner goes after RESOLVED_BANNER_MS. */
  at: number;
}

export interface HistoryEntry {
  key: string;
  ruleId: string;
  ruleName: string;
  seq: number;
  firedAt: string;
  resolvedAt: string | null;
  value: number | null;
  resolvedValue: number | null;
  lateEvents: number;
}

export interface AlertsState {
  /** Newest first. */
  banners: Banner[];
  /** Newest firing first, at most HISTORY_LIMIT. */
  history: HistoryEntry[];
  /** `<key> <status>` of every message handled: a repeat is dropped (docs/ALERTS.md). */
  seen: string[];
  /** Bumped by every new alert message: the rules list reloads. */
  received: number;
}

export type AlertsAction =
  | { type: 'message'; msg: AlertMessage; now: number }
  | { type: 'history'; firings: AlertFiring[] }
  | { type: 'dismiss'; key: string };

export function initialAlerts(): AlertsState {
  return { banners: [], history: [], seen: [], received: 0 };
}

/** Whether a banner is still shown at `now`: firing until dismissed, resolved for 10 s. */
export function bannerVisible(b: Banner, now: number): boolean {
  return b.status === 'firing' || now - b.at < RESOLVED_BANNER_MS;
}

function sortHistory(list: HistoryEntry[]): HistoryEntry[] {
  return list
    .slice()
    .sort((a, b) => Date.parse(b.firedAt) - Date.parse(a.firedAt) || b.seq - a.seq)
    .slice(0, HISTORY_LIMIT);
}

function fromMessage(msg: AlertMessage): HistoryEntry {
  const resolved = msg.status === 'resolved';
  return {
    key: msg.idempotency_key,
    ruleId: msg.rule_id,
    ruleName: msg.rule_name,
    seq: msg.seq,
    firedAt: msg.fired_at,
    resolvedAt: resolved ? msg.resolved_at : null,
    value: resolved ? null : msg.value,
    resolvedValue: resolved ? msg.value : null,
    lateEvents: msg.late_events ?? 0,
  };
}

/**
 * An `alert` message: a banner (a rule's newer message replaces its older banner) and the
 * history entry of its firing. A repeat (same key and status) changes nothing.
 */
export function receiveAlert(state: AlertsState, msg: AlertMessage, now: number): AlertsState {
  const seenKey = `${msg.idempotency_key} ${msg.status}`;
  if (state.seen.includes(seenKey)) return state;
  const banner: Banner = {
    key: msg.idempotency_key,
    status: msg.status,
    ruleId: msg.rule_id,
    ruleName: msg.rule_name,
    value: msg.value,
    condition: describeCondition(msg.condition),
    measure: describeMeasure(msg),
    at: now,
  };
  const banners = [banner, ...state.banners.filter((b) => b.ruleId !== msg.rule_id && bannerVisible(b, now))];
  const entry = fromMessage(msg);
  const old = state.history.find((h) => h.key === entry.key);
  const merged: HistoryEntry = old
    ? msg.status === 'resolved'
      ? { ...old, resolvedAt: entry.resolvedAt, resolvedValue: entry.resolvedValue }
      : { ...old, value: entry.value, ruleName: entry.ruleName }
    : entry;
  return {
    banners,
    history: sortHistory([merged, ...state.history.filter((h) => h.key !== entry.key)]),
    seen: [...state.seen, seenKey].slice(-2 * HISTORY_LIMIT),
    received: state.received + 1,
  };
}

/** GET .../alerts/history: the server's firings, merged with what messages added since. */
export function mergeHistory(state: AlertsState, firings: AlertFiring[]): AlertsState {
  const byKey = new Map(state.history.map((h) => [h.key, h]));
  for (const f of firings) {
    const key = `${f.rule_id}:${f.seq}`;
    const mine = byKey.get(key);
    byKey.set(key, {
      key,
      ruleId: f.rule_id,
      ruleName: f.rule_name ?? mine?.ruleName ?? '(deleted rule)',
      seq: f.seq,
      firedAt: f.fired_at,
      // A resolution that arrived after the server answered is kept.
      resolvedAt: f.resolved_at ?? mine?.resolvedAt ?? null,
      value: f.value,
      resolvedValue: f.resolved_value ?? mine?.resolvedValue ?? null,
      lateEvents: f.late_events ?? 0,
    });
  }
  return { ...state, history: sortHistory([...byKey.values()]) };
}

export function reduceAlerts(state: AlertsState, action: AlertsAction): AlertsState {
  switch (action.type) {
    case 'message':
      return receiveAlert(state, action.msg, action.now);
    case 'history':
      return mergeHistory(state, action.firings);
    case 'dismiss':
      return { ...state, banners: state.banners.filter((b) => b.key !== action.key) };
  }
}

/** The banner's sentence: "Checkout spike is firing: 812 (events (event_name checkout) over 5m, above 100)". */
export function bannerText(b: Banner): string {
  return b.status === 'firing'
    ? `${b.ruleName} is firing: ${b.measure} = ${formatValue(b.value)}, ${b.condition}`
    : `${b.ruleName} resolved: ${b.measure} = ${formatValue(b.value)}, no longer ${b.condition}`;
}
