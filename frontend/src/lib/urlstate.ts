// The shareable view in the address's hash (reload-safe, back/forward): the selected
// dashboard, the main range and event type, the trend question and the time zone. Never the
// token (the sign-in keeps it in sessionStorage and strips `?token=`).

import type { ViewSpec } from './range';
import type { PageFilter } from './zoneview';
import {
  DEFAULT_QUERY,
  FILTER_OPS,
  GRANULARITIES,
  MEASURES,
  TREND_RANGES,
  type FilterOp,
  type FilterRow,
  type TrendQuery,
  type TrendRangeKey,
} from './trends';

export interface UrlState {
  dashboard: string | null;
  view: ViewSpec | null;
  query: TrendQuery | null;
  /** null: the org's default zone. */
  tz: string | null;
  /** The page's filters (event names, conditions); absent: none. */
  page?: PageFilter | null;
}

const FILTER_RE = /^(\S+) (is not set|is set|!=|>=|<=|=|>|<)(?: ([\s\S]*))?$/;

export function parseFilter(text: string): FilterRow | null {
  const m = FILTER_RE.exec(text.trim());
  if (!m || !FILTER_OPS.includes(m[2] as FilterOp)) return null;
  return { field: m[1], op: m[2] as FilterOp, value: m[3] ?? '' };
}

const num = (s: string | null): number | undefined => {
  if (s === null || s.trim() === '') return undefined;
  const n = Number(s);
  return Number.isFinite(n) ? n : undefined;
};

export function encodeHash(s: UrlState): string {
  const u = new URLSearchParams();
  if (s.dashboard) u.set('d', s.dashboard);
  if (s.view) {
    u.set('r', s.view.range);
    if (s.view.range === 'custom') {
      u.set('rf', String(s.view.from));
      u.set('rt', String(s.view.to));
    }
    if (s.view.eventType) u.set('et', s.view.eventType);
  }
  const q = s.query;
  if (q) {
    u.set('tr', q.range);
    if (q.range === 'custom' && q.from !== undefined && q.to !== undefined) {
      u.set('tf', String(q.from));
      u.set('tt', String(q.to));
    }
    if (q.measure !== 'events') u.set('m', q.measure);
    if (q.granularity !== 'auto') u.set('g', q.granularity);
    for (const e of q.events) u.append('ev', e);
    for (const f of q.filters) u.append('f', `${f.field} ${f.op}${f.op === 'is set' || f.op === 'is not set' ? '' : ` ${f.value}`}`);
    if (q.breakdown) {
      u.set('bd', q.breakdown);
      u.set('bl', String(q.breakdownLimit));
    }
    if (q.compare) u.set('cmp', '1');
  }
  if (s.tz) u.set('tz', s.tz);
  for (const e of s.page?.events ?? []) u.append('pe', e);
  for (const f of s.page?.filters ?? []) u.append('pf', f);
  if (s.page?.compare) u.set('pc', '1');
  if (s.page?.breakdown) u.set('pb', s.page.breakdown);
  return u.toString();
}

export function decodeHash(hash: string): UrlState {
  const u = new URLSearchParams(hash.replace(/^#/, ''));
  let view: ViewSpec | null = null;
  const r = u.get('r');
  const et = u.get('et') || null;
  if (r === '1h' || r === '24h' || r === '7d' || r === '30d') view = { range: r, eventType: et };
  else if (r === 'custom') {
    const from = num(u.get('rf'));
    const to = num(u.get('rt'));
    if (from !== undefined && to !== undefined && from < to) view = { range: 'custom', from, to, eventType: et };
  }
  let query: TrendQuery | null = null;
  const tr = u.get('tr') as TrendRangeKey | null;
  if (tr && (tr === 'custom' || TREND_RANGES.some((x) => x.key === tr))) {
    const q: TrendQuery = { ...DEFAULT_QUERY, range: tr, events: [], filters: [] };
    if (tr === 'custom') {
      q.from = num(u.get('tf'));
      q.to = num(u.get('tt'));
      if (q.from === undefined || q.to === undefined || q.from >= q.to) q.range = DEFAULT_QUERY.range;
    }
    const m = u.get('m');
    if (MEASURES.some((x) => x.key === m)) q.measure = m as TrendQuery['measure'];
    const g = u.get('g');
    if (GRANULARITIES.includes(g as TrendQuery['granularity'])) q.granularity = g as TrendQuery['granularity'];
    q.events = u.getAll('ev').filter(Boolean);
    q.filters = u
      .getAll('f')
      .map(parseFilter)
      .filter((f): f is FilterRow => f !== null);
    q.breakdown = u.get('bd') ?? '';
    const bl = num(u.get('bl'));
    if (bl !== undefined && bl >= 1 && bl <= 100) q.breakdownLimit = Math.floor(bl);
    q.compare = u.get('cmp') === '1';
    query = q;
  }
  const page: PageFilter = { events: u.getAll('pe').filter(Boolean), filters: u.getAll('pf').filter(Boolean) };
  if (u.get('pc') === '1') page.compare = true;
  if (u.get('pb')) page.breakdown = u.get('pb') ?? undefined;
  return {
    dashboard: u.get('d') || null,
    view,
    query,
    tz: u.get('tz') || null,
    page: page.events.length || page.filters.length || page.compare || page.breakdown ? page : null,
  };
}
