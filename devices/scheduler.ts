/**
 * One timer for the whole fleet: a binary min-heap of (dueMs, id). The runner sleeps until the
 * earliest due time, pops every due entry, and pushes each back with its next due time.
 * A timer per device would cost a timer object and a wake-up each; this costs one.
 */
export class DueHeap {
  private due: number[] = []
  private ids: number[] = []

  get size(): number {
    return this.due.length
  }

  /** Earliest due time, or Infinity when empty. */
  peekDue(): number {
    return this.due.length ? this.due[0]! : Number.POSITIVE_INFINITY
  }

  push(dueMs: number, id: number): void {
    const due = this.due
    const ids = this.ids
    let i = due.length
    due.push(dueMs)
    ids.push(id)
    while (i > 0) {
      const p = (i - 1) >> 1
      if (due[p]! <= dueMs) break
      due[i] = due[p]!
      ids[i] = ids[p]!
      i = p
    }
    due[i] = dueMs
    ids[i] = id
  }

  /** Removes and returns the id of the earliest entry. */
  pop(): number | undefined {
    const due = this.due
    const ids = this.ids
    if (due.length === 0) return undefined
    const top = ids[0]!
    const lastDue = due.pop()!
    const lastId = ids.pop()!
    const n = due.length
    if (n > 0) {
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        if (l >= n) break
        const r = l + 1
        const c = r < n && due[r]! < due[l]! ? r : l
        if (due[c]! >= lastDue) break
        due[i] = due[c]!
        ids[i] = ids[c]!
        i = c
      }
      due[i] = lastDue
      ids[i] = lastId
    }
    return top
  }
}
