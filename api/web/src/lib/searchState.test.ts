import { describe, expect, it } from "vitest";
import {
  DEFAULT_STATE,
  clearFilters,
  dateRangeInverted,
  filtersActive,
  normaliseCode,
  normaliseDate,
  pageCount,
  pageWindow,
  parseSearchState,
  toParams,
  toggleCode,
} from "./searchState";

describe("normaliseCode", () => {
  it.each([
    ["j91.8", "J91.8"],
    [" J918 ", "J91.8"],
    ["I51.7", "I51.7"],
    ["R09", "R09"],
    ["S22.31XA", "S22.31XA"],
  ])("accepts ICD-10-CM codes with or without the dot: %j", (raw, code) => {
    expect(normaliseCode(raw)).toBe(code);
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
      dateFrom: "2019-01-07",
      dateTo: "2024-05-03",
      page: 3,
      pageSize: 20,
    };
    const p = toParams(s);
    expect(p.get("from")).toBe("2019-01-07");
    expect(p.get("to")).toBe("2024-05-03");
    expect(parseSearchState(p)).toEqual(s);
  });
  it("round-trips an open-ended date range", () => {
    const s = { ...DEFAULT_STATE, dateTo: "2004-08-26" };
    expect(toParams(s).toString()).toBe("to=2004-08-26");
    expect(parseSearchState(toParams(s))).toEqual(s);
  });
  it("ignores malformed or impossible dates", () => {
    for (const bad of ["2024-13-01", "2023-02-29", "2024-04-31", "24-01-01", "2024-1-5", "0002-01-11", "yesterday", "2024-01-01T00:00", ""]) {
      const s = parseSearchState(new URLSearchParams({ from: bad, to: bad }));
      expect([s.dateFrom, s.dateTo]).toEqual(["", ""]);
    }
    expect(parseSearchState(new URLSearchParams("from=2024-02-29&to=bogus"))).toMatchObject({ dateFrom: "2024-02-29", dateTo: "" });
    expect(normaliseDate(" 2024-05-03 ")).toBe("2024-05-03");
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

describe("filters", () => {
  it("counts the date range as a filter and clears it with the others", () => {
    expect(filtersActive(DEFAULT_STATE)).toBe(false);
    expect(filtersActive({ ...DEFAULT_STATE, dateFrom: "2020-01-01" })).toBe(true);
    expect(filtersActive({ ...DEFAULT_STATE, dateTo: "2020-01-01" })).toBe(true);
    const s = {
      ...DEFAULT_STATE,
      q: "effusion",
      modality: "CR",
      codes: [{ code: "J91.8", polarity: "negative" as const }],
      dateFrom: "2020-01-01",
      dateTo: "2021-01-01",
      page: 3,
    };
    expect(clearFilters(s)).toEqual({ ...DEFAULT_STATE, q: "effusion" });
  });
  it("flags a start after the end", () => {
    expect(dateRangeInverted({ dateFrom: "2024-05-03", dateTo: "2019-01-07" })).toBe(true);
    expect(dateRangeInverted({ dateFrom: "2024-05-03", dateTo: "2024-05-03" })).toBe(false);
    expect(dateRangeInverted({ dateFrom: "2024-05-03", dateTo: "" })).toBe(false);
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
