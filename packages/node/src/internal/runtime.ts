// Imported first by every public module, so it runs before undici loads: on an older Node the
// failure would otherwise come from deep inside undici ("Cannot read properties of undefined (reading 'bind')").
const [major = 0, minor = 0] = process.versions.node.split(".").map(Number)
if (major < 22 || (major === 22 && minor < 19)) {
  throw new Error(`@volley/node needs Node.js >= 22.19 (for Effect 4 and undici), this is Node.js ${process.version}`)
}
