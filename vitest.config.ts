import { defineConfig } from "vitest/config"

// "@volley/source" resolves @volley/* to their TypeScript sources, so tests never need a build first.
const conditions = ["@volley/source", "node", "import", "module", "default"]

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: conditions } },
  test: {
    projects: [
      { extends: true, test: { name: "core", root: "packages/core", include: ["test/**/*.test.ts"] } },
      { extends: true, test: { name: "node", root: "packages/node", include: ["test/**/*.test.ts"] } },
      { extends: true, test: { name: "cluster", root: "packages/cluster", include: ["test/**/*.test.ts"] } },
      { extends: true, test: { name: "e2e", include: ["test/**/*.test.ts"] } }
    ],
    testTimeout: 30_000,
    hookTimeout: 60_000
  }
})
