import { NodeRuntime } from "@effect/platform-node"
import { Http } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Console, Effect, Schema } from "effect"

const Todo = Schema.Struct({ id: Schema.Number, title: Schema.String })

const program = Effect.forEach(
  [1, 2, 3].map((id) => `http://127.0.0.1:8080/todos/${id}`),
  (url) => Http.getJson(url, Todo), // Effect<Todo, HttpClientError | RedirectError | RetryError, HttpClient>
  { concurrency: 16 }
).pipe(
  Effect.flatMap((todos) => Console.log(todos)),
  Effect.provide(NodeHttpClient.layer({ connectionsPerOrigin: 16, headersTimeout: "5 seconds" }))
)

NodeRuntime.runMain(program)
