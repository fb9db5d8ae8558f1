// Turn entity spans over a report text into non-overlapping display segments.

export type Assertion = "positive" | "negative" | "uncertain" | "historical" | "other";

export interface Span {
  start: number;
  end: number;
}

export interface Segment<E extends Span> {
  text: string;
  start: number;
  entity: E | null;
}

/**
 * Split `text` into plain and highlighted segments. Spans outside the text or empty are dropped;
 * where spans overlap the earlier one wins (ties: the longer), so every character shows at most once.
 */
export function segments<E extends Span>(text: string, entities: readonly E[]): Segment<E>[] {
  const valid = entities
    .filter((e) => Number.isInteger(e.start) && Number.isInteger(e.end) && e.start >= 0 && e.end > e.start && e.start < text.length)
    .map((e) => ({ e, start: e.start, end: Math.min(e.end, text.length) }))
    .sort((a, b) => a.start - b.start || b.end - a.end);
  const out: Segment<E>[] = [];
  let pos = 0;
  for (const { e, start, end } of valid) {
    if (start < pos) continue; // overlaps an earlier span
    if (start > pos) out.push({ text: text.slice(pos, start), start: pos, entity: null });
    out.push({ text: text.slice(start, end), start, entity: e });
    pos = end;
  }
  if (pos < text.length) out.push({ text: text.slice(pos), start: pos, entity: null });
  return out;
}

/** Map ConText-style trait names (negated, uncertain, hypothetical, historical, family...) to one assertion. */
export function assertionFromTraits(traits: readonly { name: string }[] | null | undefined): Assertion {
  const names = (traits ?? []).map((t) => t.name.toLowerCase());
  if (names.some((n) => n.includes("negat"))) return "negative";
  if (names.some((n) => n.includes("uncertain") || n.includes("possible") || n.includes("hypothetical"))) return "uncertain";
  if (names.some((n) => n.includes("histor") || n.includes("family"))) return "historical";
  return "positive";
}

export function normaliseAssertion(value: string | null | undefined): Assertion {
  const v = (value ?? "").toLowerCase();
  if (v.startsWith("pos") || v === "present" || v === "affirmed") return "positive";
  if (v.startsWith("neg") || v === "absent") return "negative";
  if (v.startsWith("uncert") || v === "possible" || v === "hypothetical") return "uncertain";
  if (v.startsWith("hist") || v === "family") return "historical";
  return "other";
}
