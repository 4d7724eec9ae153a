// A FIFO for jobs waiting for a thread. Removal from the middle (a cancelled or timed-out job) is
// O(1): the job is marked gone and skipped when it reaches the head, so interrupting 10k queued
// fibers does not cost 10k array splices.

export interface Entry {
  /** Set when the entry leaves the queue some other way than `shift`. */
  removed: boolean
}

export class Queue<A extends Entry> {
  private items: Array<A | undefined> = []
  private head = 0
  private front: Array<A> = []
  private live = 0

  get length(): number {
    return this.live
  }

  push(item: A): void {
    item.removed = false
    this.items.push(item)
    this.live++
  }

  /** Puts a job back at the head (its thread died before it ran). */
  pushFront(item: A): void {
    item.removed = false
    this.front.push(item)
    this.live++
  }

  remove(item: A): void {
    if (item.removed) return
    item.removed = true
    this.live--
  }

  /** The next entry `shift` would return, without taking it. */
  peek(): A | undefined {
    while (this.front.length > 0) {
      const item = this.front[0]!
      if (!item.removed) return item
      this.front.shift()
    }
    while (this.head < this.items.length) {
      const item = this.items[this.head]!
      if (!item.removed) return item
      this.items[this.head++] = undefined
    }
    return undefined
  }

  shift(): A | undefined {
    while (this.front.length > 0) {
      const item = this.front.shift()!
      if (!item.removed) return this.taken(item)
    }
    while (this.head < this.items.length) {
      const item = this.items[this.head]!
      this.items[this.head++] = undefined
      if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items = this.items.slice(this.head)
        this.head = 0
      }
      if (!item.removed) return this.taken(item)
    }
    return undefined
  }

  /** Empties the queue, returning what was in it. */
  drain(): Array<A> {
    const out: Array<A> = []
    for (let item = this.shift(); item !== undefined; item = this.shift()) out.push(item)
    return out
  }

  private taken(item: A): A {
    item.removed = true
    this.live--
    return item
  }
}
