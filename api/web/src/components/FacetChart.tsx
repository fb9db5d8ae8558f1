import type { Facet } from "../api/types";
import type { Polarity } from "../lib/searchState";

/** A horizontal bar chart of ICD-10-CM code counts; each bar is a toggle button that filters on its code. */
export function FacetChart({
  title,
  polarity,
  facets,
  active,
  onToggle,
  limit = 10,
}: {
  title: string;
  polarity: Polarity;
  facets: Facet[];
  active: (code: string) => boolean;
  onToggle: (code: string, polarity: Polarity) => void;
  limit?: number;
}) {
  const shown = facets.slice(0, limit);
  const max = Math.max(1, ...shown.map((f) => f.count));
  const id = `facet-${polarity}`;
  return (
    <section className={`facet ${polarity}`} aria-labelledby={id} data-testid={id}>
      <h3 id={id}>
        <span className={`swatch ${polarity}`} aria-hidden="true" />
        {title}
      </h3>
      {shown.length === 0 ? (
        <p className="hint">No {polarity} codes in these results.</p>
      ) : (
        <ol>
          {shown.map((f) => {
            const pressed = active(f.code);
            return (
              <li key={f.code}>
                <button
                  type="button"
                  className="facet-bar"
                  aria-pressed={pressed}
                  data-code={f.code}
                  title={`${f.code} ${f.description}: ${f.count} report${f.count === 1 ? "" : "s"} (${polarity}). ${pressed ? "Remove filter" : "Filter on it"}`}
                  aria-label={`${f.code} ${f.description}, ${f.count} ${polarity}. ${pressed ? "Remove filter" : "Filter"}`}
                  onClick={() => onToggle(f.code, polarity)}
                >
                  <span className="facet-top">
                    <span className="code">{f.code}</span>
                    <span className="desc">{f.description}</span>
                    <span className="n">{f.count}</span>
                  </span>
                  <span className="track" aria-hidden="true">
                    <span className="fill" style={{ width: `${Math.max(3, (100 * f.count) / max)}%` }} />
                  </span>
                </button>
              </li>
            );
          })}
        </ol>
      )}
    </section>
  );
}
