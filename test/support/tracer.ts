// A tracer for tests that records spans: Effect's native spans, with `onEnd` called for each as it
// ends (its name, kind and attributes are final then).
import { Tracer } from "effect"

export const onSpanEnd = (onEnd: (span: Tracer.Span) => void): Tracer.Tracer =>
  Tracer.make({
    span(options) {
      const span = Tracer.nativeTracer.span(options)
      const end = span.end.bind(span)
      span.end = (endTime, exit) => {
        onEnd(span)
        end(endTime, exit)
      }
      return span
    }
  })
