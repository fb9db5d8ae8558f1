// The UI's own model. queries.ts maps the gateway's GraphQL answers onto it, so a schema change
// touches one file.
import type { Assertion } from "../lib/highlight";

export interface Code {
  code: string;
  description: string;
}

export interface ImageSummary {
  id: string;
  studyUid: string;
  seriesUid: string;
  reportId: string;
  modality: string;
  viewPosition: string;
  bodyPart: string;
  laterality: string;
  rows: number | null;
  columns: number | null;
  studyDate: string;
  thumbnailUrl: string;
}

export interface ImageDetail extends ImageSummary {
  frames: number | null;
  photometric: string;
  transferSyntax: string;
  modelName: string;
  modelVersion: string;
  patientId: string;
  patientName: string;
  indexedAt: string;
}

export interface ReportSummary {
  id: string;
  studyUid: string;
  impression: string;
  findings: string;
  reportDate: string;
  positive: Code[];
  negative: Code[];
  uncertain: Code[];
}

export interface Entity {
  text: string;
  start: number;
  end: number;
  category: string;
  assertion: Assertion;
  section: string;
  codes: Code[];
}

export interface ReportDetail extends ReportSummary {
  text: string;
  indication: string;
  entities: Entity[];
}

export interface Snippet {
  text: string;
  highlights: { start: number; end: number }[];
}

export interface SearchHit {
  score: number | null;
  snippet: Snippet | null;
  report: ReportSummary;
  images: ImageSummary[];
}

export interface Facet {
  code: string;
  description: string;
  count: number;
}

export interface SearchResult {
  total: number | null;
  hasMore: boolean;
  hits: SearchHit[];
  positiveFacets: Facet[];
  negativeFacets: Facet[];
  facetScope: string;
}

export interface SimilarHit {
  score: number;
  image: ImageSummary;
}

export interface SimilarResult {
  hits: SimilarHit[];
  queryInfo: string;
}

export interface OidcConfig {
  issuer: string;
  clientId: string;
  scope?: string;
  audience?: string;
  /** Which token of the IdP's answer the gateway expects as bearer: "access_token" (default) or "id_token". */
  token?: "access_token" | "id_token";
}

export interface AuthConfig {
  oidc: OidcConfig | null;
  tokenLogin: boolean;
}
