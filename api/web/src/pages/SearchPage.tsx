import { useEffect, useId, useMemo, useRef, useState } from "react";
import { fetchFilterOptions, searchReports } from "../api/client";
import type { SearchHit } from "../api/types";
import { FindingRow } from "../components/Chips";
import { CodeFilterInput } from "../components/CodeFilter";
import { DateRangeFilter } from "../components/DateRangeFilter";
import { FacetChart } from "../components/FacetChart";
import { Pager } from "../components/Pager";
import { Options, SelectField } from "../components/SelectField";
import { CardSkeletons, EmptyState, ErrorState } from "../components/States";
import { Thumbnail } from "../components/Thumbnail";
import { ViewerLink } from "../components/ViewerLink";
import { ApiError } from "../lib/graphql";
import { segments } from "../lib/highlight";
import { imageHref, navigate, rememberSearch, searchHref } from "../lib/router";
import {
  PAGE_SIZES,
  SEARCH_MODES,
  clearFilters,
  dateRangeInverted,
  filtersActive as anyFilter,
  pageCount,
  parseSearchState,
  toParams,
  toggleCode,
  type Polarity,
  type SearchMode,
  type SearchState,
} from "../lib/searchState";
import { useAsync } from "../lib/useAsync";

const MODE_LABEL: Record<SearchMode, string> = { KEYWORD: "Keyword", SEMANTIC: "Semantic", HYBRID: "Hybrid" };
const MODE_HELP: Record<SearchMode, string> = {
  KEYWORD: "BM25 over the report text",
  SEMANTIC: "meaning (MiniLM sentence embeddings)",
  HYBRID: "keyword and semantic, fused by rank",
};
const FACET_CHARTS = [
  { polarity: "positive", title: "Positive findings", facets: "positiveFacets" },
  { polarity: "negative", title: "Negated findings", facets: "negativeFacets" },
] as const;

export function SearchPage({ params }: { params: URLSearchParams }) {
  const state = useMemo(() => parseSearchState(params), [params]);
  const key = toParams(state).toString();
  useEffect(() => rememberSearch(searchHref(toParams(state))), [key]);
  const [draft, setDraft] = useState(state.q);
  useEffect(() => setDraft(state.q), [state.q]);
  // an inverted date range is shown as an error beside the inputs; nothing is sent for it
  const rangeInverted = dateRangeInverted(state);
  const results = useAsync(rangeInverted ? null : key, (signal) => searchReports(state, signal));
  const options = useAsync("filter-options", (signal) => fetchFilterOptions(signal));
  const resultsHeading = useRef<HTMLHeadingElement>(null);
  const id = useId();

  const go = (next: SearchState, focusResults = false) => {
    navigate(searchHref(toParams(next)));
    if (focusResults) resultsHeading.current?.focus();
  };
  const onToggleCode = (code: string, polarity: Polarity) => go(toggleCode(state, code, polarity));
  const isActive = (polarity: Polarity) => (code: string) => state.codes.some((c) => c.code === code && c.polarity === polarity);
  const data = results.data;
  const filtersActive = anyFilter(state);
  const pages = data && data.total !== null ? pageCount(data.total, state.pageSize) : null;

  return (
    <div>
      <h1 className="visually-hidden">Search radiology reports</h1>
      <form
        role="search"
        aria-label="Reports"
        onSubmit={(e) => {
          e.preventDefault();
          go({ ...state, q: draft.trim(), page: 1 });
        }}
      >
        <div className="search-bar">
          <label htmlFor={`${id}-q`} className="visually-hidden">
            Search reports
          </label>
          <input
            id={`${id}-q`}
            type="search"
            name="q"
            value={draft}
            placeholder="Search reports, e.g. pleural effusion without pneumothorax"
            autoComplete="off"
            onChange={(e) => setDraft(e.target.value)}
          />
          <button type="submit" className="primary">
            Search
          </button>
        </div>
        <div className="search-options">
          <fieldset className="segmented" style={{ padding: 0, margin: 0 }}>
            <legend className="visually-hidden">Search mode</legend>
            {SEARCH_MODES.map((m) => (
              <label key={m} title={MODE_HELP[m]}>
                <input
                  type="radio"
                  name="mode"
                  value={m}
                  checked={state.mode === m}
                  onChange={() => go({ ...state, q: draft.trim(), mode: m, page: 1 })}
                />
                <span>{MODE_LABEL[m]}</span>
              </label>
            ))}
          </fieldset>
          <span className="hint">{MODE_HELP[state.mode]}</span>
        </div>
      </form>

      <div className="search-layout">
        <aside className="sidebar" aria-label="Filters and facets">
          <section className="panel" aria-labelledby={`${id}-filters`}>
            <h2 id={`${id}-filters`}>Filters</h2>
            <SelectField id={`${id}-modality`} label="Modality" value={state.modality} anyLabel="Any modality"
              choices={withCurrent(options.data?.modalities ?? [], state.modality)}
              onChange={(modality) => go({ ...state, modality, page: 1 })} />
            <SelectField id={`${id}-view`} label="View position" value={state.viewPosition} anyLabel="Any view"
              choices={withCurrent(options.data?.viewPositions ?? [], state.viewPosition)}
              onChange={(viewPosition) => go({ ...state, viewPosition, page: 1 })} />
            <DateRangeFilter
              value={{ dateFrom: state.dateFrom, dateTo: state.dateTo }}
              onChange={(range) => go({ ...state, ...range, page: 1 })}
            />
            <CodeFilterInput codes={state.codes} onChange={(codes) => go({ ...state, codes, page: 1 })} />
            {filtersActive && (
              <button type="button" onClick={() => go(clearFilters(state))}>
                Clear filters
              </button>
            )}
          </section>
          <section className="panel" aria-label="ICD-10-CM facets" style={{ display: "flex", flexDirection: "column", gap: "1rem" }}>
            {FACET_CHARTS.map(({ polarity, title, facets }) => (
              <FacetChart
                key={polarity}
                title={title}
                polarity={polarity}
                facets={data?.[facets] ?? []}
                active={isActive(polarity)}
                onToggle={onToggleCode}
              />
            ))}
            {data?.facetScope && <p className="hint">{data.facetScope} Click a bar to filter; click again to remove it.</p>}
          </section>
        </aside>

        <section aria-labelledby={`${id}-results`} aria-busy={results.status === "loading"}>
          <div className="results-head">
            <h2 id={`${id}-results`} ref={resultsHeading} tabIndex={-1} className="count" aria-live="polite">
              {rangeInverted
                ? "No search: check the report dates"
                : results.status === "loading" && !data
                  ? "Searching…"
                  : data
                    ? resultCountText(data.total, data.hits.length, state)
                    : "Results"}
              {results.status === "loading" && data && <span className="spinner" aria-label="updating" style={{ marginLeft: "0.5rem" }} />}
            </h2>
            <label className="hint" style={{ display: "inline-flex", alignItems: "center", gap: "0.4rem", fontWeight: 400 }}>
              Per page
              <select
                value={state.pageSize}
                style={{ width: "auto", minHeight: 32, padding: "0.2rem 0.4rem" }}
                onChange={(e) => go({ ...state, pageSize: Number(e.target.value), page: 1 })}
              >
                <Options choices={PAGE_SIZES} />
              </select>
            </label>
          </div>
          {results.status === "error" && (
            <>
              <ErrorState error={results.error} onRetry={results.reload} />
              {state.mode !== "KEYWORD" && results.error instanceof ApiError && results.error.code === "SERVICE_UNAVAILABLE" && (
                <p>
                  <button type="button" onClick={() => go({ ...state, mode: "KEYWORD", page: 1 })}>
                    Search by keyword instead
                  </button>{" "}
                  <span className="hint">Keyword search does not need the text model.</span>
                </p>
              )}
            </>
          )}
          {rangeInverted && (
            <EmptyState title="The date range is empty">
              <p>
                "Reported from" ({state.dateFrom}) is after "to" ({state.dateTo}). Change one of the dates in the filters.
              </p>
            </EmptyState>
          )}
          {results.status === "loading" && !data && <CardSkeletons />}
          {data && data.hits.length === 0 && results.status !== "error" && (
            <EmptyState title="No reports match">
              <p>
                {filtersActive ? "Try removing a filter" : "Try other words"}
                {state.mode === "KEYWORD" ? ", or switch to semantic or hybrid search to match by meaning." : "."}
              </p>
            </EmptyState>
          )}
          {data && data.hits.length > 0 && (
            <ol className="results" data-testid="results" style={{ opacity: results.status === "loading" ? 0.6 : 1 }}>
              {data.hits.map((hit) => (
                <ResultCard key={hit.report.id} hit={hit} query={state.q} onCode={onToggleCode} />
              ))}
            </ol>
          )}
          {data && (
            <Pager
              page={state.page}
              pages={pages}
              hasMore={data.hasMore}
              onPage={(p) => {
                go({ ...state, page: p }, true);
                window.scrollTo({ top: 0 });
              }}
            />
          )}
        </section>
      </div>
    </div>
  );
}

function withCurrent(values: string[], current: string): string[] {
  return current && !values.includes(current) ? [current, ...values] : values;
}

function resultCountText(total: number | null, shown: number, state: SearchState): string {
  if (total === null) return `${shown} report${shown === 1 ? "" : "s"} on page ${state.page}`;
  if (total === 0) return "No reports";
  const first = (state.page - 1) * state.pageSize + 1;
  const last = first + shown - 1;
  return `${total.toLocaleString()} report${total === 1 ? "" : "s"}${total > shown ? ` · showing ${first}–${last}` : ""}`;
}

function formatDate(d: string): string {
  return d || "date unknown";
}

function ResultCard({ hit, query, onCode }: { hit: SearchHit; query: string; onCode: (code: string, polarity: Polarity) => void }) {
  const { report, images } = hit;
  const first = images[0];
  const views = [...new Set(images.map((i) => [i.modality, i.viewPosition].filter(Boolean).join(" ")).filter(Boolean))];
  const titleId = `r-${report.id}`;
  return (
    <li>
      <article className="card panel" aria-labelledby={titleId} data-testid="result-card" data-report-id={report.id}>
        <div className="thumbs">
          {first ? (
            <Thumbnail
              src={first.thumbnailUrl}
              alt={`Open image ${[first.modality, first.viewPosition].filter(Boolean).join(" ")} of report ${report.id}`}
              href={imageHref(first.id)}
              badge={[first.modality, first.viewPosition].filter(Boolean).join(" ") || undefined}
            />
          ) : (
            <div className="thumb empty" role="img" aria-label="No image linked">
              <span className="thumb-msg">no image linked</span>
            </div>
          )}
          {images.length > 1 && (
            <span className="more">
              {images.slice(1, 4).map((img, i) => (
                <a key={img.id} href={imageHref(img.id)} style={{ marginRight: "0.35rem" }}>
                  image {i + 2}
                </a>
              ))}
              {images.length > 4 ? ` +${images.length - 4}` : ""}
            </span>
          )}
        </div>
        <div>
          <div className="card-head">
            <h3 id={titleId}>
              {first ? <a href={imageHref(first.id)}>Report {report.id}</a> : <>Report {report.id}</>}
            </h3>
            <span className="meta" data-testid="report-date">
              {formatDate(report.reportDate)}
            </span>
            {views.length > 0 && <span className="meta">{views.join(", ")}</span>}
            {hit.score !== null && <span className="score" title="relevance score">score {hit.score.toFixed(3)}</span>}
            {(report.studyUid || first?.studyUid) && <ViewerLink study={report.studyUid || (first?.studyUid ?? "")} />}
          </div>
          <p className="impression">
            <strong>{report.impression ? "Impression" : "Findings"}</strong>
            {report.impression || report.findings || <em className="hint">no impression or findings section</em>}
          </p>
          {query && hit.snippet && hit.snippet.highlights.length > 0 && (
            <p className="snippet" data-testid="snippet">
              {segments(hit.snippet.text, hit.snippet.highlights).map((s) =>
                s.entity ? <mark key={s.start}>{s.text}</mark> : <span key={s.start}>{s.text}</span>,
              )}
            </p>
          )}
          <FindingRow label="Positive" kind="positive" codes={report.positive} onCode={onCode} />
          <FindingRow label="Negative" kind="negative" codes={report.negative} onCode={onCode} />
          <FindingRow label="Uncertain" kind="uncertain" codes={report.uncertain} />
        </div>
      </article>
    </li>
  );
}
