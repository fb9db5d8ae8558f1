// Every GraphQL document the web client sends, and the mapping of the answers onto ./types.
// PROVISIONAL: written before api/schema.graphql existed; to be aligned with the gateway's schema.
import { graphql } from "../lib/graphql";
import type { SearchState } from "../lib/searchState";
import type { AuthConfig, ImageDetail, ReportDetail, SearchResult, SimilarResult } from "./types";

export interface Viewer {
  name: string;
  role: string;
}

export interface SimilarQuery {
  imageId?: string;
  file?: File;
  nonce?: number;
}

export async function fetchAuthConfig(signal?: AbortSignal): Promise<AuthConfig> {
  void signal;
  return { oidcLoginUrl: null, tokenLogin: true };
}

export async function checkToken(signal?: AbortSignal): Promise<Viewer> {
  void signal;
  throw new Error("not implemented");
}

export async function searchReports(state: SearchState, signal?: AbortSignal): Promise<SearchResult> {
  void state;
  void signal;
  void graphql;
  throw new Error("not implemented");
}

export async function fetchImage(id: string, signal?: AbortSignal): Promise<{ image: ImageDetail; report: ReportDetail | null }> {
  void id;
  void signal;
  throw new Error("not implemented");
}

export async function similarImages(
  q: SimilarQuery & { k: number; modality: string; viewPosition: string },
  signal?: AbortSignal,
): Promise<SimilarResult> {
  void q;
  void signal;
  throw new Error("not implemented");
}

export async function fetchFilterOptions(signal?: AbortSignal): Promise<{ modalities: string[]; viewPositions: string[] }> {
  void signal;
  return { modalities: ["CR", "DX"], viewPositions: ["PA", "AP", "LL"] };
}
