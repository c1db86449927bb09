import { formatCount, formatDuration, lagLevel } from '../lib/format';
import type { ConnStatus } from '../lib/connection';
import type { Lag } from '../lib/types';

export interface ConnectionStatusProps {
  status: ConnStatus;
  lag: Lag | null;
  now: number;
  lastMessageAt: number | null;
  onRetry: () => void;
}

function statusText(s: ConnStatus, now: number): string {
  switch (s.state) {
    case 'idle':
      return 'Not connected';
    case 'checking':
      return s.attempt ? 'Checking the gateway…' : 'Signing in…';
    case 'connecting':
      return 'Connecting…';
    case 'open':
      return 'Live';
    case 'waiting': {
      const secs = Math.max(0, Math.ceil((s.retryAt - now) / 1000));
      return `Reconnecting in ${secs} s (${s.reason})`;
    }
    case 'rejected':
      return 'Token rejected';
    case 'stopped':
      return 'Disconnected';
  }
}

/** The connection dot + words, and the ingestion lag (kept out of the live region: it ticks). */
export function ConnectionStatus({ status, lag, now, lastMessageAt, onRetry }: ConnectionStatusProps) {
  const level = status.state === 'open' ? lagLevel(lag) : 'unknown';
  return (
    <div class="conn" data-testid="connection-status" data-state={status.state}>
      <span class={`dot dot-${status.state}`} aria-hidden="true" />
      <span role="status" aria-live="polite" class="conn-text">
        {status.state === 'waiting' ? 'Reconnecting' : statusText(status, now)}
      </span>
      {status.state === 'waiting' && (
        <>
          <span class="muted conn-detail">{statusText(status, now).replace(/^Reconnecting/, '')}</span>
          <button type="button" class="link" onClick={onRetry}>
            Retry now
          </button>
        </>
      )}
      {status.state === 'open' && lag && (
        <span class={`lag lag-${level}`} data-testid="ingestion-lag" data-level={level}>
          {lag.events > 0 ? `${formatCount(lag.events)} events waiting` : 'caught up'} · newest stored{' '}
          {formatDuration(lag.freshness_ms)} ago
        </span>
      )}
      {status.state === 'open' && lastMessageAt !== null && now - lastMessageAt > 60_000 && (
        <span class="muted">last update {formatDuration(now - lastMessageAt)} ago</span>
      )}
    </div>
  );
}
