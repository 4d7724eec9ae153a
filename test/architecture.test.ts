// Each package's public modules read as contracts because its internal code depends only on
// internal code: a file under `packages/<name>/src/internal/` never imports a module of the same
// package outside `internal/`. That includes `index.ts` (it re-exports every public module, so
// importing it from inside is a cycle through all of them) and the package's own name
// (`@volley/core` from inside core). Type-only and dynamic imports count too: a type that
// internal code needs lives in `internal/` (or a leaf) and the public module re-exports it.
// Importing another package's public API (`@volley/core/Options` from node's internals) is fine.
import { readdirSync, readFileSync } from "node:fs"
import { dirname, join, relative, resolve } from "node:path"
import { assert, describe, it } from "@effect/vitest"

const root = resolve(new URL("..", import.meta.url).pathname)
const packagesDir = join(root, "packages")

const sourceFiles = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return sourceFiles(path)
    return entry.name.endsWith(".ts") ? [path] : []
  })

/** Every module specifier a file imports or re-exports, comments left out (JSDoc examples import too). */
const specifiers = (source: string): Array<string> => {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "")
  const found: Array<string> = []
  const patterns = [
    /\b(?:import|export)\b[^;'"`]*?\bfrom\s*["']([^"']+)["']/g, // import x from "m", export { x } from "m"
    /\bimport\s*["']([^"']+)["']/g, // import "m"
    /\bimport\s*\(\s*["']([^"']+)["']\s*\)/g // import("m")
  ]
  for (const pattern of patterns) {
    for (const match of code.matchAll(pattern)) found.push(match[1]!)
  }
  return found
}

/**
 * The imports of `file` (inside `packages/<name>/src/internal/`) that reach a public module of
 * its own package, as `specifier -> path`.
 */
const publicImports = (file: string, source: string): Array<string> => {
  const pkg = relative(packagesDir, file).split("/")[0]!
  const src = join(packagesDir, pkg, "src")
  const internal = join(src, "internal")
  return specifiers(source).flatMap((specifier) => {
    if (specifier === `@volley/${pkg}` || specifier.startsWith(`@volley/${pkg}/`)) return [specifier]
    if (!specifier.startsWith(".")) return []
    const target = resolve(dirname(file), specifier)
    const inSrc = target.startsWith(`${src}/`)
    const inInternal = target.startsWith(`${internal}/`)
    return inSrc && !inInternal ? [`${specifier} -> ${relative(root, target)}`] : []
  })
}

describe("architecture", () => {
  it("internal modules never import a public module of their own package", () => {
    const packages = readdirSync(packagesDir, { withFileTypes: true }).filter((entry) => entry.isDirectory())
    const files = packages.flatMap((pkg) => {
      const internal = join(packagesDir, pkg.name, "src", "internal")
      try {
        return sourceFiles(internal)
      } catch {
        return [] // a package without internal modules
      }
    })
    // The check saw the files it is meant to guard.
    assert.isTrue(files.some((file) => file.endsWith("core/src/internal/fanout/engine.ts")))
    assert.isTrue(files.some((file) => file.endsWith("node/src/internal/proxy/dispatcher.ts")))
    const violations = files.flatMap((file) =>
      publicImports(file, readFileSync(file, "utf8")).map((what) => `${relative(root, file)}: ${what}`)
    )
    assert.deepStrictEqual(violations, [])
  })

  it("the check catches every form of such an import, and ignores comments and other packages", () => {
    const file = join(packagesDir, "core", "src", "internal", "retry", "loop.ts")
    const source = [
      'import { isRetryable } from "../../Retry.ts"',
      'import type { Progress } from "../../Fanout.ts"',
      'export { x } from "../../index.ts"',
      'import * as Core from "@volley/core"',
      'const lazy = () => import("../../Http.ts")',
      'import "../../Blocking.ts"',
      'import { Budget } from "./budget.ts"',
      'import * as Validate from "../options.ts"',
      'import * as Effect from "effect/Effect"',
      'import * as Node from "@volley/node"',
      '// import { run } from "../../Retry.ts"',
      '/** @example\n * import { Options } from "@volley/core"\n */'
    ].join("\n")
    assert.deepStrictEqual(publicImports(file, source), [
      "../../Retry.ts -> packages/core/src/Retry.ts",
      "../../Fanout.ts -> packages/core/src/Fanout.ts",
      "../../index.ts -> packages/core/src/index.ts",
      "@volley/core",
      "../../Blocking.ts -> packages/core/src/Blocking.ts",
      "../../Http.ts -> packages/core/src/Http.ts"
    ])
  })
})
