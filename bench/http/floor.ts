// The floor's handler: a bare undici handler object per request (no promise, no Readable), which
// keeps the body chunks as undici hands them over and reports whether the status was 200. What
// any client on undici pays at least beyond the parser, the pool and the socket writes.
import type { Dispatcher } from "undici"

export class FloorHandler implements Dispatcher.DispatchHandler {
  status = 0
  chunks: Array<Buffer> = []
  readonly done: (ok: boolean, chunks: Array<Buffer>) => void
  constructor(done: (ok: boolean, chunks: Array<Buffer>) => void) {
    this.done = done
  }
  onRequestStart(): void {}
  onResponseStart(_: Dispatcher.DispatchController, statusCode: number): void {
    this.status = statusCode
  }
  onResponseData(_: Dispatcher.DispatchController, chunk: Buffer): void {
    this.chunks.push(chunk)
  }
  onResponseEnd(): void {
    // The body stays as undici handed it over (no copy, no join): nothing is cheaper.
    this.done(this.status === 200, this.chunks)
  }
  onResponseError(): void {
    this.done(false, this.chunks)
  }
}
