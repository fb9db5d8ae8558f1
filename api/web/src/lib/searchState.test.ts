import { describe, expect, it } from "vitest";
import { DEFAULT_STATE, normaliseCode, pageCount, pageWindow, parseSearchState, toParams, toggleCode } from "./searchState";

describe("normaliseCode", () => {
  it("accepts ICD-10-CM codes with or without the dot", () => {
    expect(normaliseCode("j91.8")).toBe("J91.8");
    expect(normaliseCode(" J918 ")).toBe("J91.8");
    expect(normaliseCode("I51.7")).toBe("I51.7");
    expect(normaliseCode("R09")).toBe("R09");
    expect(normaliseCode("S22.31XA")).toBe("S22.31XA");
  });
  it("rejects what is not a code", () => {
    for (const bad of ["", "effusion", "J9", "J91.", "U07.1x\"", "J91.8 or 1==1", "91.8"]) {
      expect(normaliseCode(bad)).toBeNull();
    }
  });
});

describe("URL state", () => {
  it("round-trips a full state", () => {
    const s = {
      ...DEFAULT_STATE,
      q: "pleural effusion",
      mode: "KEYWORD" as const,
      modality: "CR",
      viewPosition: "PA",
      codes: [
        { code: "J91.8", polarity: "positive" as const },
        { code: "J93.9", polarity: "negative" as const },
      ],
      page: 3,
      pageSize: 20,
    };
    expect(parseSearchState(toParams(s))).toEqual(s);
  });
  it("keeps defaults out of the URL and repairs bad values", () => {
    expect(toParams(DEFAULT_STATE).toString()).toBe("");
    const s = parseSearchState(new URLSearchParams("mode=bogus&page=-4&size=7&pos=J91.8,nonsense,J91.8"));
    expect(s.mode).toBe(DEFAULT_STATE.mode);
    expect(s.page).toBe(1);
    expect(s.pageSize).toBe(DEFAULT_STATE.pageSize);
    expect(s.codes).toEqual([{ code: "J91.8", polarity: "positive" }]);
  });
});

describe("toggleCode", () => {
  it("adds, flips polarity and removes; resets the page", () => {
    const s0 = { ...DEFAULT_STATE, page: 4 };
    const s1 = toggleCode(s0, "J91.8", "positive");
    expect(s1.codes).toEqual([{ code: "J91.8", polarity: "positive" }]);
    expect(s1.page).toBe(1);
    const s2 = toggleCode(s1, "J91.8", "negative");
    expect(s2.codes).toEqual([{ code: "J91.8", polarity: "negative" }]);
    expect(toggleCode(s2, "J91.8", "negative").codes).toEqual([]);
  });
});

describe("pages", () => {
  it("counts pages", () => {
    expect(pageCount(0, 10)).toBe(1);
    expect(pageCount(10, 10)).toBe(1);
    expect(pageCount(11, 10)).toBe(2);
  });
  it("windows page numbers with gaps", () => {
    expect(pageWindow(1, 3)).toEqual([1, 2, 3]);
    expect(pageWindow(10, 20)).toEqual([1, null, 8, 9, 10, 11, 12, null, 20]);
    expect(pageWindow(1, 20)).toEqual([1, 2, 3, null, 20]);
  });
});
