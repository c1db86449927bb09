import { describe, expect, it } from 'vitest';
import {
  addWidget,
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
