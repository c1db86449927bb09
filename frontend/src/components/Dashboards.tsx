import { useEffect, useRef, useState } from 'preact/hooks';
import { NAME_MAX_CHARS } from '../lib/layout';
import type { Dashboard } from '../lib/types';

export const OVERVIEW_ID = 'overview';

export interface DashboardControlsProps {
  dashboards: Dashboard[] | null;
  loadError: string | null;
  selected: string;
  editing: boolean;
  busy: boolean;
  onSelect: (id: string) => void;
  onCreate: (name: string) => Promise<boolean>;
  onRename: (name: string) => Promise<boolean>;
  onDelete: () => Promise<boolean>;
  onEdit: () => void;
}

type Mode = 'none' | 'create' | 'rename' | 'delete';

/** Saved dashboards: pick one, create, rename, delete, and switch to layout editing. */
export function DashboardControls(props: DashboardControlsProps) {
  const { dashboards, selected, editing, busy } = props;
  const [mode, setMode] = useState<Mode>('none');
  const [name, setName] = useState('');
  const nameInput = useRef<HTMLInputElement>(null);
  const deleteButton = useRef<HTMLButtonElement>(null);
  // Focus the first control of a form when it opens (not on every re-render: data ticks).
  useEffect(() => {
    if (mode === 'create' || mode === 'rename') nameInput.current?.focus();
    if (mode === 'delete') deleteButton.current?.focus();
  }, [mode]);
  const current = dashboards?.find((d) => d.id === selected) ?? null;
  const isSaved = current !== null;

  const open = (m: Mode) => {
    setMode(m);
    setName(m === 'rename' && current ? current.name : '');
  };

  const submitName = async (e: Event) => {
    e.preventDefault();
    const n = name.trim();
    if (!n) return;
    const ok = mode === 'create' ? await props.onCreate(n) : await props.onRename(n);
    if (ok) setMode('none');
  };

  return (
    <div class="dash-controls" data-testid="dashboard-controls">
      <div class="field">
        <label for="dashboard-select">Dashboard</label>
        <select
          id="dashboard-select"
          data-testid="dashboard-select"
          value={selected}
          disabled={editing}
          onChange={(e) => {
            setMode('none');
            props.onSelect((e.currentTarget as HTMLSelectElement).value);
          }}
        >
          <option value={OVERVIEW_ID}>Overview (built in)</option>
          {(dashboards ?? []).map((d) => (
            <option key={d.id} value={d.id}>
              {d.name}
            </option>
          ))}
        </select>
      </div>
      {!editing && mode === 'none' && (
        <div class="button-row">
          <button type="button" class="secondary" onClick={() => open('create')} disabled={busy || dashboards === null}>
            New
          </button>
          <button type="button" class="secondary" onClick={() => open('rename')} disabled={busy || !isSaved}>
            Rename
          </button>
          <button type="button" class="secondary" onClick={() => open('delete')} disabled={busy || !isSaved}>
            Delete
          </button>
          <button
            type="button"
            class="secondary"
            onClick={props.onEdit}
            disabled={busy || !isSaved}
            title={isSaved ? undefined : 'Create a dashboard to change its layout'}
          >
            Edit layout
          </button>
        </div>
      )}
      {(mode === 'create' || mode === 'rename') && (
        <form class="inline-form" onSubmit={submitName}>
          <div class="field">
            <label for="dashboard-name">{mode === 'create' ? 'New dashboard name' : 'New name'}</label>
            <input
              id="dashboard-name"
              data-testid="dashboard-name"
              required
              maxLength={NAME_MAX_CHARS}
              value={name}
              ref={nameInput}
              onInput={(e) => setName((e.currentTarget as HTMLInputElement).value)}
            />
          </div>
          <button type="submit" disabled={busy || !name.trim()}>
            {mode === 'create' ? 'Create' : 'Rename'}
          </button>
          <button type="button" class="secondary" onClick={() => setMode('none')}>
            Cancel
          </button>
          {mode === 'create' && <p class="muted small">It starts with the layout shown now.</p>}
        </form>
      )}
      {mode === 'delete' && current && (
        <div class="inline-form" role="alertdialog" aria-labelledby="delete-question">
          <p id="delete-question">Delete “{current.name}”? This cannot be undone.</p>
          <button
            type="button"
            class="danger"
            disabled={busy}
            ref={deleteButton}
            onClick={async () => {
              if (await props.onDelete()) setMode('none');
            }}
          >
            Delete
          </button>
          <button type="button" class="secondary" onClick={() => setMode('none')}>
            Cancel
          </button>
        </div>
      )}
      {props.loadError && (
        <p class="error small" role="alert">
          {props.loadError}
        </p>
      )}
    </div>
  );
}
