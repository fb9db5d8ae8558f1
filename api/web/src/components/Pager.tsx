import { pageWindow } from "../lib/searchState";

/**
 * Page navigation. With a known total it shows numbered pages; without one (cursor-style APIs that only
 * say "has more") it shows previous/next.
 */
export function Pager({
  page,
  pages,
  hasMore,
  onPage,
}: {
  page: number;
  pages: number | null;
  hasMore: boolean;
  onPage: (page: number) => void;
}) {
  if (page <= 1 && !hasMore && (pages === null || pages <= 1)) return null;
  const next = pages !== null ? page < pages : hasMore;
  return (
    <nav className="pager" aria-label="Result pages">
      <button type="button" disabled={page <= 1} onClick={() => onPage(page - 1)} aria-label="Previous page">
        ‹ Previous
      </button>
      {pages !== null ? (
        pageWindow(page, pages).map((p, i) =>
          p === null ? (
            <span key={`gap-${i}`} className="gap" aria-hidden="true">
              …
            </span>
          ) : (
            <button
              key={p}
              type="button"
              aria-current={p === page ? "page" : undefined}
              aria-label={`Page ${p}`}
              onClick={() => onPage(p)}
            >
              {p}
            </button>
          ),
        )
      ) : (
        <span className="hint" aria-live="polite">
          Page {page}
        </span>
      )}
      <button type="button" disabled={!next} onClick={() => onPage(page + 1)} aria-label="Next page">
        Next ›
      </button>
    </nav>
  );
}
