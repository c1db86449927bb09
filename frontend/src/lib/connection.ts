// The dashboard's WebSocket connection: a token check before each attempt, reconnects with
// exponential backoff and jitter, a resubscribe to the current view after every reconnect, and
// a ping when the line has been quiet. Every message goes to `onMessage`; `alert` messages
// (docs/ALERTS.md) also go to `onAlert`, for the banners. It depends only on the small
// SocketLike interface, so test/connection.test.ts drives it with a fake socket and fake timers.

import { subscribeCommand, type ViewSpec } from './range';
import type { TrendParams } from './trends';
import type { AlertMessage, ServerMessage, SubscribeCommand } from './types';

/**
 * What the connection needs of a WebSocket (the browser's WebSocket fits). Handlers take `any`
 * so that WebSocket's MessageEvent/CloseEvent handlers are assignable; the connection reads
 * only `data` of a message and `code`/`reason` of a close.
 */
export interface SocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
}

export interface MessageLike {
  data: unknown;
}

export interface CloseLike {
  code: number;
  reason: string;
}

export type SocketFactory = (url: string) => SocketLike;

/**
 * The result of checking the token before opening a socket (browsers cannot see the status of a
 * refused WebSocket upgrade, so the page asks a REST route first).
 */
export type PreflightResult =
  | { kind: 'ok' }
  | { kind: 'rejected'; status: number; message: string }
  | { kind: 'unreachable'; message: string };

export type ConnStatus =
  | { state: 'idle' }
  | { state: 'checking'; attempt: number }
  | { state: 'connecting'; attempt: number }
  | { state: 'open'; since: number }
  | { state: 'waiting'; attempt: number; retryAt: number; reason: string }
  | { state: 'rejected'; status: number; message: string }
  | { state: 'stopped' };

export interface BackoffOptions {
  /** Delay ceiling of the first retry, ms. */
  initialMs: number;
  /** Delay ceiling, ms. */
  maxMs: number;
  factor: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 500, maxMs: 30_000, factor: 2 };

/** Close code 1008 (policy: rate limited): wait at least this long before trying again. */
export const RATE_LIMIT_MIN_DELAY_MS = 5_000;

/**
 * Delay before retry number `attempt` (0-based): "equal jitter", a random point in
 * [ceiling/2, ceiling] where ceiling = min(maxMs, initialMs * factor^attempt). Never above
 * maxMs, never below initialMs/2, and clients that lost the server together spread out.
 */
export function backoffDelay(attempt: number, opts: BackoffOptions, random: () => number): number {
  const ceiling = Math.min(opts.maxMs, opts.initialMs * Math.pow(opts.factor, Math.max(0, attempt)));
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.round(ceiling / 2 + (r * ceiling) / 2);
}

export interface ConnectionOptions {
  /** The socket URL, asked for on every attempt. */
  url: () => string;
  createSocket: SocketFactory;
  /** Token check before each attempt; omitted: none. */
  preflight?: () => Promise<PreflightResult>;
  onMessage: (msg: ServerMessage) => void;
  /** `alert` messages (a rule fired or resolved), after `onMessage`. */
  onAlert?: (msg: AlertMessage) => void;
  onStatus?: (status: ConnStatus) => void;
  /** Called with each subscribe command sent (the first one and every resubscribe). */
  onSubscribe?: (cmd: SubscribeCommand) => void;
  backoff?: Partial<BackoffOptions>;
  random?: () => number;
  now?: () => number;
  /** Send a ping after this long without any message; 0 disables. */
  pingIntervalMs?: number;
  /** Give the socket up when nothing answers a ping within this long. */
  pongTimeoutMs?: number;
}

type Timer = ReturnType<typeof setTimeout>;

export class Connection {
  private readonly opts: ConnectionOptions;
  private readonly backoff: BackoffOptions;
  private readonly random: () => number;
  private readonly now: () => number;
  private socket: SocketLike | null = null;
  private socketOpen = false;
  private attempt = 0;
  /** Bumped on every attempt and on stop: callbacks of older sockets and preflights are ignored. */
  private generation = 0;
  private running = false;
  private view: ViewSpec | null = null;
  /** Trends kept current: id -> their params, asked for again (a live range recomputed) on every reconnect. */
  private trends = new Map<string, () => TrendParams>();
  private retryTimer: Timer | null = null;
  private pingTimer: Timer | null = null;
  private pongTimer: Timer | null = null;
  private _status: ConnStatus = { state: 'idle' };

  constructor(opts: ConnectionOptions) {
    this.opts = opts;
    this.backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
    this.random = opts.random ?? Math.random;
    this.now = opts.now ?? Date.now;
  }

  get status(): ConnStatus {
    return this._status;
  }

  /** The number of failed attempts since the last successful connection. */
  get failedAttempts(): number {
    return this.attempt;
  }

  get currentView(): ViewSpec | null {
    return this.view;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.attempt = 0;
    void this.connect();
  }

  stop(): void {
    this.running = false;
    this.generation++;
    this.clearTimers();
    const s = this.socket;
    this.socket = null;
    this.socketOpen = false;
    if (s) {
      detach(s);
      try {
        s.close(1000, 'bye');
      } catch {
        /* already closed */
      }
    }
    this.setStatus({ state: 'stopped' });
  }

  /** Makes `spec` the current view: sent now if the socket is open, and after every reconnect. */
  subscribe(spec: ViewSpec): void {
    this.view = spec;
    if (this.socket && this.socketOpen) this.sendSubscribe();
  }

  /**
   * Keeps the trend `id` current (a `trend` command now if open, and after every reconnect;
   * `params` is called each time, so a live range starts from the time of sending).
   */
  trend(id: string, params: () => TrendParams): void {
    this.trends.set(id, params);
    if (this.socket && this.socketOpen) this.sendTrend(id);
  }

  /** Stops the trend `id` (an `untrend` command if open). */
  untrend(id: string): void {
    if (!this.trends.delete(id)) return;
    if (this.socket && this.socketOpen) this.send({ type: 'untrend', id });
  }

  get trendIds(): string[] {
    return [...this.trends.keys()];
  }

  private send(cmd: unknown): void {
    try {
      this.socket?.send(JSON.stringify(cmd));
    } catch {
      /* the close event follows */
    }
  }

  private sendTrend(id: string): void {
    const params = this.trends.get(id);
    // deltas: updates carry each series' values from the first changed bucket.
    if (params) this.send({ type: 'trend', id, params: params(), deltas: true });
  }

  /** Skips the remaining wait of a scheduled retry (e.g. the browser came back online). */
  retryNow(): void {
    if (!this.running || this._status.state !== 'waiting') return;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    void this.connect();
  }

  private setStatus(s: ConnStatus): void {
    this._status = s;
    this.opts.onStatus?.(s);
  }

  private clearTimers(): void {
    for (const t of [this.retryTimer, this.pingTimer, this.pongTimer]) if (t) clearTimeout(t);
    this.retryTimer = this.pingTimer = this.pongTimer = null;
  }

  private async connect(): Promise<void> {
    const gen = ++this.generation;
    this.clearTimers();
    if (this.opts.preflight) {
      this.setStatus({ state: 'checking', attempt: this.attempt });
      let result: PreflightResult;
      try {
        result = await this.opts.preflight();
      } catch (e) {
        result = { kind: 'unreachable', message: e instanceof Error ? e.message : String(e) };
      }
      if (gen !== this.generation || !this.running) return;
      if (result.kind === 'rejected') {
        this.running = false;
        this.setStatus({ state: 'rejected', status: result.status, message: result.message });
        return;
      }
      if (result.kind === 'unreachable') {
        this.scheduleRetry(result.message);
        return;
      }
    }
    this.openSocket(gen);
  }

  private openSocket(gen: number): void {
    this.setStatus({ state: 'connecting', attempt: this.attempt });
    let s: SocketLike;
    try {
      s = this.opts.createSocket(this.opts.url());
    } catch (e) {
      this.scheduleRetry(e instanceof Error ? e.message : 'cannot open the socket');
      return;
    }
    this.socket = s;
    this.socketOpen = false;
    s.onopen = () => {
      if (gen !== this.generation) return;
      this.socketOpen = true;
      this.setStatus({ state: 'open', since: this.now() });
      this.armPing();
      if (this.view) this.sendSubscribe();
      for (const id of this.trends.keys()) this.sendTrend(id);
    };
    s.onmessage = (ev: MessageLike) => {
      if (gen !== this.generation) return;
      this.armPing();
      const msg = parseMessage(ev.data);
      if (!msg) return;
      // The server greets every accepted connection: from here on the connection counts as
      // successful and the backoff starts over.
      if (msg.type === 'hello') this.attempt = 0;
      this.opts.onMessage(msg);
      if (msg.type === 'alert' && isAlertMessage(msg)) this.opts.onAlert?.(msg);
    };
    s.onerror = () => {
      /* a close event follows */
    };
    s.onclose = (ev: CloseLike) => {
      if (gen !== this.generation) return;
      this.dropSocket(closeReason(ev.code, ev.reason), ev.code);
    };
  }

  /** Forgets the current socket and schedules the next attempt. */
  private dropSocket(reason: string, code?: number): void {
    const s = this.socket;
    this.socket = null;
    this.socketOpen = false;
    this.generation++;
    if (s) {
      detach(s);
      try {
        s.close(4000, reason.slice(0, 100));
      } catch {
        /* already closed */
      }
    }
    if (!this.running) return;
    this.scheduleRetry(reason, code);
  }

  private scheduleRetry(reason: string, code?: number): void {
    this.clearTimers();
    let delay = backoffDelay(this.attempt, this.backoff, this.random);
    if (code === 1008) delay = Math.max(delay, RATE_LIMIT_MIN_DELAY_MS);
    this.attempt++;
    const retryAt = this.now() + delay;
    this.setStatus({ state: 'waiting', attempt: this.attempt, retryAt, reason });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.running) void this.connect();
    }, delay);
  }

  private sendSubscribe(): void {
    if (!this.view || !this.socket) return;
    const cmd = subscribeCommand(this.view, this.now());
    this.socket.send(JSON.stringify(cmd));
    this.opts.onSubscribe?.(cmd);
  }

  /** (Re)starts the quiet-line timer: after pingIntervalMs without a message, ping. */
  private armPing(): void {
    const interval = this.opts.pingIntervalMs ?? 25_000;
    if (this.pingTimer) clearTimeout(this.pingTimer);
    if (this.pongTimer) clearTimeout(this.pongTimer);
    this.pingTimer = this.pongTimer = null;
    if (interval <= 0) return;
    this.pingTimer = setTimeout(() => {
      this.pingTimer = null;
      if (!this.socket || !this.socketOpen) return;
      try {
        this.socket.send(JSON.stringify({ type: 'ping' }));
      } catch {
        /* the close event follows */
      }
      this.pongTimer = setTimeout(() => {
        this.pongTimer = null;
        this.dropSocket('no answer to ping');
      }, this.opts.pongTimeoutMs ?? 10_000);
    }, interval);
  }
}

function detach(s: SocketLike): void {
  s.onopen = s.onmessage = s.onerror = s.onclose = null;
}

export function parseMessage(data: unknown): ServerMessage | null {
  if (typeof data !== 'string') return null;
  try {
    const v = JSON.parse(data) as unknown;
    if (v && typeof v === 'object' && typeof (v as { type?: unknown }).type === 'string') return v as ServerMessage;
  } catch {
    /* not JSON: ignored */
  }
  return null;
}

/** An `alert` message with what the banner reads (a malformed one is not shown). */
export function isAlertMessage(msg: ServerMessage): msg is AlertMessage {
  const m = msg as Partial<AlertMessage>;
  return (
    m.type === 'alert' &&
    (m.status === 'firing' || m.status === 'resolved') &&
    typeof m.idempotency_key === 'string' &&
    typeof m.rule_id === 'string' &&
    typeof m.rule_name === 'string' &&
    !!m.condition &&
    typeof m.condition === 'object'
  );
}

export function closeReason(code: number, reason: string): string {
  const known: Record<number, string> = {
    1000: 'closed',
    1001: 'server shutting down',
    1006: 'connection lost',
    1008: 'rate limited',
    1009: 'message too big',
    1011: 'server error',
  };
  const text = reason || known[code] || 'closed';
  return `${text} (${code})`;
}
