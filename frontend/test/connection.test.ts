import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  backoffDelay,
  Connection,
  DEFAULT_BACKOFF,
  RATE_LIMIT_MIN_DELAY_MS,
  type ConnStatus,
  type PreflightResult,
  type SocketLike,
} from '../src/lib/connection';
import type { ViewSpec } from '../src/lib/range';
import type { AlertMessage, ServerMessage } from '../src/lib/types';
import { alertMessage } from './fixtures';

/** A socket the test drives: open(), message(), serverClose(). */
class FakeSocket implements SocketLike {
  sent: unknown[] = [];
  closedByClient: { code?: number; reason?: string } | null = null;
  onopen: ((ev: any) => void) | null = null;
  onmessage: ((ev: any) => void) | null = null;
  onclose: ((ev: any) => void) | null = null;
  onerror: ((ev: any) => void) | null = null;
  constructor(readonly url: string) {}
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close(code?: number, reason?: string) {
    this.closedByClient = { code, reason };
  }
  open() {
    this.onopen?.({});
  }
  message(msg: ServerMessage | string) {
    this.onmessage?.({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) });
  }
  hello() {
    this.message({ type: 'hello', org_id: 'o', server_time: new Date().toISOString(), push_interval_ms: 1000 });
  }
  serverClose(code = 1006, reason = '') {
    this.onerror?.({});
    this.onclose?.({ code, reason });
  }
  subscribes() {
    return this.sent.filter((m: any) => m.type === 'subscribe') as any[];
  }
}

interface Harness {
  conn: Connection;
  sockets: FakeSocket[];
  statuses: ConnStatus[];
  messages: ServerMessage[];
  subscribeSpy: ReturnType<typeof vi.fn>;
  preflight: ReturnType<typeof vi.fn>;
  last: () => FakeSocket;
}

function harness(opts: { random?: () => number; preflight?: () => Promise<PreflightResult>; pingIntervalMs?: number } = {}): Harness {
  const sockets: FakeSocket[] = [];
  const statuses: ConnStatus[] = [];
  const messages: ServerMessage[] = [];
  const subscribeSpy = vi.fn();
  const preflight = vi.fn(opts.preflight ?? (async (): Promise<PreflightResult> => ({ kind: 'ok' })));
  const conn = new Connection({
    url: () => 'ws://gw/ws/dashboard?token=t&org=o',
    createSocket: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    preflight,
    onMessage: (m) => messages.push(m),
    onStatus: (s) => statuses.push(s),
    onSubscribe: subscribeSpy,
    random: opts.random ?? (() => 0.5),
    pingIntervalMs: opts.pingIntervalMs ?? 0,
    pongTimeoutMs: 5_000,
  });
  return { conn, sockets, statuses, messages, subscribeSpy, preflight, last: () => sockets[sockets.length - 1] };
}

/** Lets the preflight promise settle. */
const settle = () => vi.advanceTimersByTimeAsync(0);

const VIEW_24H: ViewSpec = { range: '24h', eventType: null };
const VIEW_7D: ViewSpec = { range: '7d', eventType: 'click' };

beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(new Date('2026-11-27T10:15:00.000Z'));
});

afterEach(() => {
  vi.useRealTimers();
});

describe('backoffDelay', () => {
  it('stays within [ceiling/2, ceiling] and never above maxMs, for any random value', () => {
    for (let attempt = 0; attempt < 40; attempt++) {
      const ceiling = Math.min(DEFAULT_BACKOFF.maxMs, DEFAULT_BACKOFF.initialMs * 2 ** attempt);
      for (const r of [0, 0.25, 0.5, 0.999999, 1, -1, 2]) {
        const d = backoffDelay(attempt, DEFAULT_BACKOFF, () => r);
        expect(d).toBeGreaterThanOrEqual(Math.floor(ceiling / 2));
        expect(d).toBeLessThanOrEqual(ceiling);
        expect(d).toBeLessThanOrEqual(DEFAULT_BACKOFF.maxMs);
      }
    }
  });

  it('grows exponentially until the ceiling', () => {
    const mid = (a: number) => backoffDelay(a, DEFAULT_BACKOFF, () => 1);
    expect([0, 1, 2, 3, 4, 5, 6, 7, 8].map(mid)).toEqual([500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  });

  it('spreads clients out (jitter)', () => {
    let x = 0.1;
    const values = new Set(Array.from({ length: 20 }, () => backoffDelay(5, DEFAULT_BACKOFF, () => (x = (x * 7.13) % 1))));
    expect(values.size).toBeGreaterThan(10);
  });
});

describe('Connection', () => {
  it('checks the token, opens the socket and subscribes to the current view', async () => {
    const h = harness();
    h.conn.subscribe(VIEW_24H);
    h.conn.start();
    expect(h.conn.status.state).toBe('checking');
    await settle();
    expect(h.preflight).toHaveBeenCalledTimes(1);
    expect(h.sockets).toHaveLength(1);
    expect(h.last().url).toBe('ws://gw/ws/dashboard?token=t&org=o');
    expect(h.conn.status.state).toBe('connecting');
    h.last().open();
    expect(h.conn.status.state).toBe('open');
    expect(h.last().subscribes()).toEqual([
      { type: 'subscribe', from: '2026-11-26T10:00:00.000Z', to: null, granularity: 'hour', event_type: null, events: 10 },
    ]);
    expect(h.subscribeSpy).toHaveBeenCalledTimes(1);
    h.last().hello();
    expect(h.messages[0].type).toBe('hello');
  });

  it('sends a subscribe when the view changes while open', async () => {
    const h = harness();
    h.conn.subscribe(VIEW_24H);
    h.conn.start();
    await settle();
    h.last().open();
    h.conn.subscribe(VIEW_7D);
    const subs = h.last().subscribes();
    expect(subs).toHaveLength(2);
    expect(subs[1]).toMatchObject({ granularity: 'day', to: null, event_type: 'click', from: '2026-11-20T00:00:00.000Z' });
  });

  it('does not send before the socket is open; the subscribe goes out on open', async () => {
    const h = harness();
    h.conn.start();
    await settle();
    h.conn.subscribe(VIEW_24H);
    expect(h.last().sent).toEqual([]);
    h.last().open();
    expect(h.last().subscribes()).toHaveLength(1);
  });

  it('reconnects with growing, jittered, bounded delays', async () => {
    const h = harness({ random: () => 1 });
    h.conn.start();
    await settle();
    const expected = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000];
    for (const delay of expected) {
      const n = h.sockets.length;
      h.last().serverClose(1006);
      const st = h.conn.status as Extract<ConnStatus, { state: 'waiting' }>;
      expect(st.state).toBe('waiting');
      expect(st.retryAt - Date.now()).toBe(delay);
      await vi.advanceTimersByTimeAsync(delay - 1);
      expect(h.sockets).toHaveLength(n);
      await vi.advanceTimersByTimeAsync(1);
      expect(h.sockets).toHaveLength(n + 1);
    }
  });

  it('keeps every delay within the jitter bounds', async () => {
    let x = 0.37;
    const h = harness({ random: () => (x = (x * 9.77) % 1) });
    h.conn.start();
    await settle();
    for (let attempt = 0; attempt < 12; attempt++) {
      h.last().serverClose(1006);
      const st = h.conn.status as Extract<ConnStatus, { state: 'waiting' }>;
      const ceiling = Math.min(30_000, 500 * 2 ** attempt);
      const delay = st.retryAt - Date.now();
      expect(delay).toBeGreaterThanOrEqual(ceiling / 2);
      expect(delay).toBeLessThanOrEqual(ceiling);
      await vi.advanceTimersByTimeAsync(delay);
    }
  });

  it('starts the backoff over after a successful connection', async () => {
    const h = harness({ random: () => 1 });
    h.conn.start();
    await settle();
    for (let i = 0; i < 4; i++) {
      h.last().serverClose();
      await vi.advanceTimersByTimeAsync(30_000);
    }
    expect(h.conn.failedAttempts).toBe(4);
    h.last().open();
    h.last().hello();
    expect(h.conn.failedAttempts).toBe(0);
    h.last().serverClose(1001);
    const st = h.conn.status as Extract<ConnStatus, { state: 'waiting' }>;
    expect(st.retryAt - Date.now()).toBe(500);
    expect(st.reason).toBe('server shutting down (1001)');
  });

  it('an open socket without hello does not count as success', async () => {
    const h = harness({ random: () => 1 });
    h.conn.start();
    await settle();
    h.last().serverClose();
    await vi.advanceTimersByTimeAsync(500);
    h.last().open();
    h.last().serverClose();
    expect((h.conn.status as any).retryAt - Date.now()).toBe(1000);
  });

  it('resubscribes to the current view after a reconnect', async () => {
    const h = harness({ random: () => 0 });
    h.conn.subscribe(VIEW_24H);
    h.conn.start();
    await settle();
    h.last().open();
    h.last().hello();
    h.conn.subscribe(VIEW_7D);
    const first = h.last();
    first.serverClose(1006);
    await vi.advanceTimersByTimeAsync(250);
    expect(h.sockets).toHaveLength(2);
    expect(h.preflight).toHaveBeenCalledTimes(2);
    const second = h.last();
    expect(second.sent).toEqual([]);
    second.open();
    expect(second.subscribes()).toEqual([
      { type: 'subscribe', from: '2026-11-20T00:00:00.000Z', to: null, granularity: 'day', event_type: 'click', events: 10 },
    ]);
    expect(h.subscribeSpy).toHaveBeenCalledTimes(3);
  });

  it('recomputes a live view\'s window when it resubscribes later', async () => {
    const h = harness({ random: () => 1 });
    h.conn.subscribe(VIEW_24H);
    h.conn.start();
    await settle();
    h.last().open();
    h.last().serverClose();
    await vi.advanceTimersByTimeAsync(2 * 3_600_000); // two hours offline (retries fail silently)
    h.last().open();
    expect(h.last().subscribes()[0].from).toBe('2026-11-26T12:00:00.000Z');
  });

  it('ignores events of a socket it already gave up', async () => {
    const h = harness();
    h.conn.start();
    await settle();
    const old = h.last();
    const onmessage = old.onmessage!;
    old.serverClose();
    expect(old.onmessage).toBeNull();
    onmessage({ data: JSON.stringify({ type: 'pong' }) });
    expect(h.messages).toEqual([]);
  });

  it('stops for good when the token is rejected (no reconnect loop)', async () => {
    const h = harness({ preflight: async () => ({ kind: 'rejected', status: 401, message: 'bad token' }) });
    h.conn.start();
    await settle();
    expect(h.conn.status).toEqual({ state: 'rejected', status: 401, message: 'bad token' });
    expect(h.sockets).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(h.preflight).toHaveBeenCalledTimes(1);
  });

  it('detects a token revoked while connected at the next reconnect', async () => {
    let result: PreflightResult = { kind: 'ok' };
    const h = harness({ preflight: async () => result });
    h.conn.start();
    await settle();
    h.last().open();
    result = { kind: 'rejected', status: 403, message: 'other org' };
    h.last().serverClose();
    await vi.advanceTimersByTimeAsync(1000);
    expect(h.conn.status.state).toBe('rejected');
    expect(h.sockets).toHaveLength(1);
  });

  it('retries when the gateway is unreachable', async () => {
    let calls = 0;
    const h = harness({
      random: () => 1,
      preflight: async () => (++calls < 3 ? { kind: 'unreachable', message: 'gateway unreachable' } : { kind: 'ok' }),
    });
    h.conn.start();
    await settle();
    expect(h.conn.status).toMatchObject({ state: 'waiting', reason: 'gateway unreachable' });
    await vi.advanceTimersByTimeAsync(500);
    await vi.advanceTimersByTimeAsync(1000);
    expect(calls).toBe(3);
    expect(h.sockets).toHaveLength(1);
  });

  it('a preflight that throws counts as unreachable', async () => {
    const h = harness({ preflight: async () => Promise.reject(new Error('boom')) });
    h.conn.start();
    await settle();
    expect(h.conn.status).toMatchObject({ state: 'waiting', reason: 'boom' });
  });

  it('waits at least 5 s after a rate-limit close (1008)', async () => {
    const h = harness({ random: () => 0 });
    h.conn.start();
    await settle();
    h.last().open();
    h.last().hello();
    h.last().serverClose(1008, 'rate limited');
    expect((h.conn.status as any).retryAt - Date.now()).toBe(RATE_LIMIT_MIN_DELAY_MS);
  });

  it('retryNow skips the wait', async () => {
    const h = harness({ random: () => 1 });
    h.conn.start();
    await settle();
    for (let i = 0; i < 5; i++) {
      h.last().serverClose();
      await vi.advanceTimersByTimeAsync(30_000);
    }
    h.last().serverClose();
    expect(h.conn.status.state).toBe('waiting');
    h.conn.retryNow();
    await settle();
    expect(h.sockets).toHaveLength(7);
  });

  it('stop() closes the socket and never reconnects', async () => {
    const h = harness();
    h.conn.start();
    await settle();
    const s = h.last();
    s.open();
    h.conn.stop();
    expect(s.closedByClient).toEqual({ code: 1000, reason: 'bye' });
    expect(h.conn.status.state).toBe('stopped');
    await vi.advanceTimersByTimeAsync(120_000);
    expect(h.sockets).toHaveLength(1);
  });

  it('stop() during the token check opens nothing', async () => {
    const h = harness();
    h.conn.start();
    h.conn.stop();
    await settle();
    expect(h.sockets).toHaveLength(0);
  });

  it('pings a quiet line and reconnects when nothing answers', async () => {
    const h = harness({ random: () => 1, pingIntervalMs: 20_000 });
    h.conn.start();
    await settle();
    const s = h.last();
    s.open();
    s.hello();
    await vi.advanceTimersByTimeAsync(19_999);
    expect(s.sent).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(s.sent).toEqual([{ type: 'ping' }]);
    s.message({ type: 'pong' });
    await vi.advanceTimersByTimeAsync(20_000);
    expect(s.sent).toEqual([{ type: 'ping' }, { type: 'ping' }]);
    await vi.advanceTimersByTimeAsync(5_000); // no pong
    expect(s.closedByClient?.code).toBe(4000);
    expect(h.conn.status).toMatchObject({ state: 'waiting', reason: 'no answer to ping' });
    await vi.advanceTimersByTimeAsync(500);
    expect(h.sockets).toHaveLength(2);
  });

  it('ignores frames that are not JSON messages', async () => {
    const h = harness();
    h.conn.start();
    await settle();
    h.last().open();
    h.last().message('not json');
    h.last().message('{"no":"type"}');
    h.last().onmessage?.({ data: new ArrayBuffer(2) });
    expect(h.messages).toEqual([]);
  });

  it('gives alert messages to onAlert as well as onMessage, and only well-formed ones', async () => {
    const sockets: FakeSocket[] = [];
    const messages: ServerMessage[] = [];
    const alerts: AlertMessage[] = [];
    const conn = new Connection({
      url: () => 'ws://gw/ws/dashboard?token=t&org=o',
      createSocket: (url) => {
        const s = new FakeSocket(url);
        sockets.push(s);
        return s;
      },
      onMessage: (m) => messages.push(m),
      onAlert: (m) => alerts.push(m),
    });
    conn.start();
    await settle();
    sockets[0].open();
    sockets[0].hello();
    const firing = alertMessage();
    sockets[0].message(firing);
    sockets[0].message(JSON.stringify({ type: 'alert', status: 'firing' }));
    expect(messages.map((m) => m.type)).toEqual(['hello', 'alert', 'alert']);
    expect(alerts).toEqual([firing]);
    conn.stop();
  });

  it('retries when the socket cannot even be created', async () => {
    const h = harness();
    const conn = new Connection({
      url: () => 'bad',
      createSocket: () => {
        throw new Error('SyntaxError: bad url');
      },
      onMessage: () => {},
    });
    conn.start();
    await settle();
    expect(conn.status).toMatchObject({ state: 'waiting', reason: 'SyntaxError: bad url' });
    conn.stop();
    h.conn.stop();
  });
});

describe('trends on the socket', () => {
  it('sends trend/untrend while open and every kept trend again after a reconnect, params recomputed', async () => {
    const h = harness();
    let calls = 0;
    h.conn.trend('panel-1', () => ({ from: Date.now() - 3_600_000, n: ++calls }));
    h.conn.start();
    await settle();
    h.last().open();
    expect(h.last().sent).toContainEqual({ type: 'trend', id: 'panel-1', params: { from: Date.now() - 3_600_000, n: 1 }, deltas: true });
    h.conn.trend('realtime-2', () => ({ from: 1, granularity: 'minute' }));
    expect(h.last().sent.at(-1)).toEqual({ type: 'trend', id: 'realtime-2', params: { from: 1, granularity: 'minute' }, deltas: true });
    h.conn.untrend('realtime-2');
    expect(h.last().sent.at(-1)).toEqual({ type: 'untrend', id: 'realtime-2' });
    h.conn.untrend('unknown');
    expect(h.last().sent.at(-1)).toEqual({ type: 'untrend', id: 'realtime-2' });
    h.last().serverClose();
    await vi.advanceTimersByTimeAsync(60_000);
    h.last().open();
    const trends = h.last().sent.filter((m: any) => m.type === 'trend') as any[];
    expect(trends).toEqual([{ type: 'trend', id: 'panel-1', params: { from: Date.now() - 3_600_000, n: 2 }, deltas: true }]);
    expect(h.conn.trendIds).toEqual(['panel-1']);
    h.conn.stop();
  });
});
