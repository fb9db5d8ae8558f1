// OpenID Connect sign-in: authorization code flow with PKCE (RFC 7636), for a public browser client.
// The IdP is configured at deploy time in config.json next to index.html (see docs/web.md).
import type { OidcConfig } from "../api/types";

const PENDING = "medsearch.oidc.pending";

export function base64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function randomString(bytes = 32): string {
  const a = new Uint8Array(bytes);
  crypto.getRandomValues(a);
  return base64url(a);
}

/** S256 code challenge of a verifier. */
export async function codeChallenge(verifier: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

interface Discovery {
  authorization_endpoint: string;
  token_endpoint: string;
}

async function discover(issuer: string): Promise<Discovery> {
  const url = `${issuer.replace(/\/+$/, "")}/.well-known/openid-configuration`;
  let r: Response;
  try {
    r = await fetch(url, { headers: { Accept: "application/json" } });
  } catch {
    throw new Error(`Cannot reach the identity provider at ${issuer}.`);
  }
  if (!r.ok) throw new Error(`The identity provider's discovery document (${url}) answered ${r.status}.`);
  const d = (await r.json()) as Partial<Discovery>;
  if (!d.authorization_endpoint || !d.token_endpoint) throw new Error(`${url} names no authorization or token endpoint.`);
  return d as Discovery;
}

export function redirectUri(): string {
  return `${window.location.origin}${window.location.pathname}`;
}

/** Leave for the IdP's login page. */
export async function startLogin(config: OidcConfig): Promise<void> {
  const d = await discover(config.issuer);
  const verifier = randomString(48);
  const state = randomString(16);
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state, returnTo: window.location.hash }));
  const params = new URLSearchParams({
    response_type: "code",
    client_id: config.clientId,
    redirect_uri: redirectUri(),
    scope: config.scope ?? "openid profile",
    state,
    code_challenge: await codeChallenge(verifier),
    code_challenge_method: "S256",
  });
  if (config.audience) params.set("audience", config.audience);
  window.location.assign(`${d.authorization_endpoint}?${params.toString()}`);
}

/**
 * When the page is the IdP's redirect back (?code=...&state=...), exchange the code for a token.
 * Returns null when this is not a redirect; throws with the IdP's reason when the exchange fails.
 */
export async function completeLogin(config: OidcConfig): Promise<{ token: string; returnTo: string } | null> {
  const params = new URLSearchParams(window.location.search);
  const code = params.get("code");
  const error = params.get("error");
  if (!code && !error) return null;
  const pendingRaw = sessionStorage.getItem(PENDING);
  sessionStorage.removeItem(PENDING);
  history.replaceState(null, "", `${window.location.pathname}${window.location.hash}`);
  if (error) throw new Error(`Sign-in was refused: ${params.get("error_description") ?? error}`);
  const pending = pendingRaw ? (JSON.parse(pendingRaw) as { verifier: string; state: string; returnTo: string }) : null;
  if (!pending || pending.state !== params.get("state")) throw new Error("Sign-in answer does not match this tab's request; try again.");
  const d = await discover(config.issuer);
  const r = await fetch(d.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: code as string,
      redirect_uri: redirectUri(),
      client_id: config.clientId,
      code_verifier: pending.verifier,
    }),
  });
  const body = (await r.json().catch(() => ({}))) as Record<string, string>;
  if (!r.ok) throw new Error(`The identity provider refused the sign-in: ${body.error_description ?? body.error ?? r.status}`);
  const token = body[config.token ?? "access_token"];
  if (!token) throw new Error(`The identity provider's answer has no ${config.token ?? "access_token"}.`);
  return { token, returnTo: pending.returnTo || "#/search" };
}
