import { bannerText, bannerVisible, type Banner } from '../lib/alerts';

export interface AlertBannersProps {
  banners: Banner[];
  now: number;
  onDismiss: (key: string) => void;
}

/** Alerts that fired (until dismissed) or resolved (for 10 s), at the top of the page. */
export function AlertBanners({ banners, now, onDismiss }: AlertBannersProps) {
  const shown = banners.filter((b) => bannerVisible(b, now));
  return (
    <div class="alert-banners" data-testid="alert-banners" aria-live="assertive">
      {shown.map((b) => (
        <div
          key={`${b.key} ${b.status}`}
          class={`alert-banner alert-banner-${b.status}`}
          data-testid="alert-banner"
          data-status={b.status}
          data-rule-id={b.ruleId}
          role={b.status === 'firing' ? 'alert' : 'status'}
        >
          <strong class="alert-banner-status">{b.status === 'firing' ? 'Firing' : 'Resolved'}</strong>
          <span class="alert-banner-text" data-testid="alert-banner-text">
            {bannerText(b)}
          </span>
          <button type="button" class="tiny" data-testid="alert-banner-dismiss" aria-label={`Dismiss the alert ${b.ruleName}`} onClick={() => onDismiss(b.key)}>
            ✕
          </button>
        </div>
      ))}
    </div>
  );
}
