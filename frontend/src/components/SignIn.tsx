import { useState } from 'preact/hooks';

export interface SignInProps {
  org: string;
  token: string;
  error: string | null;
  busy: boolean;
  onSubmit: (org: string, token: string) => void;
}

export function SignIn({ org: org0, token: token0, error, busy, onSubmit }: SignInProps) {
  const [org, setOrg] = useState(org0);
  const [token, setToken] = useState(token0);
  const submit = (e: Event) => {
    e.preventDefault();
    if (org.trim() && token.trim()) onSubmit(org.trim(), token.trim());
  };
  return (
    <main class="signin" id="main">
      <form class="card signin-form" onSubmit={submit} aria-labelledby="signin-title">
        <h1 id="signin-title">streamtally</h1>
        <p class="muted">Sign in with your org's id and its API token.</p>
        {error && (
          <p class="error" role="alert" data-testid="signin-error" id="signin-error">
            {error}
          </p>
        )}
        <div class="field">
          <label for="signin-org">Org id</label>
          <input
            id="signin-org"
            data-testid="signin-org"
            name="org"
            required
            autoComplete="username"
            spellcheck={false}
            placeholder="7d0c7f2e-6a39-4d7e-8b1a-0c5f2d9e4a11"
            value={org}
            onInput={(e) => setOrg((e.currentTarget as HTMLInputElement).value)}
          />
        </div>
        <div class="field">
          <label for="signin-token">Token</label>
          <input
            id="signin-token"
            data-testid="signin-token"
            name="token"
            type="password"
            required
            autoComplete="current-password"
            aria-describedby={error ? 'signin-error' : undefined}
            value={token}
            onInput={(e) => setToken((e.currentTarget as HTMLInputElement).value)}
          />
        </div>
        <button type="submit" data-testid="signin-submit" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
        <p class="muted small">The token stays in this tab only (session storage) and is never put in the address.</p>
      </form>
    </main>
  );
}
