import * as NodeClusterSocket from "@effect/platform-node/NodeClusterSocket"
import * as NodeCrypto from "@effect/platform-node/NodeCrypto"
import * as RunnerHealth from "effect/cluster/RunnerHealth"
import * as Runners from "effect/cluster/Runners"
import * as Sharding from "effect/cluster/Sharding"
import * as ShardingConfig from "effect/cluster/ShardingConfig"
import * as SocketRunner from "effect/cluster/SocketRunner"
import * as SqlMessageStorage from "effect/cluster/SqlMessageStorage"
import * as SqlRunnerStorage from "effect/cluster/SqlRunnerStorage"
import * as Layer from "effect/Layer"
import * as RpcSerialization from "effect/rpc/RpcSerialization"

/**
 * `NodeClusterSocket.layer` with SQL storage, minus the environment: that one loads ShardingConfig
 * with `ShardingConfig.layerFromEnv`, which reads `process.env` directly (PORT, HOST, SHARDS_PER_GROUP,
 * ...) whatever ConfigProvider is in place, so a stray `PORT=abc` stopped a runner. Here the config is
 * exactly the options given.
 */
export const layer = (config: Partial<ShardingConfig.ShardingConfig["Service"]>, clientOnly: boolean) =>
  (clientOnly
    ? Layer.provide(SocketRunner.layerClientOnly, NodeClusterSocket.layerClientProtocol)
    : Layer.provide(SocketRunner.layer, [
        NodeClusterSocket.layerSocketServer,
        NodeClusterSocket.layerClientProtocol
      ]).pipe(
        Layer.provide(
          RunnerHealth.layerPing.pipe(
            Layer.provide(Runners.layerRpc),
            Layer.provide(NodeClusterSocket.layerClientProtocol)
          )
        )
      )
  ).pipe(
    Layer.provideMerge(SqlMessageStorage.layer.pipe(Layer.provide(NodeCrypto.layerDigest))),
    Layer.provide(Layer.orDie(SqlRunnerStorage.layer)),
    Layer.provide(ShardingConfig.layer(config)),
    Layer.provide(RpcSerialization.layerSchemaBinary())
  )

/** `SingleRunner.layer` (SQL storage), likewise without the environment. */
export const single = (config: Partial<ShardingConfig.ShardingConfig["Service"]>) =>
  Sharding.layer.pipe(
    Layer.provideMerge(Runners.layerNoop),
    Layer.provideMerge(SqlMessageStorage.layer),
    Layer.provide([Layer.orDie(SqlRunnerStorage.layer), RunnerHealth.layerNoop]),
    Layer.provide(ShardingConfig.layer(config))
  )
