import { describe, expect, it } from 'vitest';
import {
  addWidget,
  stepWidget,
  compact,
  dropOn,
  defaultWidgets,
  moveWidget,
  nextWidgetId,
  removeWidget,
  resizeWidget,
  sanitize,
  sortWidgets,
  updateWidget,
  validate,
} from '../src/lib/layout';
import type { Widget } from '../src/lib/types';

describe('layout', () => {
  it('has a valid default layout with every widget kind', () => {
    const ws = defaultWidgets();
    expect(validate('Overview', ws)).toEqual([]);
    expect(new Set(ws.map((w) => w.kind))).toEqual(new Set(['stat', 'line', 'bar', 'recent']));
  });

  it('adds widgets below the others with fresh ids', () => {
    const ws = addWidget(defaultWidgets(), 'stat', 'unique_users_range');
    const added = ws[ws.length - 1];
    expect(added).toMatchObject({ id: 'w8', kind: 'stat', metric: 'unique_users_range', x: 0, y: 13, w: 3, h: 2 });
    expect(addWidget([], 'line')[0]).toEqual({ id: 'w1', kind: 'line', x: 0, y: 0, w: 8, h: 5 });
    expect(nextWidgetId([{ id: 'custom', kind: 'bar', x: 0, y: 0, w: 1, h: 1 }])).toBe('w1');
  });

  it('keeps moves and resizes inside the 12 columns', () => {
    let ws: Widget[] = [{ id: 'a', kind: 'bar', x: 8, y: 0, w: 4, h: 5 }];
    ws = moveWidget(ws, 'a', 1, -1);
    expect(ws[0]).toMatchObject({ x: 8, y: 0 });
    ws = moveWidget(ws, 'a', -3, 2);
    expect(ws[0]).toMatchObject({ x: 5, y: 2 });
    ws = resizeWidget(ws, 'a', 10, 0);
    expect(ws[0]).toMatchObject({ x: 5, w: 7 });
    ws = resizeWidget(ws, 'a', -20, -20);
    expect(ws[0]).toMatchObject({ w: 1, h: 1 });
    expect(validate('x', ws)).toEqual([]);
  });

  it('removes, retitles and sorts in reading order', () => {
    let ws = removeWidget(defaultWidgets(), 'w1');
    expect(ws.map((w) => w.id)).not.toContain('w1');
    ws = updateWidget(ws, 'w2', { title: 'Hot users' });
    expect(ws.find((w) => w.id === 'w2')?.title).toBe('Hot users');
    ws = updateWidget(ws, 'w2', { title: '  ' });
    expect(ws.find((w) => w.id === 'w2')).not.toHaveProperty('title');
    const shuffled = [...defaultWidgets()].reverse();
    expect(sortWidgets(shuffled).map((w) => w.id)).toEqual(['w1', 'w2', 'w3', 'w4', 'w5', 'w6', 'w7']);
  });

  it('validates by the API rules', () => {
    const bad: Widget[] = [
      { id: 'a', kind: 'stat', x: 10, y: 0, w: 3, h: 0 },
      { id: 'a', kind: 'line', metric: 'events_5m', x: 0, y: 0, w: 1, h: 1 },
    ];
    const errors = validate('', bad);
    expect(errors).toEqual(
      expect.arrayContaining([
        'The name must not be empty.',
        'Widget id a is used twice.',
        'Widget a: width and height must be at least 1.',
        'Widget a: x + w must be at most 12.',
        'Widget a: a stat card needs a metric.',
        'Widget a: only stat cards have a metric.',
      ]),
    );
    expect(validate('x'.repeat(101), [])).toEqual(['The name must be at most 100 characters.']);
    expect(validate('x'.repeat(100), [])).toEqual([]);
    const many = Array.from({ length: 51 }, (_, i): Widget => ({ id: `w${i}`, kind: 'recent', x: 0, y: i, w: 12, h: 1 }));
    expect(validate('x', many)).toEqual(['At most 50 widgets.']);
    expect(addWidget(many.slice(0, 50), 'bar')).toHaveLength(50);
  });

  it('sanitizes widgets read from the server', () => {
    expect(sanitize(null)).toEqual([]);
    expect(
      sanitize([
        { id: 'a', kind: 'stat', x: 11, y: -2, w: 4, h: 99 },
        { id: 'b', kind: 'pie', x: 0, y: 0, w: 1, h: 1 },
        { kind: 'line', title: 'Traffic' },
        'junk',
      ]),
    ).toEqual([
      { id: 'a', kind: 'stat', metric: 'events_5m', x: 8, y: 0, w: 4, h: 12 },
      { id: 'w1', kind: 'line', title: 'Traffic', x: 0, y: 0, w: 8, h: 5 },
    ]);
  });
});

describe('drag and drop', () => {
  const at = (id: string, x: number, y: number, w: number, h: number): Widget => ({ id, kind: 'bar', x, y, w, h });
  const holes = (ws: Widget[]) => ws.filter((w) => w.y > 0 && compact(ws).find((c) => c.id === w.id)!.y < w.y).map((w) => w.id);
  const overlaps = (ws: Widget[]) =>
    ws.some((a, i) => ws.some((b, j) => i < j && a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h));

  it('compacts: every widget as high as it goes, none over another', () => {
    const ws = [at('a', 0, 3, 6, 2), at('b', 6, 0, 6, 2), at('c', 0, 9, 12, 1)];
    expect(sortWidgets(compact(ws)).map((w) => [w.id, w.x, w.y])).toEqual([
      ['a', 0, 0],
      ['b', 6, 0],
      ['c', 0, 2],
    ]);
  });

  it('a widget dropped on another takes its place; the rest make room and close up', () => {
    const ws = defaultWidgets();
    // The recent list (w7, full width, bottom) onto the first card.
    const out = dropOn(ws, 'w7', 'w1');
    const w7 = out.find((w) => w.id === 'w7')!;
    expect([w7.x, w7.y]).toEqual([0, 0]);
    expect(out.find((w) => w.id === 'w1')!.y).toBe(w7.h);
    expect(overlaps(out)).toBe(false);
    expect(holes(out)).toEqual([]);
    expect(out).toHaveLength(ws.length);
    // A wide widget dropped on a narrow one at the right edge stays inside the grid.
    const right = dropOn(ws, 'w5', 'w4');
    const w5 = right.find((w) => w.id === 'w5')!;
    expect(w5.x + w5.w).toBeLessThanOrEqual(12);
    expect(overlaps(right)).toBe(false);
    expect(dropOn(ws, 'w1', 'w1')).toBe(ws);
  });

  it('random layouts and drops never overlap and leave no holes', () => {
    let seed = 7;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    for (let round = 0; round < 200; round++) {
      const ws: Widget[] = [];
      for (let i = 0; i < 2 + rnd(8); i++) {
        const w = 1 + rnd(12);
        ws.push(at(`w${i}`, rnd(13 - w), rnd(20), w, 1 + rnd(5)));
      }
      const c = compact(ws);
      expect(overlaps(c)).toBe(false);
      const d = dropOn(c, `w${rnd(ws.length)}`, `w${rnd(ws.length)}`);
      expect(overlaps(d)).toBe(false);
      expect(holes(d)).toEqual([]);
    }
  });
});

describe('moving with the buttons (the keyboard drag)', () => {
  it('changes places with the neighbour in reading order, and leaves no gap', () => {
    const ws = defaultWidgets();
    const down = stepWidget(ws, 'w1', 1);
    expect(sortWidgets(down).map((w) => w.id)).toEqual(['w2', 'w1', 'w3', 'w4', 'w5', 'w6', 'w7']);
    expect(down.find((w) => w.id === 'w1')).toMatchObject({ x: 3, y: 0 });
    expect(stepWidget(down, 'w1', -1)).toEqual(compact(ws));
    // The line chart (8 wide) and the bar chart (4 wide) beside it: they change sides.
    const swapped = stepWidget(ws, 'w6', -1);
    expect(swapped.find((w) => w.id === 'w6')).toMatchObject({ x: 0, y: 2 });
    expect(swapped.find((w) => w.id === 'w5')).toMatchObject({ x: 4, y: 2 });
    // First and last stay.
    expect(stepWidget(ws, 'w1', -1)).toBe(ws);
    expect(stepWidget(ws, 'w7', 1)).toBe(ws);
  });
});
