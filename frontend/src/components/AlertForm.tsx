import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import {
  CONDITION_OPS,
  MEASURES,
  NO_DATA,
  RULE_NAME_MAX_CHARS,
  SECRET_MAX_CHARS,
  WINDOW_SUGGESTIONS,
  type FormError,
  type FormField,
  type RuleForm,
} from '../lib/alerts';
import type { AlertRule } from '../lib/types';

export const FIELD_LABELS: Record<FormField, string> = {
  name: 'Name',
  measure: 'Measure',
  'event-name': 'Event name',
  'event-type': 'Event type',
  window: 'Window',
  op: 'Condition',
  value: 'Threshold',
  'for-seconds': 'For (seconds)',
  'no-data': 'No data',
  enabled: 'Enabled',
  'webhook-url': 'Webhook URL',
  'webhook-secret': 'Webhook secret',
  'webhook-format': 'Webhook format',
  labels: 'Labels',
};

export interface AlertFormProps {
  initial: RuleForm;
  /** The rule being edited; null: a new rule. */
  editing: AlertRule | null;
  busy: boolean;
  /** The error to show: from the page's own checks or the server's 400. */
  error: FormError | null;
  onSubmit: (form: RuleForm) => void;
  onCancel: () => void;
}

/** Create or edit an alert rule. Errors are shown beside the field they name. */
export function AlertForm({ initial, editing, busy, error, onSubmit, onCancel }: AlertFormProps) {
  const [form, setForm] = useState<RuleForm>(initial);
  const nameInput = useRef<HTMLInputElement>(null);
  useEffect(() => nameInput.current?.focus(), []);
  // Move focus to the field an error names, so a keyboard or screen reader user lands on it.
  useEffect(() => {
    if (error?.field) (document.getElementById(`alert-${error.field}`) as HTMLElement | null)?.focus();
  }, [error]);

  const set = <K extends keyof RuleForm>(key: K, value: RuleForm[K]) => setForm((f) => ({ ...f, [key]: value }));
  const text = (key: keyof RuleForm) => (e: Event) => set(key, (e.currentTarget as HTMLInputElement).value as never);

  const invalid = (field: FormField) =>
    error?.field === field ? { 'aria-invalid': 'true' as const, 'aria-describedby': `alert-${field}-error` } : {};
  const fieldError = (field: FormField) =>
    error?.field === field && (
      <p id={`alert-${field}-error`} class="error small" role="alert" data-testid="alert-form-error" data-field={field}>
        {FIELD_LABELS[field]}: {error.message}
      </p>
    );
  const field = (id: FormField, control: ComponentChildren, hint?: string, label = FIELD_LABELS[id]) => (
    <div class={`field alert-field-${id}`}>
      <label for={`alert-${id}`}>{label}</label>
      {control}
      {hint && <span class="muted small">{hint}</span>}
      {fieldError(id)}
    </div>
  );

  const isChange = form.op === 'change';
  return (
    <form
      class="alert-form"
      data-testid="alert-form"
      aria-label={editing ? `Edit alert rule ${editing.name}` : 'New alert rule'}
      onSubmit={(e) => {
        e.preventDefault();
        onSubmit(form);
      }}
    >
      <div class="alert-form-grid">
        {field(
          'name',
          <input id="alert-name" data-testid="alert-name" required maxLength={RULE_NAME_MAX_CHARS} value={form.name} ref={nameInput} onInput={text('name')} {...invalid('name')} />,
        )}
        {field(
          'measure',
          <select id="alert-measure" data-testid="alert-measure" value={form.measure} onChange={text('measure')} {...invalid('measure')}>
            {MEASURES.map((m) => (
              <option key={m.value} value={m.value}>
                {m.label}
              </option>
            ))}
          </select>,
        )}
        {field(
          'event-name',
          <input id="alert-event-name" data-testid="alert-event-name" placeholder="Any" value={form.eventName} onInput={text('eventName')} {...invalid('event-name')} />,
        )}
        {field(
          'event-type',
          <input id="alert-event-type" data-testid="alert-event-type" placeholder="Any" value={form.eventType} onInput={text('eventType')} {...invalid('event-type')} />,
        )}
        {field(
          'window',
          <>
            <input
              id="alert-window"
              data-testid="alert-window"
              list="alert-window-suggestions"
              required
              autoComplete="off"
              value={form.window}
              onInput={text('window')}
              {...invalid('window')}
            />
            <datalist id="alert-window-suggestions">
              {WINDOW_SUGGESTIONS.map((w) => (
                <option key={w} value={w} />
              ))}
            </datalist>
          </>,
          '1m–60m (last N minutes), hour or day (current UTC one)',
        )}
        {field(
          'op',
          <select id="alert-op" data-testid="alert-op" value={form.op} onChange={text('op')} {...invalid('op')}>
            {CONDITION_OPS.map((o) => (
              <option key={o.value} value={o.value}>
                {o.label}
              </option>
            ))}
          </select>,
        )}
        {field(
          'value',
          <input id="alert-value" data-testid="alert-value" inputMode="decimal" required value={form.value} onInput={text('value')} {...invalid('value')} />,
          isChange ? 'against the previous window; negative: a fall' : undefined,
          isChange ? 'Percent' : FIELD_LABELS.value,
        )}
        {field(
          'for-seconds',
          <input id="alert-for-seconds" data-testid="alert-for-seconds" inputMode="numeric" value={form.forSeconds} onInput={text('forSeconds')} {...invalid('for-seconds')} />,
          'how long it must hold before firing',
        )}
        {field(
          'no-data',
          <select id="alert-no-data" data-testid="alert-no-data" value={form.noData} onChange={text('noData')} {...invalid('no-data')}>
            {NO_DATA.map((o) => (
              <option key={o.value} value={o.value}>
                {o.label}
              </option>
            ))}
          </select>,
          'when the org stored no event in the window',
        )}
        <div class="field alert-field-enabled">
          <label for="alert-enabled">
            <input
              id="alert-enabled"
              data-testid="alert-enabled"
              type="checkbox"
              checked={form.enabled}
              onChange={(e) => set('enabled', (e.currentTarget as HTMLInputElement).checked)}
              {...invalid('enabled')}
            />{' '}
            Enabled
          </label>
          {fieldError('enabled')}
        </div>
      </div>
      <fieldset class="alert-form-grid">
        <legend>Webhook (optional; the page always gets the alerts)</legend>
        {field(
          'webhook-url',
          <input id="alert-webhook-url" data-testid="alert-webhook-url" type="url" placeholder="https://hooks.example.com/…" value={form.webhookUrl} onInput={text('webhookUrl')} {...invalid('webhook-url')} />,
        )}
        {field(
          'webhook-secret',
          <input
            id="alert-webhook-secret"
            data-testid="alert-webhook-secret"
            type="password"
            autoComplete="new-password"
            maxLength={SECRET_MAX_CHARS}
            value={form.webhookSecret}
            onInput={text('webhookSecret')}
            {...invalid('webhook-secret')}
          />,
          editing?.contact_points[0]?.secret_set ? 'leave empty to keep the current secret' : 'at least 16 characters; signs each delivery',
        )}
        {field(
          'webhook-format',
          <select id="alert-webhook-format" data-testid="alert-webhook-format" value={form.webhookFormat} onChange={text('webhookFormat')} {...invalid('webhook-format')}>
            <option value="json">JSON</option>
            <option value="slack">Slack</option>
          </select>,
        )}
      </fieldset>
      {field(
        'labels',
        <textarea id="alert-labels" data-testid="alert-labels" rows={2} placeholder="team=growth" value={form.labels} onInput={text('labels')} {...invalid('labels')} />,
        'optional, one key=value a line',
      )}
      {error && !error.field && (
        <p class="error small" role="alert" data-testid="alert-form-error">
          {error.message}
        </p>
      )}
      <div class="button-row">
        <button type="submit" data-testid="alert-save" disabled={busy}>
          {editing ? 'Save rule' : 'Create rule'}
        </button>
        <button type="button" class="secondary" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}
