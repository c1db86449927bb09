import { describe, expect, it } from 'vitest';
import {
  customRangeError,
  DAY_MS,
  fromLocalInput,
  granularityFor,
  HOUR_MS,
  liveWindow,
  specGranularity,
  subscribeCommand,
  toLocalInput,
} from '../src/lib/range';

const NOW = Date.parse('2026-11-27T10:15:30.000Z');

describe('ranges', () => {
  it('uses hours up to 48 h and days beyond', () => {
    expect(granularityFor(HOUR_MS)).toBe('hour');
    expect(granularityFor(48 * HOUR_MS)).toBe('hour');
    expect(granularityFor(48 * HOUR_MS + 1)).toBe('day');
    expect(specGranularity({ range: '24h', eventType: null })).toBe('hour');
    expect(specGranularity({ range: '7d', eventType: null })).toBe('day');
    expect(specGranularity({ range: 'custom', from: 0, to: 3 * DAY_MS, eventType: null })).toBe('day');
  });

  it('aligns live presets to whole buckets ending with the current one', () => {
    expect(new Date(liveWindow('1h', NOW).from).toISOString()).toBe('2026-11-27T09:00:00.000Z');
    expect(new Date(liveWindow('24h', NOW).from).toISOString()).toBe('2026-11-26T10:00:00.000Z');
    expect(new Date(liveWindow('7d', NOW).from).toISOString()).toBe('2026-11-20T00:00:00.000Z');
    expect(new Date(liveWindow('30d', NOW).from).toISOString()).toBe('2026-10-28T00:00:00.000Z');
    // On a bucket boundary the window is exactly the duration plus the bucket just begun.
    expect(new Date(liveWindow('24h', Date.parse('2026-11-27T10:00:00Z')).from).toISOString()).toBe('2026-11-26T10:00:00.000Z');
  });

  it('builds subscribe commands', () => {
    expect(subscribeCommand({ range: '24h', eventType: '  click ' }, NOW)).toEqual({
      type: 'subscribe',
      from: '2026-11-26T10:00:00.000Z',
      to: null,
      granularity: 'hour',
      event_type: 'click',
      events: 10,
    });
    const from = Date.parse('2026-11-01T00:00:00Z');
    expect(subscribeCommand({ range: 'custom', from, to: from + 10 * DAY_MS, eventType: '' }, NOW)).toEqual({
      type: 'subscribe',
      from: '2026-11-01T00:00:00.000Z',
      to: '2026-11-11T00:00:00.000Z',
      granularity: 'day',
      event_type: null,
      events: 10,
    });
  });

  it('reads and writes datetime-local values and validates custom ranges', () => {
    const ms = new Date(2026, 10, 27, 9, 5).getTime();
    expect(toLocalInput(ms)).toBe('2026-11-27T09:05');
    expect(fromLocalInput('2026-11-27T09:05')).toBe(ms);
    expect(fromLocalInput('')).toBeNull();
    expect(fromLocalInput('yesterday')).toBeNull();
    expect(customRangeError(null, 1)).toMatch(/both/);
    expect(customRangeError(2, 1)).toMatch(/before/);
    expect(customRangeError(1, 2)).toBeNull();
  });
});
