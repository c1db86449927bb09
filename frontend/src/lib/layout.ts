// Widget layouts of saved dashboards: a 12-column grid (docs/API.md, Widget). Pure functions
// used by the layout editor; validate() mirrors the API's rules so the page can say what is
// wrong before the server does.

import type { StatMetric, Widget, WidgetKind, WidgetTrend } from './types';

export const GRID_COLUMNS = 12;
export const MAX_WIDGETS = 50;
export const MAX_HEIGHT = 12;
export const NAME_MAX_CHARS = 100;

export const WIDGET_KINDS: { kind: WidgetKind; label: string }[] = [
  { kind: 'stat', label: 'Stat card' },
  { kind: 'line', label: 'Events over time (line chart)' },
  { kind: 'bar', label: 'Top events (bar chart)' },
  { kind: 'recent', label: 'Recent events' },
];

export const STAT_METRICS: StatMetric[] = [
  'events_5m',
  'active_users_5m',
  'events_today',
  'unique_users_today',
  'unique_users_range',
];

const DEFAULT_SIZE: Record<WidgetKind, { w: number; h: number }> = {
  stat: { w: 3, h: 2 },
  line: { w: 8, h: 5 },
  bar: { w: 4, h: 5 },
  recent: { w: 12, h: 6 },
  trend: { w: 6, h: 5 },
};

/** The built-in "Overview" layout, also the start of a new dashboard. */
export function defaultWidgets(): Widget[] {
  return [
    { id: 'w1', kind: 'stat', metric: 'events_5m', x: 0, y: 0, w: 3, h: 2 },
    { id: 'w2', kind: 'stat', metric: 'active_users_5m', x: 3, y: 0, w: 3, h: 2 },
    { id: 'w3', kind: 'stat', metric: 'events_today', x: 6, y: 0, w: 3, h: 2 },
    { id: 'w4', kind: 'stat', metric: 'unique_users_today', x: 9, y: 0, w: 3, h: 2 },
    { id: 'w5', kind: 'line', x: 0, y: 2, w: 8, h: 5 },
    { id: 'w6', kind: 'bar', x: 8, y: 2, w: 4, h: 5 },
    { id: 'w7', kind: 'recent', x: 0, y: 7, w: 12, h: 6 },
  ];
}

/** Reading order: top to bottom, then left to right (also the DOM and tab order). */
export function sortWidgets(ws: Widget[]): Widget[] {
  return [...ws].sort((a, b) => a.y - b.y || a.x - b.x || (a.id < b.id ? -1 : 1));
}

export function nextWidgetId(ws: Widget[]): string {
  let max = 0;
  for (const w of ws) {
    const m = /^w(\d+)$/.exec(w.id);
    if (m) max = Math.max(max, Number(m[1]));
  }
  let n = max + 1;
  while (ws.some((w) => w.id === `w${n}`)) n++;
  return `w${n}`;
}

function clamp(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, v));
}

/** The first row below every widget. */
export function bottom(ws: Widget[]): number {
  return ws.reduce((m, w) => Math.max(m, w.y + w.h), 0);
}

function overlap(a: Widget, b: Widget): boolean {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

/**
 * Every widget moved up as far as it goes, in reading order, none over another: a layout with
 * no holes (what a drop and a removal leave).
 */
export function compact(ws: Widget[]): Widget[] {
  const placed: Widget[] = [];
  for (const w of sortWidgets(ws)) {
    let y = 0;
    while (placed.some((p) => overlap(p, { ...w, y }))) y++;
    placed.push({ ...w, y });
  }
  return placed;
}

/**
 * Widget `dragId` dropped on widget `targetId`: it takes the target's place (its column, as far
 * as it fits, and row), the widgets there and below in its columns make room, then the layout is
 * compacted.
 */
export function dropOn(ws: Widget[], dragId: string, targetId: string): Widget[] {
  const a = ws.find((w) => w.id === dragId);
  const b = ws.find((w) => w.id === targetId);
  if (!a || !b || a.id === b.id) return ws;
  const x = Math.min(b.x, GRID_COLUMNS - a.w);
  const inColumns = (w: Widget) => w.x < x + a.w && x < w.x + w.w;
  return compact(
    ws.map((w) => (w.id === a.id ? { ...w, x, y: b.y } : w.y >= b.y && inColumns(w) ? { ...w, y: w.y + a.h } : w)),
  );
}

/**
 * The keyboard's way to drag: widget `id` changes places with its neighbour in reading order
 * (`-1` the one before it, `1` the one after), each moved into the other's column (as far as it
 * fits) and row, then the layout is compacted.
 */
export function stepWidget(ws: Widget[], id: string, dir: -1 | 1): Widget[] {
  const order = sortWidgets(ws);
  const i = order.findIndex((w) => w.id === id);
  const other = order[i + dir];
  if (i < 0 || !other) return ws;
  const me = order[i];
  const place = (w: Widget, at: Widget) => ({ ...w, x: Math.min(at.x, GRID_COLUMNS - w.w), y: at.y });
  return compact(ws.map((w) => (w.id === me.id ? place(w, other) : w.id === other.id ? place(w, me) : w)));
}

/** A trend widget (from the trends panel's question) under the others. */
export function addTrendWidget(ws: Widget[], trend: WidgetTrend, title: string): Widget[] {
  if (ws.length >= MAX_WIDGETS) return ws;
  const size = DEFAULT_SIZE.trend;
  return [...ws, { id: nextWidgetId(ws), kind: 'trend', title: title.slice(0, 200), trend, x: 0, y: bottom(ws), w: size.w, h: size.h }];
}

export function addWidget(ws: Widget[], kind: WidgetKind, metric?: StatMetric): Widget[] {
  if (ws.length >= MAX_WIDGETS) return ws;
  const size = DEFAULT_SIZE[kind];
  const w: Widget = { id: nextWidgetId(ws), kind, x: 0, y: bottom(ws), w: size.w, h: size.h };
  if (kind === 'stat') w.metric = metric ?? 'events_5m';
  return [...ws, w];
}

export function removeWidget(ws: Widget[], id: string): Widget[] {
  return ws.filter((w) => w.id !== id);
}

export function moveWidget(ws: Widget[], id: string, dx: number, dy: number): Widget[] {
  return ws.map((w) =>
    w.id === id ? { ...w, x: clamp(w.x + dx, 0, GRID_COLUMNS - w.w), y: Math.max(0, w.y + dy) } : w,
  );
}

export function resizeWidget(ws: Widget[], id: string, dw: number, dh: number): Widget[] {
  return ws.map((w) =>
    w.id === id ? { ...w, w: clamp(w.w + dw, 1, GRID_COLUMNS - w.x), h: clamp(w.h + dh, 1, MAX_HEIGHT) } : w,
  );
}

export function updateWidget(ws: Widget[], id: string, patch: Partial<Pick<Widget, 'title' | 'metric' | 'trend'>>): Widget[] {
  return ws.map((w) => {
    if (w.id !== id) return w;
    const next = { ...w, ...patch };
    if (next.title !== undefined && next.title.trim() === '') delete next.title;
    return next;
  });
}

/** Problems with a name + layout by the API's rules (empty when it can be saved). */
export function validate(name: string, ws: Widget[]): string[] {
  const errors: string[] = [];
  const chars = [...name.trim()].length;
  if (chars < 1) errors.push('The name must not be empty.');
  if (chars > NAME_MAX_CHARS) errors.push(`The name must be at most ${NAME_MAX_CHARS} characters.`);
  if (ws.length > MAX_WIDGETS) errors.push(`At most ${MAX_WIDGETS} widgets.`);
  const ids = new Set<string>();
  for (const w of ws) {
    if (ids.has(w.id)) errors.push(`Widget id ${w.id} is used twice.`);
    ids.add(w.id);
    if (!WIDGET_KINDS.some((k) => k.kind === w.kind) && w.kind !== 'trend') errors.push(`Widget ${w.id}: unknown kind ${String(w.kind)}.`);
    if ((w.kind === 'trend') !== (w.trend !== undefined)) errors.push(`Widget ${w.id}: only a trend widget has a trend, and it needs one.`);
    if (![w.x, w.y, w.w, w.h].every((v) => Number.isInteger(v))) errors.push(`Widget ${w.id}: position and size must be whole numbers.`);
    if (w.x < 0 || w.y < 0) errors.push(`Widget ${w.id}: x and y must not be negative.`);
    if (w.w < 1 || w.h < 1) errors.push(`Widget ${w.id}: width and height must be at least 1.`);
    if (w.x + w.w > GRID_COLUMNS) errors.push(`Widget ${w.id}: x + w must be at most ${GRID_COLUMNS}.`);
    if (w.kind === 'stat' && (!w.metric || !STAT_METRICS.includes(w.metric))) errors.push(`Widget ${w.id}: a stat card needs a metric.`);
    if (w.kind !== 'stat' && w.metric !== undefined) errors.push(`Widget ${w.id}: only stat cards have a metric.`);
  }
  return errors;
}

/**
 * Widgets from the server, made safe to draw: unknown kinds dropped, sizes clamped to the grid.
 * (The server validates on write; this guards against older or hand-edited rows.)
 */
export function sanitize(ws: unknown): Widget[] {
  if (!Array.isArray(ws)) return [];
  const out: Widget[] = [];
  for (const raw of ws.slice(0, MAX_WIDGETS)) {
    if (!raw || typeof raw !== 'object') continue;
    const r = raw as Partial<Widget>;
    // Trend widgets come from the trends panel ("Add to dashboard"), not the add list.
    const trend = r.kind === 'trend' && r.trend && typeof r.trend === 'object' && !Array.isArray(r.trend) ? r.trend : null;
    if (!WIDGET_KINDS.some((k) => k.kind === r.kind) && !trend) continue;
    const kind = r.kind as WidgetKind;
    const num = (v: unknown, d: number) => (typeof v === 'number' && Number.isFinite(v) ? Math.round(v) : d);
    const w = clamp(num(r.w, DEFAULT_SIZE[kind].w), 1, GRID_COLUMNS);
    const x = clamp(num(r.x, 0), 0, GRID_COLUMNS - w);
    const widget: Widget = {
      id: typeof r.id === 'string' && r.id ? r.id : nextWidgetId(out),
      kind,
      x,
      y: Math.max(0, num(r.y, 0)),
      w,
      h: clamp(num(r.h, DEFAULT_SIZE[kind].h), 1, MAX_HEIGHT),
    };
    if (typeof r.title === 'string' && r.title.trim()) widget.title = r.title;
    if (kind === 'stat') widget.metric = r.metric && STAT_METRICS.includes(r.metric) ? r.metric : 'events_5m';
    if (trend) widget.trend = trend;
    if (out.some((o) => o.id === widget.id)) widget.id = nextWidgetId(out);
    out.push(widget);
  }
  return out;
}
