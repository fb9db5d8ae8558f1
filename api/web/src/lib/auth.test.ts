import { describe, expect, it } from "vitest";
import { normaliseToken } from "./auth";
import { parseHash } from "./router";

describe("tokens", () => {
  it("normalises pasted tokens", () => {
    expect(normaliseToken("  abc123  ")).toBe("abc123");
    expect(normaliseToken("Bearer abc123")).toBe("abc123");
    expect(normaliseToken("")).toBeNull();
    expect(normaliseToken("two words")).toBeNull();
  });
});

describe("routes", () => {
  it("parses hashes", () => {
    expect(parseHash("").name).toBe("search");
    const s = parseHash("#/search?q=effusion&page=2");
    expect(s.name === "search" && s.params.get("q")).toBe("effusion");
    const img = parseHash("#/image/1.2.840.113619%2F5?k=20");
    expect(img).toMatchObject({ name: "image", id: "1.2.840.113619/5" });
    expect(img.name === "image" && img.params.get("k")).toBe("20");
    expect(parseHash("#/upload").name).toBe("upload");
    expect(parseHash("#/nope").name).toBe("notFound");
    expect(parseHash("#/image/%E0%A4%A").name).toBe("notFound");
  });
});
