import * as Net from "node:net"

// Below 32768: Linux hands out ephemeral ports from 32768 up, so a port picked there can be taken by any
// outgoing connection between the check and the bind (the cluster notes saw EADDRINUSE on 34431).
const low = 20_000
const high = 32_000

const canBind = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const server = Net.createServer()
    server.once("error", () => resolve(false))
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)))
  })

const taken = new Set<number>()

/** A loopback port below the ephemeral range that was free when checked (never the same one twice here). */
export const freePort = async (): Promise<number> => {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low))
    if (!taken.has(port) && (await canBind(port))) {
      taken.add(port)
      return port
    }
  }
  throw new Error(`no free loopback port found in ${low}-${high} after 200 attempts`)
}
