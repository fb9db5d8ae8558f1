import { afterEach, describe, expect, it, vi } from "vitest";
import { DEFAULT_STATE } from "../lib/searchState";
import { searchReports, similarImages, toEntity } from "./client";

interface Sent {
  query: string;
  variables: Record<string, unknown>;
}

/** A fake gateway: cursors are "c<offset of the last item>", like an opaque offset cursor. */
function fakeGateway(total: number) {
  const sent: Sent[] = [];
  const fetchMock = vi.fn(async (_url: string, init: RequestInit) => {
    const body = JSON.parse(String(init.body)) as Sent;
    sent.push(body);
    const first = body.variables.first as number;
    const after = body.variables.after as string | null;
    const start = after ? Number(after.slice(1)) + 1 : 0;
    const end = Math.min(total, start + first);
    const edges = Array.from({ length: end - start }, (_, i) => ({
      score: 1,
      snippet: { text: "", highlights: [] },
      node: {
        id: `R${start + i}`, studyUid: null, impression: "", findings: "", reportDate: null,
        icd10Positive: [], icd10Negative: [], icd10Uncertain: [], images: [],
      },
    }));
    const data = {
      searchReports: { totalCount: total, pageInfo: { hasNextPage: end < total, endCursor: end > start ? `c${end - 1}` : null }, edges },
      positive: [],
      negative: [],
    };
    return new Response(JSON.stringify({ data }), { status: 200, headers: { "content-type": "application/json" } });
  });
  vi.stubGlobal("fetch", fetchMock);
  return sent;
}

afterEach(() => vi.unstubAllGlobals());

describe("numbered pages over opaque cursors", () => {
  it("walks forward to a far page, then reuses the cursors it has seen", async () => {
    const sent = fakeGateway(95);
    const state = { ...DEFAULT_STATE, q: "effusion", page: 3 };
    const page3 = await searchReports(state);
    expect(page3.hits.map((h) => h.report.id)).toEqual(Array.from({ length: 10 }, (_, i) => `R${20 + i}`));
    // one page-info-only request (first 20), then the page itself after its endCursor
    expect(sent.map((s) => [s.query.includes("query Skip"), s.variables.first, s.variables.after])).toEqual([
      [true, 20, null],
      [false, 10, "c19"],
    ]);
    sent.length = 0;
    const page4 = await searchReports({ ...state, page: 4 });
    expect(page4.hits[0]?.report.id).toBe("R30");
    expect(sent).toHaveLength(1); // the cursor of page 4 came with page 3
    expect(page4.total).toBe(95);
    expect(page4.hasMore).toBe(true);
  });

  it("walks in steps of at most 100 and sends the filter", async () => {
    const sent = fakeGateway(1000);
    const state = { ...DEFAULT_STATE, q: "x", pageSize: 50, page: 6, codes: [{ code: "J91.8", polarity: "negative" as const }] };
    const res = await searchReports(state);
    expect(res.hits[0]?.report.id).toBe("R250");
    expect(sent.map((s) => s.variables.first)).toEqual([100, 100, 50, 50]);
    expect(sent[0]?.variables.filter).toEqual({ negativeCodes: ["J91.8"] });
  });

  it("sends the date range to the results and to both facet charts", async () => {
    const sent = fakeGateway(3);
    const state = { ...DEFAULT_STATE, dateFrom: "2019-01-07", dateTo: "2020-12-31", modality: "CR" };
    const res = await searchReports(state);
    expect(sent).toHaveLength(1);
    const filter = { modality: ["CR"], dateFrom: "2019-01-07", dateTo: "2020-12-31" };
    expect(sent[0]?.variables.filter).toEqual(filter);
    // one filter variable for searchReports and both icd10Facets, so counts and results agree
    expect(sent[0]?.query.match(/filter: \$filter/g)).toHaveLength(3);
    expect(res.facetScope).toBe("Counts over the reports that pass the filters.");
    // an open end is left out of the filter
    sent.length = 0;
    await searchReports({ ...DEFAULT_STATE, dateTo: "2004-08-26" });
    expect(sent[0]?.variables.filter).toEqual({ dateTo: "2004-08-26" });
  });

  it("says when a page does not exist", async () => {
    fakeGateway(15);
    await expect(searchReports({ ...DEFAULT_STATE, q: "y", page: 5 })).rejects.toThrow("There is no page 5");
  });
});

describe("similarImages", () => {
  it("sends uploads as multipart with the file in variables.upload", async () => {
    const calls: RequestInit[] = [];
    vi.stubGlobal("fetch", vi.fn(async (_u: string, init: RequestInit) => {
      calls.push(init);
      return new Response(JSON.stringify({ data: { similarImages: [] } }), { status: 200 });
    }));
    const file = new File([new Uint8Array([1, 2, 3])], "q.dcm");
    await similarImages({ file, k: 5, modality: "CR", viewPosition: "" });
    const form = calls[0]?.body as FormData;
    const ops = JSON.parse(String(form.get("operations")));
    expect(ops.variables).toEqual({ imageId: null, upload: null, k: 5, filter: { modality: ["CR"] } });
    expect(JSON.parse(String(form.get("map")))).toEqual({ "0": ["variables.upload"] });
    expect((form.get("0") as File).name).toBe("q.dcm");
  });
});

describe("entities", () => {
  it("maps traits to assertions and drops entities without offsets", () => {
    const base = { text: "effusion", category: "DIAGNOSIS", type: null, section: "findings", icd10: [{ code: "J91.8", description: "d" }] };
    expect(toEntity({ ...base, start: 3, end: 11, traits: [{ name: "is_negated" }] })).toMatchObject({ assertion: "negative", codes: [{ code: "J91.8" }] });
    expect(toEntity({ ...base, start: null, end: null, traits: [] })).toBeNull();
  });
});
