import { describe, expect, it } from "vitest";
import { PRESETS, renderedUrl, valueRange, viewerUrl } from "./viewer";

describe("viewerUrl", () => {
  it("fills the OHIF template with the study UID", () => {
    expect(viewerUrl("http://localhost:3000/viewer?StudyInstanceUIDs={study}", { study: "1.2.3" })).toBe(
      "http://localhost:3000/viewer?StudyInstanceUIDs=1.2.3",
    );
  });
  it("encodes values and needs every placeholder it uses", () => {
    expect(viewerUrl("/v/{study}/{series}", { study: "1.2", series: "a b" })).toBe("/v/1.2/a%20b");
    expect(viewerUrl("/v/{study}/{series}", { study: "1.2" })).toBeNull();
    expect(viewerUrl("", { study: "1.2" })).toBeNull();
    expect(viewerUrl("/v/{study}", { study: "" })).toBeNull();
  });
  it("refuses anything but web links", () => {
    expect(viewerUrl("javascript:alert({study})", { study: "1" })).toBeNull();
  });
});

describe("window/level", () => {
  it("renders URLs with the window parameter", () => {
    const uids = { study: "1.2", series: "1.2.3", instance: "1.2.3.4" };
    expect(renderedUrl(uids, null)).toBe("dicomweb/studies/1.2/series/1.2.3/instances/1.2.3.4/frames/1/rendered?accept=image%2Fjpeg");
    expect(renderedUrl(uids, { center: -600, width: 1500 })).toContain("window=-600%2C1500%2Clinear");
  });
  it("has the lung, mediastinum and bone presets", () => {
    expect(PRESETS.map((p) => p.id)).toEqual(["default", "lung", "mediastinum", "bone"]);
  });
  it("derives slider bounds from the metadata", () => {
    const ct = valueRange({ "00280101": { Value: [16] }, "00280103": { Value: [1] }, "00281052": { Value: ["-1024"] }, "00281053": { Value: ["1"] } });
    expect(ct.min).toBe(-32768 - 1024);
    expect(ct.window).toBeNull();
    const cr = valueRange({ "00280101": { Value: [15] }, "00281050": { Value: ["15000"] }, "00281051": { Value: ["30000"] } });
    expect([cr.min, cr.max, cr.window]).toEqual([0, 32767, { center: 15000, width: 30000 }]);
  });
});
