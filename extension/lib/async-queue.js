// A push-to-pull bridge: callbacks push items, one consumer awaits them in
// order. TabAgentClient.stream uses it to turn reply callbacks into an
// async iterator.

/** @template T */
export class AsyncQueue {
  /** @type {T[]} */ #items = [];
  /** @type {((item: T) => void) | null} */ #waiter = null;

  /** @param {T} item */
  push(item) {
    if (this.#waiter) {
      const wake = this.#waiter;
      this.#waiter = null;
      wake(item);
    } else {
      this.#items.push(item);
    }
  }

  /** The next item, waiting for it if none is queued. @returns {Promise<T>} */
  shift() {
    if (this.#items.length > 0) return Promise.resolve(/** @type {T} */ (this.#items.shift()));
    return new Promise((resolve) => {
      this.#waiter = resolve;
    });
  }
}
