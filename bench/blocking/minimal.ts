// The floor: a hand-written worker_threads pool with one task in flight per thread, a FIFO queue
// and nothing else (no validation, no cancellation, no crash handling). What any pool costs on
// top of the bare message round trip shows against it.
import { Worker } from "node:worker_threads"

interface Pending {
  readonly kind: string
  readonly n: number
  readonly resolve: (value: number) => void
}

export class MinimalPool {
  private readonly idle: Array<Worker> = []
  private readonly queue: Array<Pending> = []
  private head = 0
  private readonly current = new Map<Worker, Pending>()
  private readonly workers: Array<Worker> = []

  constructor(threads: number) {
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(new URL("./minimalWorker.ts", import.meta.url))
      worker.on("message", (result: number) => {
        this.current.get(worker)!.resolve(result)
        this.current.delete(worker)
        this.next(worker)
      })
      this.workers.push(worker)
      this.next(worker)
    }
  }

  run(kind: string, n: number): Promise<number> {
    return new Promise((resolve) => {
      const worker = this.idle.pop()
      if (worker === undefined) this.queue.push({ kind, n, resolve })
      else this.start(worker, { kind, n, resolve })
    })
  }

  close(): Promise<unknown> {
    return Promise.all(this.workers.map((w) => w.terminate()))
  }

  private next(worker: Worker): void {
    if (this.head < this.queue.length) {
      const pending = this.queue[this.head++]!
      if (this.head === this.queue.length) {
        this.queue.length = 0
        this.head = 0
      }
      this.start(worker, pending)
    } else this.idle.push(worker)
  }

  private start(worker: Worker, pending: Pending): void {
    this.current.set(worker, pending)
    worker.postMessage([pending.kind, pending.n])
  }
}
