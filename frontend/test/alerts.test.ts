import { describe, expect, it } from 'vitest';
import {
  bannerText,
  bannerVisible,
  buildRuleBody,
  describeCondition,
  emptyForm,
  fieldForParameter,
  formFromRule,
  initialAlerts,
  mergeHistory,
  muteBody,
  mutedUntil,
  parseLabels,
  parseMuteInput,
  reduceAlerts,
  RESOLVED_BANNER_MS,
  summarizeRule,
  type RuleForm,
} from '../src/lib/alerts';
import { isAlertMessage } from '../src/lib/connection';
import { toLocalInput } from '../src/lib/range';
import { browserZone } from '../src/lib/trends';
import type { AlertRuleInput, ServerMessage } from '../src/lib/types';
import { alertMessage, alertRule, RULE_ID } from './fixtures';

function form(over: Partial<RuleForm> = {}): RuleForm {
  return { ...emptyForm(), name: 'Checkout spike', eventName: 'checkout', window: '1m', value: '20', ...over };
}

function body(over: Partial<RuleForm> = {}, editing = null as ReturnType<typeof alertRule> | null): AlertRuleInput {
  const r = buildRuleBody(form(over), editing);
  if ('error' in r) throw new Error(`unexpected error ${JSON.stringify(r.error)}`);
  return r.body;
}

function error(over: Partial<RuleForm>, editing = null as ReturnType<typeof alertRule> | null) {
  const r = buildRuleBody(form(over), editing);
  if (!('error' in r)) throw new Error(`no error for ${JSON.stringify(over)}`);
  return r.error;
}

describe('summaries', () => {
  it('describe a rule in the server’s words', () => {
    expect(summarizeRule(alertRule())).toBe('events (event_name checkout) over 5m, above 100, for 30 s');
    expect(
      summarizeRule(alertRule({ measure: 'unique_users', event_name: null, event_type: 'page', window: 'hour', condition: { op: 'below', threshold: 2.5 }, for_seconds: 0 })),
    ).toBe('unique_users (event_type page) over hour, below 2.5');
    expect(describeCondition({ op: 'change', percent: 50 })).toBe('a change of +50 %');
    expect(describeCondition({ op: 'change', percent: -25 })).toBe('a change of -25 %');
    expect(summarizeRule(alertRule({ event_name: null, window: 'day' }))).toBe('events over day, above 100, for 30 s');
  });

  it('a rule is muted only while muted_until is in the future', () => {
    const now = Date.parse('2026-12-05T10:00:00Z');
    expect(mutedUntil(alertRule(), now)).toBeNull();
    expect(mutedUntil(alertRule({ muted_until: '2026-12-05T11:00:00.000000Z' }), now)).toBe(now + 3_600_000);
    expect(mutedUntil(alertRule({ muted_until: '2026-12-05T09:00:00.000000Z' }), now)).toBeNull();
  });
});

describe('the rule form -> the request body', () => {
  it('builds a POST body with nulls for empty filters and no contact point without a URL', () => {
    expect(body()).toEqual({
      name: 'Checkout spike',
      measure: 'events',
      event_name: 'checkout',
      event_type: null,
      window: '1m',
      condition: { op: 'above', threshold: 20 },
      for_seconds: 0,
      no_data: 'ok',
      labels: {},
      contact_points: [],
      enabled: true,
      muted_until: null,
    });
  });

  it('a change takes a percent; labels and a webhook are read', () => {
    const b = body({
      op: 'change',
      value: '-30',
      forSeconds: '60',
      noData: 'keep',
      labels: 'team = growth\n\nsev=2',
      webhookUrl: ' https://hooks.example.com/a ',
      webhookSecret: '0123456789abcdef',
      webhookFormat: 'slack',
    });
    expect(b.condition).toEqual({ op: 'change', percent: -30 });
    expect(b.for_seconds).toBe(60);
    expect(b.no_data).toBe('keep');
    expect(b.labels).toEqual({ team: 'growth', sev: '2' });
    expect(b.contact_points).toEqual([{ type: 'webhook', url: 'https://hooks.example.com/a', secret: '0123456789abcdef', format: 'slack' }]);
  });

  it('refuses what the page can tell is wrong, naming the field', () => {
    expect(error({ name: '  ' }).field).toBe('name');
    expect(error({ value: '' }).field).toBe('value');
    expect(error({ value: 'lots' }).field).toBe('value');
    expect(error({ op: 'change', value: '0' }).field).toBe('value');
    expect(error({ forSeconds: '1.5' }).field).toBe('for-seconds');
    expect(error({ forSeconds: '86401' }).field).toBe('for-seconds');
    expect(error({ labels: 'no equals sign' })).toEqual({ field: 'labels', message: 'Labels: line 1 (“no equals sign”) is not key=value.' });
    expect(error({ webhookUrl: 'https://h/' }).field).toBe('webhook-secret');
    expect(error({ webhookSecret: '0123456789abcdef' }).field).toBe('webhook-url');
  });

  it('editing: an empty secret is left out (the server keeps it), muted_until and other contact points are kept', () => {
    const rule = alertRule({
      muted_until: '2026-12-05T11:00:00.000000Z',
      contact_points: [
        { type: 'webhook', url: 'https://hooks.example.com/a', format: 'json', secret_set: true },
        { type: 'webhook', url: 'https://hooks.example.com/b', format: 'slack', secret_set: true },
      ],
    });
    const f = formFromRule(rule);
    expect(f).toMatchObject({ name: 'Checkout spike', window: '5m', op: 'above', value: '100', forSeconds: '30', webhookUrl: 'https://hooks.example.com/a', webhookSecret: '', labels: 'team=growth' });
    const r = buildRuleBody({ ...f, name: 'Renamed' }, rule);
    if ('error' in r) throw new Error(r.error.message);
    expect(r.body.name).toBe('Renamed');
    expect(r.body.muted_until).toBe('2026-12-05T11:00:00.000000Z');
    expect(r.body.contact_points).toEqual([
      { type: 'webhook', url: 'https://hooks.example.com/a', format: 'json' },
      { type: 'webhook', url: 'https://hooks.example.com/b', format: 'slack' },
    ]);
    expect('secret' in r.body.contact_points[0]).toBe(false);
    // A new URL has no secret to keep.
    expect(buildRuleBody({ ...f, webhookUrl: 'https://elsewhere/' }, rule)).toMatchObject({ error: { field: 'webhook-secret' } });
    // A new secret is sent.
    const again = buildRuleBody({ ...f, webhookSecret: 'another secret 0123' }, rule);
    expect('body' in again && again.body.contact_points[0].secret).toBe('another secret 0123');
  });

  it('a mute is a PUT of the whole rule without secrets and without what the API added', () => {
    const until = Date.parse('2026-12-05T12:00:00Z');
    const b = muteBody(alertRule(), until);
    expect(b.muted_until).toBe('2026-12-05T12:00:00.000Z');
    expect(Object.keys(b).sort()).toEqual(
      ['condition', 'contact_points', 'enabled', 'event_name', 'event_type', 'for_seconds', 'labels', 'measure', 'muted_until', 'name', 'no_data', 'window'],
    );
    expect(b.contact_points).toEqual([{ type: 'webhook', url: 'https://hooks.example.com/a', format: 'json' }]);
    expect(muteBody(alertRule({ muted_until: '2026-12-05T12:00:00.000000Z' }), null).muted_until).toBeNull();
  });

  it('the mute time must be a future local time', () => {
    const now = Date.parse('2026-12-05T10:00:00Z');
    expect(parseMuteInput(toLocalInput(now + 60_000 * 30), now, browserZone())).toHaveProperty('until');
    expect(parseMuteInput(toLocalInput(now - 60_000 * 30), now, browserZone())).toEqual({ error: 'Pick a time in the future.' });
    // In the page's zone: 10:00 in Kolkata is 04:30Z.
    const at = Date.parse('2026-12-05T04:00:00Z');
    expect(parseMuteInput('2026-12-05T10:00', at, 'Asia/Kolkata')).toEqual({ until: Date.parse('2026-12-05T04:30:00Z') });
    expect(parseMuteInput('', now)).toEqual({ error: 'Enter a date and time.' });
  });

  it('labels: blank lines skipped, repeated keys refused', () => {
    expect(parseLabels('')).toEqual({ labels: {} });
    expect(parseLabels('a=\nb=c=d')).toEqual({ labels: { a: '', b: 'c=d' } });
    expect(parseLabels('a=1\na=2')).toEqual({ error: 'the key “a” appears twice' });
  });

  it('maps the server’s 400 parameters to the form’s fields', () => {
    expect(fieldForParameter('window')).toBe('window');
    expect(fieldForParameter('condition.threshold')).toBe('value');
    expect(fieldForParameter('condition.percent')).toBe('value');
    expect(fieldForParameter('condition.op')).toBe('op');
    expect(fieldForParameter('for_seconds')).toBe('for-seconds');
    expect(fieldForParameter('labels.team')).toBe('labels');
    expect(fieldForParameter('contact_points[0].url')).toBe('webhook-url');
    expect(fieldForParameter('contact_points[0].secret')).toBe('webhook-secret');
    expect(fieldForParameter('contact_points[0].format')).toBe('webhook-format');
    expect(fieldForParameter('contact_points[1].url')).toBeNull();
    expect(fieldForParameter('colour')).toBeNull();
    expect(fieldForParameter(undefined)).toBeNull();
  });
});

describe('alert messages -> banners and history', () => {
  const t0 = Date.parse('2026-12-05T10:05:01Z');

  it('a firing shows a banner until dismissed and starts a history entry', () => {
    let s = reduceAlerts(initialAlerts(), { type: 'message', msg: alertMessage(), now: t0 });
    expect(s.banners).toHaveLength(1);
    const b = s.banners[0];
    expect(b).toMatchObject({ key: `${RULE_ID}:1`, status: 'firing', ruleName: 'Checkout spike', value: 812 });
    expect(bannerText(b)).toBe('Checkout spike is firing: events (event_name checkout) over 5m = 812, above 100');
    expect(bannerVisible(b, t0 + 3_600_000)).toBe(true);
    expect(s.history).toEqual([
      { key: `${RULE_ID}:1`, ruleId: RULE_ID, ruleName: 'Checkout spike', seq: 1, firedAt: '2026-12-05T10:05:00.000000Z', resolvedAt: null, value: 812, resolvedValue: null, lateEvents: 0 },
    ]);
    expect(s.received).toBe(1);
    s = reduceAlerts(s, { type: 'dismiss', key: b.key });
    expect(s.banners).toEqual([]);
  });

  it('a repeat (same key and status) is dropped; the resolution replaces the firing banner and hides after 10 s', () => {
    let s = reduceAlerts(initialAlerts(), { type: 'message', msg: alertMessage(), now: t0 });
    const again = reduceAlerts(s, { type: 'message', msg: alertMessage(), now: t0 + 1000 });
    expect(again).toBe(s);
    s = reduceAlerts(s, {
      type: 'message',
      msg: alertMessage({ status: 'resolved', value: 40, resolved_at: '2026-12-05T10:06:00.000000Z' }),
      now: t0 + 60_000,
    });
    expect(s.banners.map((b) => b.status)).toEqual(['resolved']);
    expect(bannerText(s.banners[0])).toBe('Checkout spike resolved: events (event_name checkout) over 5m = 40, no longer above 100');
    expect(bannerVisible(s.banners[0], t0 + 60_000 + RESOLVED_BANNER_MS - 1)).toBe(true);
    expect(bannerVisible(s.banners[0], t0 + 60_000 + RESOLVED_BANNER_MS)).toBe(false);
    expect(s.history).toHaveLength(1);
    expect(s.history[0]).toMatchObject({ value: 812, resolvedAt: '2026-12-05T10:06:00.000000Z', resolvedValue: 40 });
    expect(s.received).toBe(2);
  });

  it('banners of different rules stack, newest first', () => {
    let s = reduceAlerts(initialAlerts(), { type: 'message', msg: alertMessage(), now: t0 });
    s = reduceAlerts(s, { type: 'message', msg: alertMessage({ rule_id: 'r2', rule_name: 'Signups down', idempotency_key: 'r2:4', seq: 4 }), now: t0 + 1 });
    expect(s.banners.map((b) => b.ruleName)).toEqual(['Signups down', 'Checkout spike']);
  });

  it('the history from the API merges with what the messages added, newest firing first', () => {
    let s = reduceAlerts(initialAlerts(), {
      type: 'message',
      msg: alertMessage({ seq: 2, idempotency_key: `${RULE_ID}:2`, fired_at: '2026-12-05T11:00:00.000000Z', value: 300 }),
      now: t0,
    });
    s = mergeHistory(s, [
      { rule_id: RULE_ID, rule_name: 'Checkout spike', seq: 2, fired_at: '2026-12-05T11:00:00.000000Z', resolved_at: null, value: 300, resolved_value: null, late_events: 0 },
      { rule_id: RULE_ID, rule_name: 'Checkout spike', seq: 1, fired_at: '2026-12-05T10:05:00.000000Z', resolved_at: '2026-12-05T10:07:00.000000Z', value: 812, resolved_value: 5, late_events: 3 },
      { rule_id: 'gone', rule_name: null, seq: 1, fired_at: '2026-12-04T10:00:00.000000Z', resolved_at: null, value: 1, resolved_value: null, late_events: 0 },
    ]);
    expect(s.history.map((h) => [h.key, h.resolvedAt !== null, h.lateEvents])).toEqual([
      [`${RULE_ID}:2`, false, 0],
      [`${RULE_ID}:1`, true, 3],
      ['gone:1', false, 0],
    ]);
    expect(s.history[2].ruleName).toBe('(deleted rule)');
  });

  it('only well-formed alert messages reach the banners', () => {
    expect(isAlertMessage(alertMessage())).toBe(true);
    expect(isAlertMessage({ type: 'alert', status: 'maybe' } as unknown as ServerMessage)).toBe(false);
    expect(isAlertMessage({ type: 'pong' })).toBe(false);
  });
});
