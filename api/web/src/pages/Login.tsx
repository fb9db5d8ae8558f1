import { useEffect, useId, useRef, useState } from "react";
import type { AuthConfig } from "../api/types";
import { normaliseToken } from "../lib/auth";
import { startLogin } from "../lib/oidc";

export function Login({
  message,
  authConfig,
  onSubmit,
}: {
  message: string | null;
  authConfig: AuthConfig | null;
  onSubmit: (token: string) => Promise<void>;
}) {
  const [value, setValue] = useState("");
  const [show, setShow] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const id = useId();
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => input.current?.focus(), []);
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    const token = normaliseToken(value);
    if (!token) {
      setError("Paste the token printed by `medsearch token` (one word, no spaces).");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await onSubmit(token);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  const tokenLogin = authConfig?.tokenLogin ?? true;
  return (
    <div className="login">
      <div className="panel">
        <h1>Sign in to medsearch</h1>
        {message && (
          <p className="state error" role="alert" style={{ padding: "0.6rem 0.8rem" }}>
            {message}
          </p>
        )}
        {authConfig?.oidc && (
          <>
            <button
              type="button"
              className="primary"
              style={{ width: "100%", justifyContent: "center" }}
              disabled={busy}
              onClick={() => {
                const oidc = authConfig.oidc;
                if (!oidc) return;
                setBusy(true);
                startLogin(oidc).catch((e: unknown) => {
                  setBusy(false);
                  setError(e instanceof Error ? e.message : String(e));
                });
              }}
            >
              Sign in with your organisation
            </button>
            {tokenLogin && <p className="or">or use an API token</p>}
          </>
        )}
        {tokenLogin && (
          <form onSubmit={submit} noValidate>
            <div className="field">
              <label htmlFor={`${id}-token`}>API token</label>
              <input
                ref={input}
                id={`${id}-token`}
                name="token"
                type={show ? "text" : "password"}
                autoComplete="off"
                spellCheck={false}
                value={value}
                aria-invalid={error ? true : undefined}
                aria-describedby={`${id}-help${error ? ` ${id}-err` : ""}`}
                onChange={(e) => setValue(e.target.value)}
              />
              <p id={`${id}-help`} className="hint">
                Run <code>medsearch token</code> for the local stack's token. It is kept for this browser tab only.
              </p>
              {error && (
                <p id={`${id}-err`} role="alert" style={{ color: "var(--neg)" }}>
                  {error}
                </p>
              )}
            </div>
            <div style={{ display: "flex", gap: "0.6rem", alignItems: "center" }}>
              <button type="submit" className="primary" disabled={busy || !value.trim()}>
                {busy ? <span className="spinner" aria-hidden="true" /> : null}
                Sign in
              </button>
              <label style={{ fontWeight: 400, margin: 0, display: "inline-flex", gap: "0.3rem", alignItems: "center" }}>
                <input type="checkbox" checked={show} onChange={(e) => setShow(e.target.checked)} /> show token
              </label>
            </div>
          </form>
        )}
      </div>
    </div>
  );
}
