import { useId, useState } from "react";
import { normaliseCode, type CodeFilter, type Polarity } from "../lib/searchState";

/** ICD-10-CM filter chips: type a code, choose present (+) or absent (−), add; each chip can be flipped or removed. */
export function CodeFilterInput({
  codes,
  onChange,
}: {
  codes: CodeFilter[];
  onChange: (codes: CodeFilter[]) => void;
}) {
  const [text, setText] = useState("");
  const [polarity, setPolarity] = useState<Polarity>("positive");
  const [error, setError] = useState<string | null>(null);
  const id = useId();
  const add = () => {
    const code = normaliseCode(text);
    if (!code) {
      setError(`"${text.trim()}" is not an ICD-10-CM code (for example J91.8)`);
      return;
    }
    setError(null);
    setText("");
    onChange([...codes.filter((c) => c.code !== code), { code, polarity }]);
  };
  return (
    <div className="field">
      <label htmlFor={`${id}-code`}>ICD-10-CM codes</label>
      <div className="code-input">
        <input
          id={`${id}-code`}
          type="text"
          value={text}
          placeholder="e.g. J91.8"
          autoComplete="off"
          spellCheck={false}
          aria-invalid={error ? true : undefined}
          aria-describedby={error ? `${id}-err` : `${id}-hint`}
          onChange={(e) => setText(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter") {
              e.preventDefault();
              add();
            }
          }}
        />
        <select aria-label="Polarity of the code" value={polarity} onChange={(e) => setPolarity(e.target.value as Polarity)}>
          <option value="positive">+ present</option>
          <option value="negative">− absent</option>
        </select>
        <button type="button" onClick={add} disabled={!text.trim()}>
          Add
        </button>
      </div>
      {error ? (
        <p id={`${id}-err`} className="hint" style={{ color: "var(--neg)" }} role="alert">
          {error}
        </p>
      ) : (
        <p id={`${id}-hint`} className="hint">
          + present: the report asserts it. − absent: the report negates it.
        </p>
      )}
      {codes.length > 0 && (
        <ul className="chips" aria-label="Active code filters" style={{ listStyle: "none", padding: 0, margin: "0.4rem 0 0" }}>
          {codes.map((c) => (
            <li key={`${c.polarity}:${c.code}`} className={`chip ${c.polarity}`} data-testid="code-filter-chip">
              <button
                type="button"
                title="Flip present/absent"
                aria-label={`${c.code} ${c.polarity === "positive" ? "present" : "absent"}; flip`}
                onClick={() =>
                  onChange(codes.map((x) => (x === c ? { ...c, polarity: c.polarity === "positive" ? "negative" : "positive" } : x)))
                }
              >
                <span className="mark">{c.polarity === "positive" ? "+" : "−"}</span>
              </button>
              <span className="code">{c.code}</span>
              <button type="button" aria-label={`Remove ${c.code}`} title="Remove" onClick={() => onChange(codes.filter((x) => x !== c))}>
                ×
              </button>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}
