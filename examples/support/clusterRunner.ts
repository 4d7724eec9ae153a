// One runner of examples/cluster-crawl.ts: `clusterRunner.ts <port> <database url>`. This is what
// a deployment runs on each machine: a ClusterRunner layer with the HttpClient of your choice.
import { NodeRuntime } from "@effect/platform-node"
import { ClusterRunner } from "@volley/cluster"
import { NodeHttpClient } from "@volley/node"
import { Console, Layer } from "effect"

const [port = "24001", url = "postgres://postgres@127.0.0.1:5432/volley"] = process.argv.slice(2)

const runner = ClusterRunner.layer({ port: Number(port), database: { url }, concurrency: 32, timings: "fast" }).pipe(
  Layer.provide(NodeHttpClient.layer({ connectionsPerOrigin: 8 }))
)

NodeRuntime.runMain(Layer.launch(Layer.effectDiscard(Console.log(`runner ready ${port}`)).pipe(Layer.provide(runner))))
