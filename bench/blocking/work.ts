// The two workloads, as plain functions every pool runs: a no-op, and `n` SHA-256 digests of a
// 16 KiB block (native code, so its speed does not depend on which JIT tier V8 has reached; main.ts
// calibrates `n` to about 5 ms on this machine).
import { createHash } from "node:crypto"

const block = new Uint8Array(16 * 1024).fill(7)

export const noop = (n: number): number => n

export const spin = (n: number): number => {
  let x = 0
  for (let i = 0; i < n; i++) x ^= createHash("sha256").update(block).digest()[0]!
  return x
}
