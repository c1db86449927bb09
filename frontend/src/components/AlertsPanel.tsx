import { useEffect, useRef, useState } from 'preact/hooks';
import {
  buildRuleBody,
  defaultMuteInput,
  emptyForm,
  fieldForParameter,
  formatValue,
  formFromRule,
  muteBody,
  mutedUntil,
  parseMuteInput,
  summarizeRule,
  type FormError,
  type HistoryEntry,
  type RuleForm,
} from '../lib/alerts';
import { ApiError, type ApiClient } from '../lib/api';
import { eventTime } from '../lib/zone';
import { zoneLabel } from '../lib/trends';
import type { AlertFiring, AlertRule } from '../lib/types';
import { AlertForm } from './AlertForm';

/** How often the open panel reloads the rules (their states change with the evaluations). */
export const ALERTS_REFRESH_MS = 5_000;

export interface AlertsPanelProps {
  client: ApiClient;
  now: number;
  /** Bumped by every alert message: the rules are reloaded at once. */
  received: number;
  history: HistoryEntry[];
  onHistory: (firings: AlertFiring[]) => void;
  onRejected: (message: string) => void;
  /** The page's zone: times read in it. */
  zone?: string;
}

type Mode =
  | { kind: 'none' }
  | { kind: 'create' }
  | { kind: 'edit'; rule: AlertRule }
  | { kind: 'mute'; id: string; value: string; error: string | null }
  | { kind: 'delete'; id: string };

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The org's alert rules (list, create, edit, mute, delete) and the history of firings. */
export function AlertsPanel({ client, now, received, history, onHistory, onRejected, zone = 'UTC' }: AlertsPanelProps) {
  const [rules, setRules] = useState<AlertRule[] | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const [mode, setMode] = useState<Mode>({ kind: 'none' });
  const [formError, setFormError] = useState<FormError | null>(null);
  const [busy, setBusy] = useState(false);
  const loading = useRef(false);
  /** A reload was asked for while one was in flight (it may hold the state from before an alert). */
  const again = useRef(false);
  const mounted = useRef(true);
  useEffect(
    () => () => {
      mounted.current = false;
    },
    [],
  );

  const failed = (e: unknown): string => {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) onRejected(e.message);
    if (e instanceof ApiError && e.status === 501) return `Alerting is not available on this gateway: ${e.message}`;
    return message(e);
  };

  const load = async (): Promise<void> => {
    if (loading.current) {
      again.current = true;
      return;
    }
    loading.current = true;
    try {
      const list = await client.listAlerts();
      if (!mounted.current) return;
      setRules(list);
      setLoadError(null);
    } catch (e) {
      if (mounted.current) setLoadError(`The alert rules could not be loaded: ${failed(e)}`);
    } finally {
      loading.current = false;
    }
    if (again.current && mounted.current) {
      again.current = false;
      return load();
    }
  };

  // Open: the rules and the history; then the rules every few seconds and on every alert.
  useEffect(() => {
    client
      .alertHistory()
      .then((firings) => mounted.current && onHistory(firings))
      .catch(() => {
        /* the list's error says why */
      });
    const t = setInterval(() => void load(), ALERTS_REFRESH_MS);
    return () => clearInterval(t);
  }, [client]);
  useEffect(() => void load(), [client, received]);

  /** Runs a change; an error is shown and false returned. */
  const run = async (f: () => Promise<void>, onError = (e: unknown) => setActionError(failed(e))): Promise<boolean> => {
    setBusy(true);
    setActionError(null);
    try {
      await f();
      return true;
    } catch (e) {
      if (mounted.current) onError(e);
      return false;
    } finally {
      if (mounted.current) setBusy(false);
    }
  };

  const upsert = (r: AlertRule) =>
    setRules((list) => [...(list ?? []).filter((x) => x.id !== r.id), r].sort((a, b) => a.name.localeCompare(b.name)));

  const open = (m: Mode) => {
    setMode(m);
    setFormError(null);
    setActionError(null);
  };

  const save = async (form: RuleForm) => {
    const editing = mode.kind === 'edit' ? mode.rule : null;
    const built = buildRuleBody(form, editing);
    if ('error' in built) {
      setFormError(built.error);
      return;
    }
    setFormError(null);
    const ok = await run(
      async () => upsert(editing ? await client.updateAlert(editing.id, built.body) : await client.createAlert(built.body)),
      (e) => {
        // A 400 names the field: shown beside it. Anything else below the form.
        const field = e instanceof ApiError && e.status === 400 ? fieldForParameter(e.parameter) : null;
        setFormError({ field, message: failed(e) });
      },
    );
    if (ok) setMode({ kind: 'none' });
  };

  const mute = async (rule: AlertRule, until: number | null) => {
    if (await run(async () => upsert(await client.updateAlert(rule.id, muteBody(rule, until))))) setMode({ kind: 'none' });
  };

  const remove = async (rule: AlertRule) => {
    const ok = await run(async () => {
      await client.deleteAlert(rule.id);
      setRules((list) => (list ?? []).filter((r) => r.id !== rule.id));
    });
    if (ok) setMode({ kind: 'none' });
  };

  const formOpen = mode.kind === 'create' || mode.kind === 'edit';
  return (
    <section class="card alerts-panel" data-testid="alerts-panel" aria-labelledby="alerts-title">
      <div class="alerts-head">
        <h2 id="alerts-title">Alerts</h2>
        {!formOpen && (
          <button type="button" data-testid="alert-new" onClick={() => open({ kind: 'create' })} disabled={busy || rules === null}>
            New rule
          </button>
        )}
      </div>
      {loadError && (
        <p class="error small" role="alert" data-testid="alerts-load-error">
          {loadError}
        </p>
      )}
      {formOpen && (
        <AlertForm
          key={mode.kind === 'edit' ? mode.rule.id : 'new'}
          initial={mode.kind === 'edit' ? formFromRule(mode.rule) : emptyForm()}
          editing={mode.kind === 'edit' ? mode.rule : null}
          busy={busy}
          error={formError}
          onSubmit={(f) => void save(f)}
          onCancel={() => open({ kind: 'none' })}
        />
      )}
      {actionError && (
        <p class="error small" role="alert" data-testid="alerts-action-error">
          {actionError}
        </p>
      )}
      {rules === null && !loadError && <p class="muted">Loading the alert rules…</p>}
      {rules?.length === 0 && <p class="muted">No alert rules yet.</p>}
      {rules && rules.length > 0 && (
        <ul class="alert-rules" data-testid="alert-rules" data-count={rules.length}>
          {rules.map((r) => {
            const muted = mutedUntil(r, now);
            const state = r.enabled ? r.state.state : 'disabled';
            return (
              <li key={r.id} class="alert-rule" data-testid="alert-rule" data-rule-id={r.id} data-state={state}>
                <div class="alert-rule-row">
                  <strong class="alert-rule-name">{r.name}</strong>
                  <span class={`state-badge state-${state}`} data-testid="alert-rule-state" title={r.state.since ? `since ${r.state.since}` : undefined}>
                    {state}
                  </span>
                  {muted !== null && (
                    <span class="badge" data-testid="alert-rule-muted">
                      muted until {eventTime(new Date(muted).toISOString(), now, zone)}
                    </span>
                  )}
                </div>
                <p class="small alert-rule-summary" data-testid="alert-rule-summary">
                  {summarizeRule(r)}
                  {r.state.value !== null && r.state.value !== undefined && <span class="muted"> · now {formatValue(r.state.value)}</span>}
                  {r.contact_points.length > 0 && <span class="muted"> · webhook {r.contact_points.map((c) => c.url).join(', ')}</span>}
                </p>
                {mode.kind === 'mute' && mode.id === r.id ? (
                  <form
                    class="inline-form"
                    aria-label={`Mute ${r.name}`}
                    onSubmit={(e) => {
                      e.preventDefault();
                      const parsed = parseMuteInput(mode.value, now, zone);
                      if ('error' in parsed) setMode({ ...mode, error: parsed.error });
                      else void mute(r, parsed.until);
                    }}
                  >
                    <div class="field">
                      <label for="alert-mute-until">
                        Mute until <span class="muted">({zoneLabel(zone)})</span>
                      </label>
                      <input
                        id="alert-mute-until"
                        data-testid="alert-mute-until"
                        type="datetime-local"
                        value={mode.value}
                        onInput={(e) => setMode({ ...mode, value: (e.currentTarget as HTMLInputElement).value, error: null })}
                        aria-invalid={mode.error ? 'true' : undefined}
                      />
                    </div>
                    <button type="submit" data-testid="alert-mute-save" disabled={busy}>
                      Mute
                    </button>
                    <button type="button" class="secondary" onClick={() => open({ kind: 'none' })}>
                      Cancel
                    </button>
                    {mode.error && (
                      <p class="error small" role="alert">
                        {mode.error}
                      </p>
                    )}
                  </form>
                ) : mode.kind === 'delete' && mode.id === r.id ? (
                  <div class="inline-form" role="alertdialog" aria-labelledby={`alert-delete-${r.id}`}>
                    <p id={`alert-delete-${r.id}`}>Delete “{r.name}” with its history? This cannot be undone.</p>
                    <button type="button" class="danger" data-testid="alert-delete-confirm" disabled={busy} onClick={() => void remove(r)}>
                      Delete
                    </button>
                    <button type="button" class="secondary" onClick={() => open({ kind: 'none' })}>
                      Cancel
                    </button>
                  </div>
                ) : (
                  <div class="button-row">
                    <button type="button" class="secondary" data-testid="alert-edit" disabled={busy} onClick={() => open({ kind: 'edit', rule: r })}>
                      Edit
                    </button>
                    {muted !== null ? (
                      <button type="button" class="secondary" data-testid="alert-unmute" disabled={busy} onClick={() => void mute(r, null)}>
                        Unmute
                      </button>
                    ) : (
                      <button
                        type="button"
                        class="secondary"
                        data-testid="alert-mute"
                        disabled={busy}
                        onClick={() => open({ kind: 'mute', id: r.id, value: defaultMuteInput(now, zone), error: null })}
                      >
                        Mute…
                      </button>
                    )}
                    <button type="button" class="secondary" data-testid="alert-delete" disabled={busy} onClick={() => open({ kind: 'delete', id: r.id })}>
                      Delete
                    </button>
                  </div>
                )}
              </li>
            );
          })}
        </ul>
      )}
      <h3 class="alerts-subtitle">History</h3>
      {history.length === 0 ? (
        <p class="muted small">No firings yet.</p>
      ) : (
        <ol class="alert-history" data-testid="alert-history" data-count={history.length}>
          {history.map((h) => (
            <li key={h.key} class="alert-history-item" data-testid="alert-history-item" data-rule-id={h.ruleId} data-resolved={h.resolvedAt ? 'true' : 'false'}>
              <span class={`state-badge state-${h.resolvedAt ? 'resolved' : 'firing'}`}>{h.resolvedAt ? 'resolved' : 'firing'}</span>{' '}
              <strong>{h.ruleName}</strong> <span class="muted small">#{h.seq}</span>{' '}
              <span class="small">
                fired {eventTime(h.firedAt, now, zone)} at {formatValue(h.value)}
                {h.resolvedAt && ` · resolved ${eventTime(h.resolvedAt, now, zone)} at ${formatValue(h.resolvedValue)}`}
                {h.lateEvents > 0 && ` · ${h.lateEvents} late events`}
              </span>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
