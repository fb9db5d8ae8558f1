// The search page's state lives in the URL (shareable, back/forward work).

export type SearchMode = "KEYWORD" | "SEMANTIC" | "HYBRID";
export const SEARCH_MODES: readonly SearchMode[] = ["KEYWORD", "SEMANTIC", "HYBRID"];
export type Polarity = "positive" | "negative";

export interface CodeFilter {
  code: string;
  polarity: Polarity;
}

export interface SearchState {
  q: string;
  mode: SearchMode;
  modality: string;
  viewPosition: string;
  codes: CodeFilter[];
  /** Report date range, inclusive: "" (open) or "YYYY-MM-DD". */
  dateFrom: string;
  dateTo: string;
  page: number; // 1-based
  pageSize: number;
}

export const PAGE_SIZES = [10, 20, 50] as const;
export const DEFAULT_STATE: SearchState = {
  q: "",
  mode: "HYBRID",
  modality: "",
  viewPosition: "",
  codes: [],
  dateFrom: "",
  dateTo: "",
  page: 1,
  pageSize: 10,
};

/** ICD-10-CM: a letter, two alphanumerics, then optionally a dot and up to 4 more characters. */
const ICD10 = /^[A-TV-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$/;

export function normaliseCode(raw: string): string | null {
  let c = raw.trim().toUpperCase().replace(/\s+/g, "");
  if (/^[A-Z][0-9][0-9A-Z][0-9A-Z]{1,4}$/.test(c)) c = `${c.slice(0, 3)}.${c.slice(3)}`; // J918 -> J91.8
  return ICD10.test(c) ? c : null;
}

/** A real calendar date written "YYYY-MM-DD" (year 1000-9999), or null. */
export function normaliseDate(raw: string | null): string | null {
  const v = (raw ?? "").trim();
  const m = /^([1-9]\d{3})-(\d{2})-(\d{2})$/.exec(v);
  if (!m) return null;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const t = new Date(Date.UTC(y, mo - 1, d));
  return t.getUTCFullYear() === y && t.getUTCMonth() === mo - 1 && t.getUTCDate() === d ? v : null;
}

/** Both ends set and the start after the end (ISO dates compare as strings). */
export function dateRangeInverted(state: Pick<SearchState, "dateFrom" | "dateTo">): boolean {
  return Boolean(state.dateFrom && state.dateTo && state.dateFrom > state.dateTo);
}

/** The state without any filter (query, mode and page size kept), on page 1. */
export function clearFilters(state: SearchState): SearchState {
  return { ...state, modality: "", viewPosition: "", codes: [], dateFrom: "", dateTo: "", page: 1 };
}

export function filtersActive(state: SearchState): boolean {
  return Boolean(state.modality || state.viewPosition || state.codes.length || state.dateFrom || state.dateTo);
}

function intParam(v: string | null, fallback: number, min: number, max: number): number {
  const n = v === null ? NaN : Number.parseInt(v, 10);
  return Number.isFinite(n) ? Math.min(max, Math.max(min, n)) : fallback;
}

export function parseSearchState(params: URLSearchParams): SearchState {
  const mode = (params.get("mode") ?? "").toUpperCase();
  const codes: CodeFilter[] = [];
  for (const [key, polarity] of [["pos", "positive"], ["neg", "negative"]] as const) {
    for (const raw of params.getAll(key).flatMap((v) => v.split(","))) {
      const code = normaliseCode(raw);
      if (code && !codes.some((c) => c.code === code && c.polarity === polarity)) codes.push({ code, polarity });
    }
  }
  const size = intParam(params.get("size"), DEFAULT_STATE.pageSize, 1, 100);
  return {
    q: params.get("q") ?? "",
    mode: (SEARCH_MODES as readonly string[]).includes(mode) ? (mode as SearchMode) : DEFAULT_STATE.mode,
    modality: params.get("modality") ?? "",
    viewPosition: params.get("view") ?? "",
    codes,
    dateFrom: normaliseDate(params.get("from")) ?? "",
    dateTo: normaliseDate(params.get("to")) ?? "",
    page: intParam(params.get("page"), 1, 1, 10_000),
    pageSize: (PAGE_SIZES as readonly number[]).includes(size) ? size : DEFAULT_STATE.pageSize,
  };
}

export function toParams(state: SearchState): URLSearchParams {
  const p = new URLSearchParams();
  if (state.q) p.set("q", state.q);
  if (state.mode !== DEFAULT_STATE.mode) p.set("mode", state.mode.toLowerCase());
  if (state.modality) p.set("modality", state.modality);
  if (state.viewPosition) p.set("view", state.viewPosition);
  const pos = state.codes.filter((c) => c.polarity === "positive").map((c) => c.code);
  const neg = state.codes.filter((c) => c.polarity === "negative").map((c) => c.code);
  if (pos.length) p.set("pos", pos.join(","));
  if (neg.length) p.set("neg", neg.join(","));
  if (state.dateFrom) p.set("from", state.dateFrom);
  if (state.dateTo) p.set("to", state.dateTo);
  if (state.page > 1) p.set("page", String(state.page));
  if (state.pageSize !== DEFAULT_STATE.pageSize) p.set("size", String(state.pageSize));
  return p;
}

/** Add a code filter (a facet click); toggles it off when the same chip is already there. Resets to page 1. */
export function toggleCode(state: SearchState, code: string, polarity: Polarity): SearchState {
  const has = state.codes.some((c) => c.code === code && c.polarity === polarity);
  const codes = has
    ? state.codes.filter((c) => !(c.code === code && c.polarity === polarity))
    : [...state.codes.filter((c) => c.code !== code), { code, polarity }];
  return { ...state, codes, page: 1 };
}

export function pageCount(total: number, pageSize: number): number {
  return Math.max(1, Math.ceil(total / pageSize));
}

/** Page numbers to show around the current one, with null for a gap: 1 … 4 5 [6] 7 8 … 20. */
export function pageWindow(current: number, pages: number, radius = 2): (number | null)[] {
  const out: (number | null)[] = [];
  for (let p = 1; p <= pages; p++) {
    if (p === 1 || p === pages || Math.abs(p - current) <= radius) out.push(p);
    else if (out[out.length - 1] !== null) out.push(null);
  }
  return out;
}
