// OpenTelemetry through @effect/opentelemetry, as a traced service runs it: spans batched to an
// exporter, here one that keeps them in memory (reset it between runs).
import * as OtelTracer from "@effect/opentelemetry/OtelTracer"
import { BasicTracerProvider, BatchSpanProcessor, type InMemorySpanExporter } from "@opentelemetry/sdk-trace-base"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

export const otel = (exporter: InMemorySpanExporter) =>
  OtelTracer.layer.pipe(
    Layer.provide(
      Layer.effect(
        OtelTracer.OtelTracerProvider,
        Effect.acquireRelease(
          Effect.sync(() => new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(exporter)] })),
          (provider) => Effect.promise(() => provider.shutdown())
        )
      )
    )
  )
