// Sign-in state: the token lives in sessionStorage (per tab, gone with the tab), never in the
// URL after load; the last org id used lives in localStorage to prefill the form.

import type { Session } from './api';

export const SESSION_KEY = 'streamtally.session';
export const LAST_ORG_KEY = 'streamtally.lastOrg';

export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface AuthEnv {
  href: string;
  session: StorageLike;
  local: StorageLike;
  replaceUrl: (url: string) => void;
}

export interface InitialAuth {
  /** Credentials to connect with right away, if any. */
  session: Session | null;
  /** Prefill for the sign-in form. */
  org: string;
  token: string;
}

function safeGet(s: StorageLike, key: string): string | null {
  try {
    return s.getItem(key);
  } catch {
    return null;
  }
}

function safeSet(s: StorageLike, key: string, value: string): void {
  try {
    s.setItem(key, value);
  } catch {
    /* storage disabled: the session lasts as long as the page */
  }
}

export function loadSession(s: StorageLike): Session | null {
  const raw = safeGet(s, SESSION_KEY);
  if (!raw) return null;
  try {
    const v = JSON.parse(raw) as Partial<Session>;
    if (typeof v.org === 'string' && v.org && typeof v.token === 'string' && v.token) {
      return { org: v.org, token: v.token };
    }
  } catch {
    /* ignored */
  }
  return null;
}

export function saveSession(env: Pick<AuthEnv, 'session' | 'local'>, session: Session): void {
  safeSet(env.session, SESSION_KEY, JSON.stringify(session));
  safeSet(env.local, LAST_ORG_KEY, session.org);
}

export function clearSession(env: Pick<AuthEnv, 'session'>): void {
  try {
    env.session.removeItem(SESSION_KEY);
  } catch {
    /* ignored */
  }
}

/**
 * Reads ?token= and ?org= on load. A token in the URL is taken (and stored in sessionStorage
 * when the org is known) and removed from the address bar with history.replaceState.
 */
export function initialAuth(env: AuthEnv): InitialAuth {
  const url = new URL(env.href);
  const urlToken = url.searchParams.get('token');
  const urlOrg = url.searchParams.get('org')?.trim() || null;
  if (url.searchParams.has('token')) {
    url.searchParams.delete('token');
    env.replaceUrl(url.pathname + (url.search === '?' ? '' : url.search) + url.hash);
  }
  const lastOrg = safeGet(env.local, LAST_ORG_KEY) || '';
  const stored = loadSession(env.session);
  const org = urlOrg ?? stored?.org ?? lastOrg;
  if (urlToken) {
    if (org) {
      const session = { org, token: urlToken };
      saveSession(env, session);
      return { session, org, token: urlToken };
    }
    return { session: null, org: '', token: urlToken };
  }
  if (stored && (!urlOrg || urlOrg === stored.org)) return { session: stored, org: stored.org, token: stored.token };
  return { session: null, org, token: '' };
}
