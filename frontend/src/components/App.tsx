import { useCallback, useEffect, useMemo, useReducer, useRef, useState } from 'preact/hooks';
import { initialAlerts, reduceAlerts } from '../lib/alerts';
import { ApiClient, ApiError, checkToken, pageBase, wsUrl, type FetchLike, type Session } from '../lib/api';
import { clearSession, initialAuth, saveSession, type AuthEnv, type StorageLike } from '../lib/auth';
import { Connection, type ConnStatus, type SocketFactory } from '../lib/connection';
import { addTrendWidget, compact, defaultWidgets, MAX_WIDGETS, sanitize, validate } from '../lib/layout';
import { DEFAULT_VIEW, type ViewSpec } from '../lib/range';
import { eventTypeSuggestions, initialState, reduce } from '../lib/shape';
import { DEFAULT_QUERY, emptySlot, reduceTrends, trendParams, trendTitle, widgetTrend, widgetTrendParams, zoneLabel, type TrendParams, type TrendQuery } from '../lib/trends';
import { decodeHash, encodeHash } from '../lib/urlstate';
import { effectiveZone, isUtc } from '../lib/zone';
import { hasPageFilter, needsTrends, NO_PAGE_FILTER, ZONE_SLOTS, zoneData, zoneTrendParams, type PageFilter } from '../lib/zoneview';
import type { Dashboard, Widget } from '../lib/types';
import { AlertBanners } from './AlertBanners';
import { AlertsPanel } from './AlertsPanel';
import { ConnectionStatus } from './ConnectionStatus';
import { DashboardControls, OVERVIEW_ID } from './Dashboards';
import { RealtimeChart } from './RealtimeChart';
import { PageFilters } from './PageFilters';
import { TimeZoneControl } from './TimeZoneControl';
import { TrendsPanel } from './TrendsPanel';
import { SignIn } from './SignIn';
import { Toolbar } from './Toolbar';
import { WidgetGrid } from './WidgetGrid';

/** What the page needs from the browser; tests pass fakes. */
export interface Env extends AuthEnv {
  fetch: FetchLike;
  createSocket: SocketFactory;
  now: () => number;
  /** A new history entry (the shareable view in the hash); absent: replaceUrl. */
  pushUrl?: (url: string) => void;
  /** The address's current hash (back/forward); absent: the hash of `href`. */
  readHash?: () => string;
  /** Calls `f` on back/forward; returns the unsubscribe. */
  onPopState?: (f: () => void) => () => void;
}

export function browserEnv(): Env {
  const memory = (): StorageLike => {
    const m = new Map<string, string>();
    return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => void m.set(k, v), removeItem: (k) => void m.delete(k) };
  };
  const storage = (name: 'sessionStorage' | 'localStorage'): StorageLike => {
    try {
      return window[name] ?? memory();
    } catch {
      return memory();
    }
  };
  return {
    href: location.href,
    session: storage('sessionStorage'),
    local: storage('localStorage'),
    replaceUrl: (url) => history.replaceState(history.state, '', url),
    fetch: (input, init) => fetch(input, init),
    createSocket: (url) => new WebSocket(url),
    now: () => Date.now(),
    pushUrl: (url) => history.pushState(null, '', url),
    readHash: () => location.hash,
    onPopState: (f) => {
      window.addEventListener('popstate', f);
      return () => window.removeEventListener('popstate', f);
    },
  };
}

/** The live window of the real-time chart: the last 60 minutes per minute, sliding. */
export function realtimeParams(tz: string | null, now: number, eventType: string | null = null, pf: PageFilter = NO_PAGE_FILTER): TrendParams {
  return {
    from: now - 3_600_000,
    granularity: 'minute',
    ...(eventType ? { event_type: eventType } : {}),
    ...(pf.events.length ? { event: pf.events } : {}),
    ...(pf.filters.length ? { filter: pf.filters } : {}),
    ...(pf.compare ? { compare: 'previous' } : {}),
    ...(tz ? { tz } : {}),
  };
}

const VIEW_KEY = 'streamtally.view';

function loadView(local: StorageLike): ViewSpec {
  try {
    const v = JSON.parse(local.getItem(VIEW_KEY) ?? 'null') as ViewSpec | null;
    if (v && ['1h', '24h', '7d', '30d'].includes(v.range)) return { range: v.range, eventType: v.eventType ?? null } as ViewSpec;
  } catch {
    /* ignored */
  }
  return DEFAULT_VIEW;
}

export function App({ env }: { env: Env }) {
  const [auth] = useState(() => initialAuth(env));
  const [session, setSession] = useState<Session | null>(auth.session);
  const [signinError, setSigninError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const base = useMemo(() => pageBase(env.href), [env.href]);

  const signIn = async (org: string, token: string) => {
    setBusy(true);
    setSigninError(null);
    const candidate = { org, token };
    const result = await checkToken(new ApiClient(base, candidate, env.fetch));
    setBusy(false);
    if (result.kind === 'ok') {
      saveSession(env, candidate);
      setSession(candidate);
    } else if (result.kind === 'rejected') {
      setSigninError(result.message);
    } else {
      setSigninError(`Cannot reach the gateway (${result.message}). Is streamtally running?`);
    }
  };

  const onRejected = useCallback((message: string) => {
    clearSession(env);
    setSession(null);
    setSigninError(message);
  }, []);

  const signOut = useCallback(() => {
    clearSession(env);
    setSession(null);
    setSigninError(null);
  }, []);

  if (!session) {
    return (
      <SignIn
        org={auth.org}
        token={auth.session ? '' : auth.token}
        error={signinError}
        busy={busy}
        onSubmit={(o, t) => void signIn(o, t)}
      />
    );
  }
  return <DashboardPage key={`${session.org}\n${session.token}`} env={env} base={base} session={session} onRejected={onRejected} onSignOut={signOut} />;
}

interface PageProps {
  env: Env;
  base: string;
  session: Session;
  onRejected: (message: string) => void;
  onSignOut: () => void;
}

function DashboardPage({ env, base, session, onRejected, onSignOut }: PageProps) {
  const client = useMemo(() => new ApiClient(base, session, env.fetch), [base, session]);
  const loadEvents = useCallback((query: string) => client.explore(query), [client]);
  const [state, dispatch] = useReducer(reduce, undefined, initialState);
  // The shareable view from the address (a shared link, a reload), else what was last used.
  const fromUrl = useMemo(() => decodeHash(new URL(env.href).hash), []);
  const [spec, setSpec] = useState<ViewSpec>(() => fromUrl.view ?? loadView(env.local));
  const [query, setQuery] = useState<TrendQuery>(() => fromUrl.query ?? DEFAULT_QUERY);
  const [tz, setTz] = useState<string | null>(fromUrl.tz);
  const [pageFilter, setPageFilter] = useState<PageFilter>(fromUrl.page ?? NO_PAGE_FILTER);
  const pfKey = JSON.stringify(pageFilter);
  const [orgZone, setOrgZone] = useState<string | null>(null);
  const [tzBusy, setTzBusy] = useState(false);
  const [tzMessage, setTzMessage] = useState<string | null>(null);
  const [trends, dispatchTrends] = useReducer(reduceTrends, {});
  const trendSeq = useRef(0);
  const trendIds = useRef<Record<string, string>>({});
  const [status, setStatus] = useState<ConnStatus>({ state: 'idle' });
  const [now, setNow] = useState(env.now);
  const conn = useRef<Connection | null>(null);
  // Alerts: banners and history from `alert` messages; the panel (rules) while open.
  const [alerts, dispatchAlert] = useReducer(reduceAlerts, undefined, initialAlerts);
  const alertsKey = `streamtally.alerts.${session.org}`;
  const [alertsOpen, setAlertsOpen] = useState(() => env.local.getItem(alertsKey) === 'open');
  const specRef = useRef(spec);
  specRef.current = spec;

  // Saved dashboards.
  const dashKey = `streamtally.dashboard.${session.org}`;
  const [dashboards, setDashboards] = useState<Dashboard[] | null>(null);
  const [dashError, setDashError] = useState<string | null>(null);
  const [selected, setSelected] = useState<string>(() => fromUrl.dashboard ?? env.local.getItem(dashKey) ?? OVERVIEW_ID);
  const [draft, setDraft] = useState<Widget[] | null>(null);
  const [saveErrors, setSaveErrors] = useState<string[]>([]);
  const [dashBusy, setDashBusy] = useState(false);
  const loadedDashboards = useRef(false);
  /** The token passed the check once: panels that load on their own may ask the API. */
  const [tokenOk, setTokenOk] = useState(false);

  useEffect(() => {
    const c = new Connection({
      url: () => wsUrl(base, session),
      createSocket: env.createSocket,
      preflight: () => checkToken(client, (counters) => dispatch({ type: 'counters', counters, now: env.now() })),
      onMessage: (msg) => {
        dispatch({ type: 'message', msg, now: env.now() });
        if (msg.type === 'trend' || msg.type === 'trend_update' || msg.type === 'error') dispatchTrends({ type: 'message', msg });
      },
      onAlert: (msg) => dispatchAlert({ type: 'message', msg, now: env.now() }),
      onSubscribe: (cmd) => dispatch({ type: 'subscribed', cmd, now: env.now() }),
      onStatus: (s) => {
        setStatus(s);
        if (s.state === 'rejected') onRejected(s.message);
      },
      now: env.now,
    });
    conn.current = c;
    c.subscribe(specRef.current);
    c.start();
    const online = () => c.retryNow();
    window.addEventListener('online', online);
    return () => {
      window.removeEventListener('online', online);
      c.stop();
      conn.current = null;
    };
  }, [client]);

  useEffect(() => {
    conn.current?.subscribe(spec);
    try {
      if (spec.range !== 'custom') env.local.setItem(VIEW_KEY, JSON.stringify(spec));
    } catch {
      /* ignored */
    }
  }, [spec]);

  /** Keeps the trend of `slot` current under a fresh id (answers to the old question are then ignored). */
  /** Stops the trend of `slot` and forgets it. */
  const dropTrend = (slot: string) => {
    const old = trendIds.current[slot];
    if (old) conn.current?.untrend(old);
    delete trendIds.current[slot];
  };

  const keepTrend = (slot: string, params: () => TrendParams) => {
    const c = conn.current;
    if (!c) return;
    const old = trendIds.current[slot];
    if (old) c.untrend(old);
    const id = `${slot}-${++trendSeq.current}`;
    trendIds.current[slot] = id;
    dispatchTrends({ type: 'request', slot, id });
    c.trend(id, params);
  };

  useEffect(() => {
    const q = query;
    const z = tz;
    keepTrend('panel', () => trendParams(q, z, env.now()));
  }, [client, query, tz]);

  const eventType = spec.eventType?.trim() || null;
  useEffect(() => {
    const z = tz;
    const pf = pageFilter;
    keepTrend('realtime', () => realtimeParams(z, env.now(), eventType, pf));
  }, [client, tz, eventType, pfKey]);

  // The page's zone and filters. In UTC and unfiltered the live view answers everything; in
  // another zone, or filtered, the line, the top events and the "today" cards are live
  // trends in that zone with those filters.
  const zone = effectiveZone(tz, orgZone);
  const zonedPage = needsTrends(isUtc(zone), pageFilter);
  const specKey = JSON.stringify(spec);
  useEffect(() => {
    for (const slot of Object.values(ZONE_SLOTS)) {
      if (!zonedPage) {
        dropTrend(slot);
        continue;
      }
      const s = specRef.current;
      const pf = pageFilter;
      keepTrend(slot, () => zoneTrendParams(s, zone, env.now(), pf)[slot]);
    }
  }, [client, zone, specKey, pfKey, zonedPage]);
  const zoned = useMemo(() => (zonedPage ? zoneData(trends, zone, now) : null), [zonedPage, trends, zone, Math.floor(now / 60_000)]);

  // The view in the address: a new history entry per change, back/forward restores it.
  const hash = encodeHash({ dashboard: selected === OVERVIEW_ID ? null : selected, view: spec, query, tz, page: pageFilter });
  const lastHash = useRef<string | null>(null);
  useEffect(() => {
    if (hash === lastHash.current) return;
    const u = new URL(env.href);
    u.searchParams.delete('token');
    const url = `${u.pathname}${u.search === '?' ? '' : u.search}#${hash}`;
    if (lastHash.current === null || !env.pushUrl) env.replaceUrl(url);
    else env.pushUrl(url);
    lastHash.current = hash;
  }, [hash]);
  useEffect(() => {
    if (!env.onPopState || !env.readHash) return;
    const read = env.readHash;
    return env.onPopState(() => {
      const s = decodeHash(read());
      const next = {
        dashboard: s.dashboard,
        view: s.view ?? DEFAULT_VIEW,
        query: s.query ?? DEFAULT_QUERY,
        tz: s.tz,
        page: s.page ?? NO_PAGE_FILTER,
      };
      lastHash.current = encodeHash(next);
      setSelected(next.dashboard ?? OVERVIEW_ID);
      setDraft(null);
      setSpec(next.view);
      setQuery(next.query);
      setTz(next.tz);
      setPageFilter(next.page);
    });
  }, []);

  useEffect(() => {
    const t = setInterval(() => setNow(env.now()), 1000);
    return () => clearInterval(t);
  }, []);

  // Load the saved dashboards once the token is known to be good (avoids a second 401).
  useEffect(() => {
    if (loadedDashboards.current || (status.state !== 'connecting' && status.state !== 'open')) return;
    loadedDashboards.current = true;
    setTokenOk(true);
    client
      .settings()
      .then((s) => setOrgZone(s.time_zone))
      .catch(() => setOrgZone(null));
    client
      .listDashboards()
      .then((list) => {
        setDashboards(list.map((d) => ({ ...d, widgets: sanitize(d.widgets) })));
        setDashError(null);
      })
      .catch((e: unknown) => {
        setDashboards([]);
        setDashError(`Saved dashboards are unavailable: ${e instanceof Error ? e.message : String(e)}`);
      });
  }, [status.state, client]);

  const current = dashboards?.find((d) => d.id === selected) ?? null;
  const widgets = draft ?? current?.widgets ?? defaultWidgets();

  const select = (id: string) => {
    setSelected(id);
    setDraft(null);
    setSaveErrors([]);
    try {
      env.local.setItem(dashKey, id);
    } catch {
      /* ignored */
    }
  };

  /** Runs a dashboard request; an error is shown and false returned. */
  const run = async (f: () => Promise<void>): Promise<boolean> => {
    setDashBusy(true);
    setDashError(null);
    try {
      await f();
      return true;
    } catch (e) {
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) onRejected(e.message);
      setDashError(e instanceof Error ? e.message : String(e));
      return false;
    } finally {
      setDashBusy(false);
    }
  };

  const upsert = (d: Dashboard) =>
    setDashboards((list) =>
      [...(list ?? []).filter((x) => x.id !== d.id), { ...d, widgets: sanitize(d.widgets) }].sort((a, b) =>
        a.name.localeCompare(b.name),
      ),
    );

  const onCreate = (name: string) =>
    run(async () => {
      const d = await client.createDashboard({ name, widgets });
      upsert(d);
      select(d.id);
    });

  const onRename = (name: string) =>
    run(async () => {
      if (!current) return;
      upsert(await client.updateDashboard(current.id, { name, widgets: current.widgets }));
    });

  const onDelete = () =>
    run(async () => {
      if (!current) return;
      await client.deleteDashboard(current.id);
      setDashboards((list) => (list ?? []).filter((d) => d.id !== current.id));
      select(OVERVIEW_ID);
    });

  const saveLayout = async () => {
    if (!current || !draft) return;
    const errors = validate(current.name, draft);
    setSaveErrors(errors);
    if (errors.length) return;
    // Saved with no holes: every widget as high as it goes.
    const ok = await run(async () => {
      upsert(await client.updateDashboard(current.id, { name: current.name, widgets: compact(draft) }));
    });
    if (ok) setDraft(null);
  };

  // The trend widgets of the dashboard shown keep their trends current (slot `widget:<id>`).
  const trendWidgets = widgets.filter((w) => w.kind === 'trend' && w.trend);
  const trendKey = JSON.stringify(trendWidgets.map((w) => [w.id, w.trend]));
  const keptWidgets = useRef<string[]>([]);
  useEffect(() => {
    const z = tz;
    const slots = trendWidgets.map((w) => `widget:${w.id}`);
    for (const old of keptWidgets.current) if (!slots.includes(old)) dropTrend(old);
    keptWidgets.current = slots;
    for (const w of trendWidgets) {
      const t = w.trend!;
      keepTrend(`widget:${w.id}`, () => widgetTrendParams(t, z, env.now()));
    }
  }, [client, tz, trendKey]);

  /** The trends panel's question as a trend widget of the dashboard shown (saved at once). */
  const [addState, setAddState] = useState<string | null>(null);
  const addTrendToDashboard = () => {
    const t = widgetTrend(query);
    if (!current || !t) return;
    setAddState(null);
    void run(async () => {
      const next = addTrendWidget(current.widgets, t, trendTitle(query));
      if (next.length === current.widgets.length) throw new Error(`a dashboard holds at most ${MAX_WIDGETS} widgets`);
      upsert(await client.updateDashboard(current.id, { name: current.name, widgets: next }));
      setAddState(`Added to ${current.name}`);
    });
  };

  const toggleAlerts = () => {
    const open = !alertsOpen;
    setAlertsOpen(open);
    try {
      env.local.setItem(alertsKey, open ? 'open' : 'closed');
    } catch {
      /* ignored */
    }
  };

  const makeDefaultZone = (zone: string) => {
    setTzBusy(true);
    setTzMessage(null);
    client
      .putSettings(zone)
      .then((s) => {
        setOrgZone(s.time_zone);
        setTzMessage(`${zoneLabel(s.time_zone)} is now the org's default zone.`);
      })
      .catch((e: unknown) => setTzMessage(`Not saved: ${e instanceof Error ? e.message : String(e)}`))
      .finally(() => setTzBusy(false));
  };

  const offline = status.state !== 'open';
  const knownEventNames = useMemo(() => {
    const names = new Set<string>();
    for (const e of state.view?.topEvents?.events ?? []) names.add(e.event_name);
    for (const e of state.recent) names.add(e.event_name);
    return [...names].slice(0, 12);
  }, [state.view?.topEvents, state.recent]);
  const editing = draft !== null;
  const firing = alerts.banners.filter((b) => b.status === 'firing').length;
  return (
    <div class="page">
      <a class="skip" href="#main">
        Skip to the dashboard
      </a>
      <AlertBanners banners={alerts.banners} now={now} onDismiss={(key) => dispatchAlert({ type: 'dismiss', key })} />
      <header class="topbar">
        <div class="brand">
          <h1>streamtally</h1>
          <span class="muted org" title="Org id">
            {session.org}
          </span>
        </div>
        <ConnectionStatus
          status={status}
          lag={state.lag}
          now={now}
          lastMessageAt={state.lastMessageAt}
          onRetry={() => conn.current?.retryNow()}
        />
        <button
          type="button"
          class="secondary"
          data-testid="alerts-toggle"
          aria-expanded={alertsOpen}
          aria-controls="alerts-panel"
          onClick={toggleAlerts}
        >
          Alerts{firing > 0 && <span class="alert-count"> ({firing} firing)</span>}
        </button>
        <button type="button" class="secondary" data-testid="sign-out" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      <div class="controls" role="region" aria-label="Range, filters, dashboard and time zone">
        <Toolbar spec={spec} suggestions={eventTypeSuggestions(state)} now={now} zone={zone} onChange={setSpec} />
        <PageFilters filter={pageFilter} onChange={setPageFilter} error={hasPageFilter(pageFilter) ? (zoned?.error ?? null) : null} />
        <DashboardControls
          dashboards={dashboards}
          loadError={dashError}
          selected={current ? selected : OVERVIEW_ID}
          editing={editing}
          busy={dashBusy}
          onSelect={select}
          onCreate={onCreate}
          onRename={onRename}
          onDelete={onDelete}
          onEdit={() => current && setDraft(current.widgets)}
        />
        <TimeZoneControl tz={tz} orgZone={orgZone} busy={tzBusy} message={tzMessage} onChange={setTz} onMakeDefault={makeDefaultZone} />
      </div>
      {editing && (
        <div class="edit-bar card" role="region" aria-label="Layout editing">
          <p>
            Editing the layout of <strong>{current?.name}</strong>. Drag a widget onto another to take its place, or move and resize it with its buttons; the layout is saved with no gaps.
          </p>
          <div class="button-row">
            <button type="button" onClick={() => void saveLayout()} disabled={dashBusy} data-testid="layout-save">
              Save layout
            </button>
            <button
              type="button"
              class="secondary"
              onClick={() => {
                setDraft(null);
                setSaveErrors([]);
              }}
            >
              Cancel
            </button>
          </div>
          {saveErrors.length > 0 && (
            <ul class="error" role="alert">
              {saveErrors.map((e) => (
                <li key={e}>{e}</li>
              ))}
            </ul>
          )}
        </div>
      )}
      {alertsOpen && tokenOk && (
        <div id="alerts-panel" class="alerts-wrap">
          <AlertsPanel
            client={client}
            now={now}
            received={alerts.received}
            history={alerts.history}
            onHistory={(firings) => dispatchAlert({ type: 'history', firings })}
            onRejected={onRejected}
            zone={zone}
          />
        </div>
      )}
      {state.serverError && (
        <p class="error banner" role="alert">
          The gateway answered: {state.serverError}
        </p>
      )}
      {offline && state.lastMessageAt !== null && (
        <p class="stale-note banner" data-testid="stale-note" role="status">
          Not live: the numbers below are from before the connection was lost.
        </p>
      )}
      <main id="main" tabIndex={-1} class={offline && state.lastMessageAt !== null ? 'stale' : undefined} data-stale={offline && state.lastMessageAt !== null ? 'true' : 'false'}>
        <WidgetGrid
          widgets={widgets}
          state={state}
          spec={spec}
          now={now}
          editing={editing}
          onChange={setDraft}
          perMinute={trends.realtime ?? emptySlot}
          offline={offline}
          loadEvents={loadEvents}
          trendSlots={trends}
          zone={zone}
          zoned={zoned}
          pageFilter={pageFilter}
        />
        {!(spec.range === '1h' && widgets.some((w) => w.kind === 'line')) && (
          <RealtimeChart slot={trends.realtime ?? emptySlot} offline={offline} eventType={eventType} />
        )}
        <TrendsPanel
          query={query}
          slot={trends.panel ?? emptySlot}
          offline={offline}
          eventNames={knownEventNames}
          onQuery={setQuery}
          zone={zone}
          onAddToDashboard={current && !editing ? addTrendToDashboard : undefined}
          addState={addState}
        />
      </main>
    </div>
  );
}
