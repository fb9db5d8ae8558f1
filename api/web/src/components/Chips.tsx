import type { Code } from "../api/types";
import type { Polarity } from "../lib/searchState";

export type FindingKind = "positive" | "negative" | "uncertain";

const MARK: Record<FindingKind, string> = { positive: "+", negative: "−", uncertain: "?" };
const WORD: Record<FindingKind, string> = { positive: "present", negative: "absent", uncertain: "uncertain" };

/** One finding's ICD-10-CM code, coloured by assertion; the mark (+ − ?) keeps it readable without colour. */
export function CodeChip({ code, kind, onClick }: { code: Code; kind: FindingKind; onClick?: () => void }) {
  const label = `${code.code} ${code.description} (${WORD[kind]})`;
  const inner = (
    <>
      <span className="mark" aria-hidden="true">
        {MARK[kind]}
      </span>
      <span className="code">{code.code}</span>
      {code.description && <span className="desc">{code.description}</span>}
    </>
  );
  if (onClick) {
    return (
      <button type="button" className={`chip ${kind}`} onClick={onClick} title={`Filter on ${label}`} aria-label={`Filter on ${label}`}>
        {inner}
      </button>
    );
  }
  return (
    <span className={`chip ${kind}`} title={label} aria-label={label} role="note">
      {inner}
    </span>
  );
}

export function FindingRow({
  label,
  kind,
  codes,
  onCode,
  limit = 8,
}: {
  label: string;
  kind: FindingKind;
  codes: Code[];
  onCode?: (code: string, polarity: Polarity) => void;
  limit?: number;
}) {
  if (codes.length === 0) return null;
  const shown = codes.slice(0, limit);
  return (
    <div className="findings-row" data-kind={kind}>
      <span className="k">{label}</span>
      <span className="chips">
        {shown.map((c) => (
          <CodeChip
            key={c.code}
            code={c}
            kind={kind}
            onClick={onCode && kind !== "uncertain" ? () => onCode(c.code, kind) : undefined}
          />
        ))}
        {codes.length > limit && <span className="hint">+{codes.length - limit} more</span>}
      </span>
    </div>
  );
}
