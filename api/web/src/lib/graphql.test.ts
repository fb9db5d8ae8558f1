import { describe, expect, it } from "vitest";
import { errorMessage, multipartBody } from "./graphql";

describe("multipartBody", () => {
  it("follows the GraphQL multipart request spec", async () => {
    const file = new File([new Uint8Array([137, 80, 78, 71])], "q.png", { type: "image/png" });
    const form = multipartBody("query Q($f: Upload!) { x(f: $f) }", { k: 5, f: "placeholder", opts: { a: 1 } }, { f: file });
    const ops = JSON.parse(String(form.get("operations")));
    expect(ops.variables).toEqual({ k: 5, f: null, opts: { a: 1 } });
    expect(ops.query).toContain("Upload!");
    expect(JSON.parse(String(form.get("map")))).toEqual({ "0": ["variables.f"] });
    const part = form.get("0") as File;
    expect(part.name).toBe("q.png");
    expect(new Uint8Array(await part.arrayBuffer())).toEqual(new Uint8Array([137, 80, 78, 71]));
  });
  it("places files at nested variable paths", () => {
    const form = multipartBody("q", { input: { name: "x" } }, { "input.file": new Blob(["a"]) });
    expect(JSON.parse(String(form.get("operations"))).variables).toEqual({ input: { name: "x", file: null } });
    expect(JSON.parse(String(form.get("map")))).toEqual({ "0": ["variables.input.file"] });
  });
});

describe("errorMessage", () => {
  it("joins distinct messages", () => {
    expect(errorMessage([{ message: "a" }, { message: "b" }, { message: "a" }])).toBe("a; b");
  });
});
