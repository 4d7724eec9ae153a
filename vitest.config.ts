import { defineConfig } from "vitest/config"

export default defineConfig({
  resolve: { conditions: ["source"] },
  test: {
    projects: [
      { extends: true, test: { name: "core", root: "packages/core", include: ["test/**/*.test.ts"] } },
      { extends: true, test: { name: "node", root: "packages/node", include: ["test/**/*.test.ts"] } },
      { extends: true, test: { name: "e2e", include: ["test/**/*.test.ts"] } }
    ],
    testTimeout: 30_000,
    hookTimeout: 60_000
  }
})
