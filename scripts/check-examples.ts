// Compiles every ```ts block under a JSDoc `@example` of the public modules, so the examples in the
// docs cannot drift from the API, and lists the public exports that have no `@example` at all.
//
//   node --conditions=@volley/source scripts/check-examples.ts [file.ts ...]
//
// Without arguments it checks packages/{core,node,cluster}/src/*.ts, and compiles the examples under
// src/internal/ too: a public module re-exports what is documented there (`Retry.make`, `Options.*`),
// though internal exports need no `@example` of their own.
// Each example becomes its own module under .examples-check/ inside the repo, so `@volley/*` and
// `effect` resolve from the workspace (sources, through the `@volley/source` condition), and one
// `tsc` run checks them all. Errors are reported at the line of the JSDoc they came from.
// Exits 1 when an example does not compile or an export lacks an `@example`.
import { spawnSync } from "node:child_process"
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join, relative, resolve } from "node:path"

const root = new URL("..", import.meta.url).pathname

interface Example {
  /** Repo-relative path of the module the example is documented in. */
  readonly file: string
  /** 1-based line, in `file`, of the example's first line of code. */
  readonly line: number
  readonly code: string
}

interface Missing {
  readonly file: string
  readonly line: number
  readonly name: string
}

const starPrefix = /^\s*\* ?/

// Every `/** ... */` block with the 1-based line it starts on.
const jsdocBlocks = (text: string) =>
  Array.from(text.matchAll(/\/\*\*[\s\S]*?\*\//g), (m) => ({
    text: m[0],
    start: m.index,
    end: m.index + m[0].length,
    line: text.slice(0, m.index).split("\n").length
  }))

/** The ```ts blocks that follow an `@example` tag in the JSDoc of `text` (the source of `file`). */
const extractExamples = (file: string, text: string): ReadonlyArray<Example> => {
  const examples: Array<Example> = []
  for (const block of jsdocBlocks(text)) {
    const lines = block.text.split("\n").map((l) => l.replace(starPrefix, ""))
    let inExample = false
    let code: Array<string> | undefined
    let codeLine = 0
    lines.forEach((l, i) => {
      if (code !== undefined) {
        if (l.trim() === "```") {
          examples.push({ file, line: codeLine, code: code.join("\n") })
          code = undefined
        } else {
          code.push(l)
        }
      } else if (/^@\w+/.test(l.trim())) {
        inExample = l.trim().startsWith("@example")
      } else if (inExample && /^```(ts|typescript)\s*$/.test(l.trim())) {
        code = []
        codeLine = block.line + i + 1
      }
    })
  }
  return examples
}

/** Top-level `export const/function/class/interface/type` declarations whose JSDoc has no ```ts `@example`. */
const findMissing = (file: string, text: string): ReadonlyArray<Missing> => {
  const blocks = jsdocBlocks(text)
  const seen = new Set<string>()
  const missing: Array<Missing> = []
  const declaration =
    /^export (?:declare )?(?:abstract )?(?:const|let|function\*?|class|interface|type|enum) +([A-Za-z_$][\w$]*)/gm
  for (const m of text.matchAll(declaration)) {
    const name = m[1] ?? ""
    if (seen.has(name)) continue // overloads and declaration merging: the first one carries the docs
    seen.add(name)
    const doc = blocks.find((b) => text.slice(b.end, m.index).trim() === "")
    // An `@example` counts only with a ```ts block in it: prose alone is never compiled.
    if (doc === undefined || extractExamples(file, doc.text).length === 0) {
      missing.push({ file, name, line: text.slice(0, m.index).split("\n").length })
    }
  }
  return missing
}

const modulesUnder = (dir: string, recursive: boolean) =>
  ["core", "node", "cluster"].flatMap((pkg) =>
    (readdirSync(join(root, "packages", pkg, dir), { recursive }) as Array<string>)
      .filter((f) => f.endsWith(".ts") && !f.endsWith(".test.ts"))
      .sort()
      .map((f) => join("packages", pkg, dir, f))
  )
const publicModules = () => modulesUnder("src", false)
const internalModules = () => modulesUnder("src/internal", true)

interface Report {
  readonly examples: number
  /** `file:line: message` for every compile error, at the JSDoc line it came from. */
  readonly errors: ReadonlyArray<string>
  readonly missing: ReadonlyArray<Missing>
}

/** Extracts, compiles and reports; `files` are repo-relative, `examplesOnly` need no `@example`. */
const check = (files: ReadonlyArray<string>, examplesOnly: ReadonlyArray<string> = []): Report => {
  const dir = join(root, ".examples-check", `run-${process.pid}`)
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  try {
    const examples: Array<Example> = []
    const missing: Array<Missing> = []
    for (const file of [...files, ...examplesOnly]) {
      const text = readFileSync(join(root, file), "utf8")
      examples.push(...extractExamples(file, text))
      if (files.includes(file)) missing.push(...findMissing(file, text))
    }
    const names = examples.map((example, i) => {
      const name = `example-${String(i).padStart(3, "0")}.ts`
      // Lines map 1:1 to the JSDoc; the trailing `export {}` makes an import-less example a module too.
      writeFileSync(join(dir, name), `${example.code}\nexport {}\n`)
      return name
    })
    const tsconfig = {
      extends: relative(dir, join(root, "tsconfig.base.json")),
      compilerOptions: { types: ["node"], noUnusedLocals: false },
      files: names
    }
    writeFileSync(join(dir, "tsconfig.json"), JSON.stringify(tsconfig, null, 2))
    const tsc = spawnSync(
      process.execPath,
      [join(root, "node_modules/typescript/bin/tsc"), "-p", join(dir, "tsconfig.json"), "--pretty", "false"],
      { cwd: root, encoding: "utf8" }
    )
    if (tsc.error !== undefined) throw tsc.error
    const output = `${tsc.stdout}${tsc.stderr}`.trim()
    const errors = output === "" ? [] : output.split("\n").map((l) => locate(l, dir, names, examples))
    if (tsc.status !== 0 && errors.length === 0) errors.push(`tsc exited with ${tsc.status} and printed nothing`)
    return { examples: examples.length, errors, missing }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

// "…/example-007.ts(3,5): error TS2345: …" -> "packages/core/src/Http.ts:42:5: error TS2345: …"
const locate = (line: string, dir: string, names: ReadonlyArray<string>, examples: ReadonlyArray<Example>) => {
  const m = /^(.*?)\((\d+),(\d+)\): (.*)$/.exec(line)
  if (m === null) return line
  const [, path = "", row = "0", col = "0", message = ""] = m
  const example = examples[names.indexOf(relative(dir, resolve(root, path)))]
  if (example === undefined) return `${relative(root, resolve(root, path))}:${row}:${col}: ${message}`
  return `${example.file}:${example.line + Number(row) - 1}:${col}: ${message}`
}

if (import.meta.main) {
  const started = performance.now()
  const args = process.argv.slice(2)
  const report =
    args.length > 0 ? check(args.map((a) => relative(root, resolve(a)))) : check(publicModules(), internalModules())
  for (const error of report.errors) console.error(error)
  for (const m of report.missing) console.error(`${m.file}:${m.line}: export ${m.name} has no @example`)
  const seconds = ((performance.now() - started) / 1000).toFixed(1)
  console.log(
    `${report.examples} examples, ${report.errors.length} compile errors, ` +
      `${report.missing.length} exports without @example (${seconds} s)`
  )
  process.exitCode = report.errors.length > 0 || report.missing.length > 0 ? 1 : 0
}
