import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// React without @vitejs/plugin-react: esbuild compiles TSX with the automatic JSX runtime.
// The gateway (api/medsearch_api) serves the build output at "/" and GraphQL at "/graphql".
const outDir = fileURLToPath(new URL("../medsearch_api/web/dist", import.meta.url));

export default defineConfig({
  base: "./",
  esbuild: { jsx: "automatic", jsxImportSource: "react" },
  build: {
    outDir,
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    chunkSizeWarningLimit: 600,
  },
  server: {
    // `npm run dev` against a gateway on localhost:8080 (MEDSEARCH_API_URL overrides)
    proxy: Object.fromEntries(
      ["/graphql", "/thumbnails", "/dicomweb", "/web-settings.json", "/healthz", "/readyz", "/auth"].map((p) => [
        p,
        { target: process.env.MEDSEARCH_API_URL ?? "http://127.0.0.1:8080", changeOrigin: true },
      ]),
    ),
  },
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
  },
});
