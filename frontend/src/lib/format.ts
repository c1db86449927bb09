// Number and time formatting for the cards, the status line and the recent list.

const intFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const compactFmt = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 });

export function formatCount(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  return intFmt.format(n);
}

/** Axis ticks: 950, 1.2K, 3.4M (short, so ticks past 1,000 do not overlap). */
export function formatCompact(n: number): string {
  if (!Number.isFinite(n)) return '';
  return Math.abs(n) < 1_000 ? intFmt.format(n) : compactFmt.format(n);
}

const pctFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

/** A percentage with the locale's separators: 1234.56 -> "1,234.6%". */
export function formatPercent(pct: number): string {
  return `${pctFmt.format(pct)}%`;
}

/** "850 ms", "3.2 s", "4 min", "2 h", "3 d". */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)} min`;
  if (ms < 86_400_000) return `${Math.round(ms / 3_600_000)} h`;
  return `${Math.round(ms / 86_400_000)} d`;
}

/**
 * Health of ingestion for the connection indicator. Nothing waiting to be stored means caught
 * up, however old the newest event is (a quiet org is not a slow pipeline); otherwise the age
 * of the newest stored event's ingest says how far behind the store is.
 */
export function lagLevel(lag: { events: number; freshness_ms: number } | null | undefined): 'good' | 'slow' | 'stale' | 'unknown' {
  if (!lag || !Number.isFinite(lag.events) || !Number.isFinite(lag.freshness_ms)) return 'unknown';
  if (lag.events <= 0 || lag.freshness_ms <= 5_000) return 'good';
  if (lag.freshness_ms <= 60_000) return 'slow';
  return 'stale';
}
