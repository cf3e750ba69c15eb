// The async iterator TabAgentClient.stream returns: every chunk of one
// request, then its final reply; an error reply throws. Leaving the loop
// early (break, throw) calls `abandon`, so the client stops tracking the
// request and stops a generation on the server.

import { AsyncQueue } from './async-queue.js';

/**
 * @typedef {import('./protocol.js').Envelope} Envelope
 * @typedef {import('./protocol.js').RequestId} RequestId
 */

/**
 * @param {RequestId} id  the request's id, exposed for cancel
 * @param {(onChunk: (m: Envelope) => void, left: () => boolean) => Promise<Envelope>} start
 *   sends the request and resolves with its final reply; `left()` says the
 *   consumer has gone already (then it should not send at all)
 * @param {() => void} abandon  the consumer left before the request ended
 * @returns {AsyncIterableIterator<Envelope> & {id: RequestId}}
 */
export function replyStream(id, start, abandon) {
  /** @type {AsyncQueue<{value?: Envelope, last?: boolean, error?: unknown}>} */
  const queue = new AsyncQueue();
  let finished = false; // iterator has returned done
  let settled = false; // the request itself has ended
  start(
    (m) => queue.push({ value: m }),
    () => finished,
  ).then(
    (final) => {
      settled = true;
      queue.push({ value: final, last: true });
    },
    (err) => {
      settled = true;
      queue.push({ error: err });
    },
  );
  return {
    id,
    async next() {
      if (finished) return { value: undefined, done: true };
      const item = await queue.shift();
      if ('error' in item) {
        finished = true;
        throw item.error;
      }
      if (item.last) finished = true;
      return { value: /** @type {Envelope} */ (item.value), done: false };
    },
    async return() {
      if (!finished) {
        finished = true;
        if (!settled) abandon();
      }
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}
