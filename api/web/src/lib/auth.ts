// Bearer-token session: the token lives in sessionStorage (gone when the tab closes).
const KEY = "medsearch.token";

type Listener = (token: string | null) => void;
const listeners = new Set<Listener>();

function storage(): Storage | null {
  try {
    return typeof sessionStorage === "undefined" ? null : sessionStorage;
  } catch {
    return null; // storage disabled by the browser: the session lives in memory only
  }
}

let memoryToken: string | null = null;

export function getToken(): string | null {
  return storage()?.getItem(KEY) ?? memoryToken;
}

export function setToken(token: string | null): void {
  const s = storage();
  memoryToken = token;
  if (s) {
    if (token) s.setItem(KEY, token);
    else s.removeItem(KEY);
  }
  for (const l of listeners) l(token);
}

export function onTokenChange(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** Accept "Bearer xyz" pasted from docs as well as the bare token; reject whitespace inside. */
export function normaliseToken(raw: string): string | null {
  const t = raw.trim().replace(/^bearer\s+/i, "").trim();
  if (!t || /\s/.test(t)) return null;
  return t;
}
