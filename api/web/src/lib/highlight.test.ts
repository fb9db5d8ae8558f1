import { describe, expect, it } from "vitest";
import { assertionFromTraits, normaliseAssertion, segments } from "./highlight";

describe("segments", () => {
  const text = "Small left pleural effusion. No pneumothorax.";
  it("splits text around entity spans and keeps every character once", () => {
    const ents = [
      { start: 11, end: 27, id: "eff" },
      { start: 32, end: 44, id: "ptx" },
    ];
    const segs = segments(text, ents);
    expect(segs.map((s) => s.text).join("")).toBe(text);
    expect(segs.filter((s) => s.entity).map((s) => s.text)).toEqual(["pleural effusion", "pneumothorax"]);
    expect(segs[0]).toEqual({ text: "Small left ", start: 0, entity: null });
  });
  it("drops overlapping, empty and out-of-range spans, earliest-longest first", () => {
    const ents = [
      { start: 19, end: 27 }, // "effusion", inside the longer span below
      { start: 11, end: 27 },
      { start: 5, end: 5 },
      { start: 100, end: 120 },
      { start: 40, end: 999 },
    ];
    const segs = segments(text, ents);
    expect(segs.map((s) => s.text).join("")).toBe(text);
    expect(segs.filter((s) => s.entity).map((s) => s.text)).toEqual(["pleural effusion", text.slice(40)]);
  });
  it("handles entities unsorted and text without entities", () => {
    expect(segments("abc", [])).toEqual([{ text: "abc", start: 0, entity: null }]);
    const segs = segments("a b c", [{ start: 4, end: 5 }, { start: 0, end: 1 }]);
    expect(segs.map((s) => [s.text, Boolean(s.entity)])).toEqual([["a", true], [" b ", false], ["c", true]]);
  });
});

describe("assertions", () => {
  it("maps ConText traits", () => {
    expect(assertionFromTraits([{ name: "is_negated" }])).toBe("negative");
    expect(assertionFromTraits([{ name: "is_uncertain" }])).toBe("uncertain");
    expect(assertionFromTraits([{ name: "is_historical" }])).toBe("historical");
    expect(assertionFromTraits([])).toBe("positive");
    expect(assertionFromTraits(null)).toBe("positive");
  });
  it("normalises enum values", () => {
    expect(normaliseAssertion("POSITIVE")).toBe("positive");
    expect(normaliseAssertion("NEGATIVE")).toBe("negative");
    expect(normaliseAssertion("UNCERTAIN")).toBe("uncertain");
    expect(normaliseAssertion("HISTORICAL")).toBe("historical");
    expect(normaliseAssertion("weird")).toBe("other");
  });
});
