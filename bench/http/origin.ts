// Fallback origin when nginx is not installed: a tuned node:http server, run as its own
// process (`node origin.ts <port>`) so that it never shares a CPU with the clients it serves.
import { createServer } from "node:http"

const port = Number(process.argv[2])
const small = Buffer.from("ok")
const large = Buffer.alloc(16 * 1024, 120)
const todo = Buffer.from('{"id":1,"title":"ok"}')
const headers = (length: number) => ({ "content-type": "text/plain", "content-length": String(length) })

const server = createServer({ keepAliveTimeout: 65_000, requestTimeout: 0 }, (req, res) => {
  switch (req.url) {
    case "/2b":
      return res.writeHead(200, headers(small.length)).end(small)
    case "/todo":
      return res.writeHead(200, { "content-type": "application/json", "content-length": String(todo.length) }).end(todo)
    case "/16k":
      return res.writeHead(200, headers(large.length)).end(large)
    case "/sleep":
      return setTimeout(() => res.writeHead(200, headers(small.length)).end(small), 20)
    default:
      return res.writeHead(404).end()
  }
})
server.maxRequestsPerSocket = 0
server.listen(port, "127.0.0.1", () => process.stdout.write("ready\n"))
process.on("SIGTERM", () => process.exit(0))
