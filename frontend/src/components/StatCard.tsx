import { formatCount } from '../lib/format';
import type { StatValue } from '../lib/shape';
import type { StatMetric } from '../lib/types';

export function statTestId(metric: StatMetric): string {
  return `card-${metric.replace(/_/g, '-')}`;
}

const ARROWS = { up: '▲', down: '▼', flat: '■' } as const;

export interface StatCardProps {
  metric: StatMetric;
  title: string;
  stat: StatValue;
  /** A second line, e.g. the selected range's unique users on the "today" card. */
  extra?: string | null;
  trendLabel?: string;
}

export function StatCard({ metric, title, stat, extra, trendLabel = 'vs previous 5 min' }: StatCardProps) {
  const t = stat.trend;
  return (
    <div class="stat" data-testid={statTestId(metric)} data-value={stat.value ?? ''}>
      <h2 class="widget-title">{title}</h2>
      <p class="stat-value" data-testid={`${statTestId(metric)}-value`}>
        {formatCount(stat.value)}
      </p>
      {t && (
        <p class={`stat-trend trend-${t.direction}`}>
          <span aria-hidden="true">{ARROWS[t.direction]} </span>
          {t.text} <span class="muted">{trendLabel}</span>
        </p>
      )}
      {stat.note && <p class="stat-note muted">{stat.note}</p>}
      {extra && <p class="stat-note muted">{extra}</p>}
    </div>
  );
}
