// Every GraphQL document the web client sends (schema: api/schema.graphql) and the mapping of the answers
// onto ./types. Only this file knows the gateway's field names.
import { assertionFromTraits } from "../lib/highlight";
import { getToken } from "../lib/auth";
import { ApiError, graphql } from "../lib/graphql";
import type { SearchState } from "../lib/searchState";
import type {
  AuthConfig,
  Code,
  Entity,
  Facet,
  ImageDetail,
  ImageSummary,
  OidcConfig,
  ReportDetail,
  ReportSummary,
  SearchResult,
  SimilarResult,
} from "./types";

export interface SimilarQuery {
  imageId?: string;
  file?: File;
  nonce?: number;
}

// ---- GraphQL answer shapes (as selected below) ----

interface GqlCode {
  code: string;
  description: string;
}
interface GqlImage {
  id: string;
  studyUid: string | null;
  seriesUid: string | null;
  reportId: string | null;
  modality: string;
  viewPosition: string;
  bodyPart: string;
  laterality: string;
  rows: number;
  columns: number;
  studyDate: string | null;
  thumbnailUrl: string | null;
}
interface GqlImageDetail extends GqlImage {
  frames: number;
  photometric: string;
  transferSyntax: string;
  modelName: string;
  modelVersion: string;
  indexedAt: string | null;
}
interface GqlReport {
  id: string;
  studyUid: string | null;
  impression: string;
  findings: string;
  reportDate: string | null;
  icd10Positive: GqlCode[];
  icd10Negative: GqlCode[];
  icd10Uncertain: GqlCode[];
}
interface GqlEntity {
  text: string;
  start: number | null;
  end: number | null;
  category: string | null;
  type: string | null;
  section: string | null;
  traits: { name: string }[];
  icd10: GqlCode[];
}
interface GqlReportDetail extends GqlReport {
  text: string;
  indication: string;
  entities: GqlEntity[];
}

const IMAGE_FIELDS = `
  id studyUid seriesUid reportId modality viewPosition bodyPart laterality rows columns studyDate thumbnailUrl`;
const REPORT_FIELDS = `
  id studyUid impression findings reportDate
  icd10Positive { code description } icd10Negative { code description } icd10Uncertain { code description }`;

// ---- mapping ----

const codes = (list: GqlCode[] | null | undefined): Code[] => (list ?? []).map((c) => ({ code: c.code, description: c.description }));

export function toImage(g: GqlImage): ImageSummary {
  rememberOptions(g);
  return {
    id: g.id,
    studyUid: g.studyUid ?? "",
    seriesUid: g.seriesUid ?? "",
    reportId: g.reportId ?? "",
    modality: g.modality,
    viewPosition: g.viewPosition,
    bodyPart: g.bodyPart,
    laterality: g.laterality,
    rows: g.rows || null,
    columns: g.columns || null,
    studyDate: g.studyDate ?? "",
    thumbnailUrl: g.thumbnailUrl ?? "",
  };
}

export function toReport(g: GqlReport): ReportSummary {
  return {
    id: g.id,
    studyUid: g.studyUid ?? "",
    impression: g.impression,
    findings: g.findings,
    reportDate: g.reportDate ?? "",
    positive: codes(g.icd10Positive),
    negative: codes(g.icd10Negative),
    uncertain: codes(g.icd10Uncertain),
  };
}

export function toEntity(g: GqlEntity): Entity | null {
  if (g.start === null || g.end === null) return null;
  return {
    text: g.text,
    start: g.start,
    end: g.end,
    category: g.category ?? g.type ?? "",
    assertion: assertionFromTraits(g.traits),
    section: g.section ?? "",
    codes: codes(g.icd10),
  };
}

// ---- auth ----

/**
 * Optional deploy-time configuration next to index.html (config.json), e.g.
 * {"oidc": {"issuer": "https://idp.example", "clientId": "medsearch-web", "scope": "openid profile"}}.
 */
export interface WebConfig {
  oidc?: OidcConfig;
}

export async function fetchWebConfig(signal?: AbortSignal): Promise<WebConfig> {
  try {
    const r = await fetch("config.json", { signal, headers: { Accept: "application/json" } });
    if (!r.ok || !(r.headers.get("content-type") ?? "").includes("json")) return {};
    const body: unknown = await r.json();
    return body && typeof body === "object" ? (body as WebConfig) : {};
  } catch {
    return {};
  }
}

export async function fetchAuthConfig(signal?: AbortSignal): Promise<AuthConfig> {
  const config = await fetchWebConfig(signal);
  return { oidc: config.oidc?.issuer && config.oidc.clientId ? config.oidc : null, tokenLogin: true };
}

/** Resolves when the gateway accepts `token` (rejects with ApiError kind "auth" otherwise). */
export async function checkToken(token: string, signal?: AbortSignal): Promise<void> {
  await graphql<{ __typename: string }>("query Ping { __typename }", {}, { signal, token });
}

// ---- search ----

/** The ReportFilter of the search state. The same filter goes to searchReports and to both icd10Facets. */
export function reportFilter(state: SearchState): Record<string, unknown> | null {
  const f: Record<string, unknown> = {};
  const pos = state.codes.filter((c) => c.polarity === "positive").map((c) => c.code);
  const neg = state.codes.filter((c) => c.polarity === "negative").map((c) => c.code);
  if (pos.length) f.positiveCodes = pos;
  if (neg.length) f.negativeCodes = neg;
  if (state.modality) f.modality = [state.modality];
  if (state.viewPosition) f.viewPosition = [state.viewPosition];
  if (state.dateFrom) f.dateFrom = state.dateFrom;
  if (state.dateTo) f.dateTo = state.dateTo;
  return Object.keys(f).length ? f : null;
}

const SEARCH = `
query Search($query: String, $mode: SearchMode!, $filter: ReportFilter, $first: Int!, $after: String, $facets: Int!) {
  searchReports(query: $query, mode: $mode, filter: $filter, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges {
      score
      snippet(width: 220) { text highlights { start end } }
      node { ${REPORT_FIELDS} images { ${IMAGE_FIELDS} } }
    }
  }
  positive: icd10Facets(query: $query, filter: $filter, polarity: POSITIVE, size: $facets) { code description count }
  negative: icd10Facets(query: $query, filter: $filter, polarity: NEGATIVE, size: $facets) { code description count }
}`;

const SKIP = `
query Skip($query: String, $mode: SearchMode!, $filter: ReportFilter, $first: Int!, $after: String) {
  searchReports(query: $query, mode: $mode, filter: $filter, first: $first, after: $after) {
    pageInfo { hasNextPage endCursor }
  }
}`;

interface SearchAnswer {
  searchReports: {
    totalCount: number;
    pageInfo: { hasNextPage: boolean; endCursor: string | null };
    edges: {
      score: number | null;
      snippet: { text: string; highlights: { start: number; end: number }[] };
      node: GqlReport & { images: GqlImage[] };
    }[];
  };
  positive: Facet[];
  negative: Facet[];
}

const MAX_FIRST = 100; // the gateway's MEDSEARCH_MAX_FIRST default
const FACET_SIZE = 12;

/**
 * Cursors are opaque, but pages are numbered in the URL: remember the `after` cursor that starts each page of
 * a query, and walk forward with cheap page-info-only requests when the user jumps ahead.
 */
const pageCursors = new Map<string, Map<number, string | null>>();

function cursorKey(state: SearchState): string {
  return JSON.stringify([state.q, state.mode, reportFilter(state), state.pageSize]);
}

async function cursorForPage(state: SearchState, vars: Record<string, unknown>, signal?: AbortSignal): Promise<string | null> {
  if (state.page <= 1) return null;
  const key = cursorKey(state);
  const known = pageCursors.get(key) ?? new Map<number, string | null>([[1, null]]);
  pageCursors.set(key, known);
  const hit = known.get(state.page);
  if (hit !== undefined) return hit;
  // start from the nearest known page before the target
  let page = Math.max(...[...known.keys()].filter((p) => p < state.page));
  let after = known.get(page) ?? null;
  let offset = (page - 1) * state.pageSize; // items before `after`
  const target = (state.page - 1) * state.pageSize;
  while (offset < target) {
    const first = Math.min(MAX_FIRST, target - offset);
    const data = await graphql<{ searchReports: { pageInfo: { hasNextPage: boolean; endCursor: string | null } } }>(
      SKIP,
      { ...vars, first, after },
      { signal },
    );
    const info = data.searchReports.pageInfo;
    if (!info.endCursor) throw new Error(`There is no page ${state.page} for this search.`);
    after = info.endCursor;
    offset += first;
    if (offset % state.pageSize === 0) known.set(offset / state.pageSize + 1, after);
    // nothing after the skipped items: the target page would be empty
    if (!info.hasNextPage) throw new Error(`There is no page ${state.page} for this search.`);
    page = offset / state.pageSize + 1;
  }
  return after;
}

export async function searchReports(state: SearchState, signal?: AbortSignal): Promise<SearchResult> {
  const vars = { query: state.q || null, mode: state.mode, filter: reportFilter(state) };
  const after = await cursorForPage(state, vars, signal);
  const data = await graphql<SearchAnswer>(SEARCH, { ...vars, first: state.pageSize, after, facets: FACET_SIZE }, { signal });
  const conn = data.searchReports;
  if (conn.pageInfo.endCursor) {
    const key = cursorKey(state);
    const known = pageCursors.get(key) ?? new Map<number, string | null>([[1, null]]);
    known.set(state.page + 1, conn.pageInfo.endCursor);
    pageCursors.set(key, known);
  }
  const filtered = Boolean(reportFilter(state));
  return {
    total: conn.totalCount,
    hasMore: conn.pageInfo.hasNextPage,
    hits: conn.edges.map((e) => ({
      score: e.score,
      report: toReport(e.node),
      images: e.node.images.map(toImage),
      snippet: e.snippet,
    })),
    positiveFacets: data.positive,
    negativeFacets: data.negative,
    facetScope: state.q
      ? `Counts over the reports that contain a query term${filtered ? " and pass the filters" : ""}.`
      : `Counts over ${filtered ? "the reports that pass the filters" : "all reports"}.`,
  };
}

// ---- image page ----

const IMAGE = `
query Image($id: ID!) {
  image(id: $id) {
    ${IMAGE_FIELDS} frames photometric transferSyntax modelName modelVersion indexedAt
    report {
      ${REPORT_FIELDS} text indication
      entities { text start end category type section traits { name } icd10 { code description } }
    }
  }
}`;

export class NotFound extends Error {}

export async function fetchImage(id: string, signal?: AbortSignal): Promise<{ image: ImageDetail; report: ReportDetail | null }> {
  const data = await graphql<{ image: (GqlImageDetail & { report: GqlReportDetail | null }) | null }>(IMAGE, { id }, { signal });
  const g = data.image;
  if (!g) throw new NotFound(`No indexed image has the id ${id}.`);
  const image: ImageDetail = {
    ...toImage(g),
    frames: g.frames || null,
    photometric: g.photometric,
    transferSyntax: g.transferSyntax,
    modelName: g.modelName,
    modelVersion: g.modelVersion,
    patientId: "",
    patientName: "",
    indexedAt: g.indexedAt ? g.indexedAt.replace("T", " ").replace(/\.\d+/, "").replace(/\+00:00$|Z$/, " UTC") : "",
  };
  const r = g.report;
  const report: ReportDetail | null = r
    ? {
        ...toReport(r),
        text: r.text,
        indication: r.indication,
        entities: r.entities.map(toEntity).filter((e): e is Entity => e !== null),
      }
    : null;
  return { image, report };
}

// ---- similar images ----

const SIMILAR = `
query Similar($imageId: ID, $upload: Upload, $k: Int!, $filter: ImageFilter) {
  similarImages(imageId: $imageId, upload: $upload, k: $k, filter: $filter) {
    score
    image { ${IMAGE_FIELDS} }
  }
}`;

export async function similarImages(
  q: SimilarQuery & { k: number; modality: string; viewPosition: string },
  signal?: AbortSignal,
): Promise<SimilarResult> {
  const filter: Record<string, unknown> = {};
  if (q.modality) filter.modality = [q.modality];
  if (q.viewPosition) filter.viewPosition = [q.viewPosition];
  const vars = { imageId: q.imageId ?? null, upload: null, k: q.k, filter: Object.keys(filter).length ? filter : null };
  const data = await graphql<{ similarImages: { score: number; image: GqlImage }[] }>(SIMILAR, vars, {
    signal,
    files: q.file ? { upload: q.file } : undefined,
  });
  return {
    hits: data.similarImages.map((h) => ({ score: h.score, image: toImage(h.image) })),
    queryInfo: q.file ? `Nearest ${q.k} images to ${q.file.name} (cosine similarity of DenseNet121 embeddings).` : "",
  };
}

// ---- filter options ----

// The schema has no image facets: offer the usual radiograph values plus every value seen in answers.
const seen = { modalities: new Set(["CR", "DX", "CT", "MR", "US"]), viewPositions: new Set(["PA", "AP", "LL", "RL", "LATERAL"]) };

function rememberOptions(g: { modality: string; viewPosition: string }): void {
  if (g.modality) seen.modalities.add(g.modality);
  if (g.viewPosition) seen.viewPositions.add(g.viewPosition);
}

export async function fetchFilterOptions(signal?: AbortSignal): Promise<{ modalities: string[]; viewPositions: string[] }> {
  void signal;
  return { modalities: [...seen.modalities].sort(), viewPositions: [...seen.viewPositions].sort() };
}

// ---- gateway settings and DICOMweb (WADO-RS) ----

export interface WebSettings {
  viewerUrlTemplate: string;
  dicomwebRoot: string;
}

let settingsPromise: Promise<WebSettings> | null = null;

/** The gateway's web settings (GET web-settings.json: the viewer link template); fetched once per page load. */
export function fetchWebSettings(): Promise<WebSettings> {
  settingsPromise ??= fetch("web-settings.json", { headers: { Accept: "application/json" } })
    .then(async (r) => {
      if (!r.ok) return { viewerUrlTemplate: "", dicomwebRoot: "dicomweb" };
      const b = (await r.json()) as Partial<WebSettings>;
      return { viewerUrlTemplate: b.viewerUrlTemplate ?? "", dicomwebRoot: b.dicomwebRoot ?? "dicomweb" };
    })
    .catch(() => ({ viewerUrlTemplate: "", dicomwebRoot: "dicomweb" }));
  return settingsPromise;
}

async function dicomweb(url: string, accept: string, signal?: AbortSignal): Promise<Response> {
  const token = getToken();
  const headers: Record<string, string> = { Accept: accept };
  if (token) headers.Authorization = `Bearer ${token}`;
  let r: Response;
  try {
    r = await fetch(url, { headers, signal, credentials: "same-origin" });
  } catch (e) {
    if (e instanceof DOMException && e.name === "AbortError") throw new ApiError("aborted", "request cancelled");
    throw new ApiError("network", "Cannot reach the medsearch gateway.");
  }
  if (r.status === 401) throw new ApiError("auth", "The server did not accept the token.", 401);
  if (!r.ok) {
    const body = (await r.json().catch(() => null)) as { errors?: { message: string }[] } | null;
    throw new ApiError(r.status === 403 ? "forbidden" : "http", body?.errors?.[0]?.message ?? `The gateway answered ${r.status}.`, r.status);
  }
  return r;
}

/** A WADO-RS rendered frame as a blob (the Authorization header cannot ride on an <img src>). */
export async function fetchRendered(url: string, signal?: AbortSignal): Promise<Blob> {
  const r = await dicomweb(url, "image/jpeg", signal);
  return r.blob();
}

export async function fetchInstanceMetadata(
  uids: { study: string; series: string; instance: string },
  signal?: AbortSignal,
): Promise<Record<string, { Value?: unknown[] }>> {
  const e = encodeURIComponent;
  const r = await dicomweb(
    `dicomweb/studies/${e(uids.study)}/series/${e(uids.series)}/instances/${e(uids.instance)}/metadata`,
    "application/dicom+json",
    signal,
  );
  const body = (await r.json()) as Record<string, { Value?: unknown[] }>[];
  return body[0] ?? {};
}
