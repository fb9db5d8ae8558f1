// Minimal GraphQL client: JSON POSTs to /graphql, and multipart requests (GraphQL multipart request
// spec: "operations", "map", then one form part per file) for uploads.
import { getToken } from "./auth";

export type ErrorKind = "auth" | "forbidden" | "network" | "http" | "graphql" | "aborted";

export class ApiError extends Error {
  readonly kind: ErrorKind;
  readonly status: number | undefined;
  readonly code: string | undefined;
  constructor(kind: ErrorKind, message: string, status?: number, code?: string) {
    super(message);
    this.name = "ApiError";
    this.kind = kind;
    this.status = status;
    this.code = code;
  }
}

export const GRAPHQL_PATH = "graphql";

export interface GraphQLErrorItem {
  message: string;
  path?: (string | number)[];
  extensions?: { code?: string; [k: string]: unknown };
}

export interface RequestOptions {
  signal?: AbortSignal;
  /** Files by variable path, e.g. {"upload": file} puts the file in variables.upload. */
  files?: Record<string, Blob>;
  /** Use this token instead of the session's (to check a token before keeping it). */
  token?: string;
}

let unauthorizedHandler: ((message: string) => void) | null = null;
/** Called once per 401 answer (the app drops the token and shows the login form). */
export function onUnauthorized(handler: (message: string) => void): void {
  unauthorizedHandler = handler;
}

function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split(".");
  let node: Record<string, unknown> = target;
  keys.slice(0, -1).forEach((k) => {
    if (typeof node[k] !== "object" || node[k] === null) node[k] = {};
    node = node[k] as Record<string, unknown>;
  });
  node[keys[keys.length - 1] as string] = value;
}

/** Build the multipart body of the GraphQL multipart request spec (exported for tests). */
export function multipartBody(
  query: string,
  variables: Record<string, unknown>,
  files: Record<string, Blob>,
): FormData {
  const vars: Record<string, unknown> = structuredClone(variables);
  const map: Record<string, string[]> = {};
  const entries = Object.entries(files);
  entries.forEach(([path], i) => {
    setPath(vars, path, null);
    map[String(i)] = [`variables.${path}`];
  });
  const form = new FormData();
  form.append("operations", JSON.stringify({ query, variables: vars }));
  form.append("map", JSON.stringify(map));
  entries.forEach(([, blob], i) => {
    const name = blob instanceof File ? blob.name : `upload-${i}`;
    form.append(String(i), blob, name);
  });
  return form;
}

export function errorMessage(errors: GraphQLErrorItem[]): string {
  return errors
    .map((e) => e.message)
    .filter((m, i, all) => all.indexOf(m) === i)
    .join("; ");
}

export async function graphql<T>(
  query: string,
  variables: Record<string, unknown> = {},
  options: RequestOptions = {},
): Promise<T> {
  const token = options.token ?? getToken();
  const headers: Record<string, string> = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let body: BodyInit;
  if (options.files && Object.keys(options.files).length > 0) {
    body = multipartBody(query, variables, options.files);
    // Strawberry (like Apollo) refuses multipart requests without a preflight-forcing header (CSRF guard).
    headers["Apollo-Require-Preflight"] = "true";
  } else {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify({ query, variables });
  }
  let response: Response;
  try {
    response = await fetch(GRAPHQL_PATH, { method: "POST", headers, body, signal: options.signal, credentials: "same-origin" });
  } catch (e) {
    if (e instanceof DOMException && e.name === "AbortError") throw new ApiError("aborted", "request cancelled");
    throw new ApiError("network", "Cannot reach the medsearch gateway. Check your connection and that the server is running.");
  }
  let payload: { data?: T | null; errors?: GraphQLErrorItem[] } | null = null;
  const text = await response.text();
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = null;
  }
  if (response.status === 401) {
    const msg = payload?.errors ? errorMessage(payload.errors) : "The server did not accept the token.";
    if (!options.token) unauthorizedHandler?.(msg);
    throw new ApiError("auth", msg, 401);
  }
  if (response.status === 403) {
    throw new ApiError("forbidden", payload?.errors ? errorMessage(payload.errors) : "This token may not do that.", 403);
  }
  if (payload?.errors?.length) {
    const first = payload.errors[0];
    const code = first?.extensions?.code;
    if (code === "UNAUTHENTICATED") {
      if (!options.token) unauthorizedHandler?.(errorMessage(payload.errors));
      throw new ApiError("auth", errorMessage(payload.errors), response.status, code);
    }
    throw new ApiError(code === "FORBIDDEN" ? "forbidden" : "graphql", errorMessage(payload.errors), response.status, code);
  }
  if (!response.ok || !payload || payload.data == null) {
    const detail = text && text.length < 300 && !text.trimStart().startsWith("<") ? `: ${text}` : "";
    throw new ApiError("http", `The gateway answered ${response.status} ${response.statusText}${detail}`, response.status);
  }
  return payload.data;
}
