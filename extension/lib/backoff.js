// Exponential backoff with jitter for TabAgentClient's background reconnect:
// it owns the attempt count and the one retry timer. Timers and randomness
// are injected, so tests drive it with a virtual clock.

/**
 * @typedef {import('./client-types.js').BackoffOptions} BackoffOptions
 * @typedef {import('./client-types.js').Timers} Timers
 */

export class Backoff {
  /** @type {Required<BackoffOptions>} */ #options;
  #timers;
  #random;
  #attempt = 0;
  /** @type {any} */ #timer = null;
  /** @type {number | null} */ #delay = null;

  /**
   * @param {BackoffOptions | undefined} options
   * @param {Timers} timers
   * @param {() => number} random
   */
  constructor(options, timers, random) {
    this.#options = { initialMs: 500, maxMs: 30_000, factor: 2, jitter: 0.2, ...options };
    this.#timers = timers;
    this.#random = random;
  }

  /** The delay of the pending retry, or null when none is scheduled. */
  get retryInMs() {
    return this.#delay;
  }

  /**
   * Run `fn` after the next delay (replacing any pending retry); each call
   * waits longer, up to the ceiling, until `reset()`.
   * @param {() => void} fn
   */
  schedule(fn) {
    this.clear();
    const { initialMs, maxMs, factor, jitter } = this.#options;
    const base = Math.min(maxMs, initialMs * Math.pow(factor, this.#attempt));
    const delay = Math.round(base * (1 - jitter * this.#random()));
    this.#attempt += 1;
    this.#delay = delay;
    this.#timer = this.#timers.setTimeout(() => {
      this.#timer = null;
      fn();
    }, delay);
  }

  /** Cancel the pending retry, if any. */
  clear() {
    if (this.#timer !== null) {
      this.#timers.clearTimeout(this.#timer);
      this.#timer = null;
    }
    this.#delay = null;
  }

  /** A success: the next failure starts from the first delay again. */
  reset() {
    this.#attempt = 0;
  }
}
