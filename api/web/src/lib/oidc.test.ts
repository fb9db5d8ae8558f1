import { describe, expect, it } from "vitest";
import { base64url, codeChallenge, randomString } from "./oidc";

describe("PKCE", () => {
  it("computes the RFC 7636 appendix B challenge", async () => {
    expect(await codeChallenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")).toBe("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
  });
  it("encodes base64url without padding and makes random verifiers", () => {
    expect(base64url(new Uint8Array([251, 255]))).toBe("-_8");
    const a = randomString(48);
    expect(a).toMatch(/^[A-Za-z0-9_-]{64}$/);
    expect(randomString(48)).not.toBe(a);
  });
});
