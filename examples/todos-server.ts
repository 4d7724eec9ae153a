// The server for the README's smallest example (examples/smallest.ts): node:http on
// 127.0.0.1:8080 (or $PORT), answering `GET /todos/:id` with `{ id, title }` as JSON and
// anything else with a 404. Leave it running, and run the example in another terminal:
//
//   pnpm example examples/todos-server.ts
//   pnpm example examples/smallest.ts
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"

const titles = ["buy milk", "write the docs", "ship 0.1.0"]

/** The request handler, exported so a test can serve it on a port the kernel picks. */
export const handler = (req: IncomingMessage, res: ServerResponse): void => {
  const id = /^\/todos\/(\d+)$/.exec(req.url ?? "")?.[1]
  if (req.method !== "GET" || id === undefined) {
    res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: "not found" }))
    return
  }
  const todo = { id: Number(id), title: titles[Number(id) - 1] ?? `todo ${id}` }
  res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(todo))
}

if (import.meta.main) {
  const port = Number(process.env.PORT ?? 8080)
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`PORT must be an integer from 0 to 65535, got ${process.env.PORT}`)
    process.exit(1)
  }
  createServer(handler)
    .on("error", (error) => {
      console.error(`todos server: cannot listen on 127.0.0.1:${port}: ${error.message}`)
      process.exit(1)
    })
    .listen(port, "127.0.0.1", function (this: ReturnType<typeof createServer>) {
      const { port } = this.address() as { port: number }
      console.log(`todos server on http://127.0.0.1:${port}/todos/:id (Ctrl-C stops it)`)
    })
}
