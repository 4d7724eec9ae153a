// Fails fast, with a readable message, when a script runs on the machine's old Node
// instead of the Node 24 that the `node` devDependency puts on every pnpm script's PATH.
const [major = 0, minor = 0] = process.versions.node.split(".").map(Number)
if (major < 22 || (major === 22 && minor < 19)) {
  console.error(`volley needs Node >= 22.19, this is ${process.version}. Run it through pnpm (pnpm install first).`)
  process.exit(1)
}
console.log(`node ${process.version} (${process.execPath})`)
