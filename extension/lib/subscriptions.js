// Who listens to which pushed events, for TabAgentClient: the callbacks and
// their event names ('*' = all), what the server has to be asked for on a
// connection, and dispatching an event by name.
//
// The server never forgets a subscription while the connection lasts (a new
// Subscribe adds one; there is no unsubscribe), and it pushes each event
// under the id of the Subscribe that asked for it. So the client sends a new
// Subscribe only when it wants more than the server already tells, and
// listens only to the newest one (`acceptsEvent`), which names everything
// wanted. Narrowing is local: events nobody wants are dropped here.

import { eventName } from './protocol.js';

/**
 * @typedef {import('./protocol.js').Envelope} Envelope
 * @typedef {import('./client-types.js').Connection} Connection
 * @typedef {import('./client-types.js').Logger} Logger
 * @typedef {{events: Set<string>, callback: (msg: Envelope) => void}} Subscription
 */

/** Event name meaning every event; sent to the server as an empty list. */
const ALL = '*';

export class Subscriptions {
  /** @type {Set<Subscription>} */ #subs = new Set();
  #logger;

  /** @param {Logger} logger */
  constructor(logger) {
    this.#logger = logger;
  }

  get size() {
    return this.#subs.size;
  }

  /**
   * @param {string[]} events
   * @param {(msg: Envelope) => void} callback
   * @returns {Subscription}
   */
  add(events, callback) {
    const sub = { events: new Set(events), callback };
    this.#subs.add(sub);
    return sub;
  }

  /** @param {Subscription} sub @returns {boolean} whether it was there */
  delete(sub) {
    return this.#subs.delete(sub);
  }

  clear() {
    this.#subs.clear();
  }

  /**
   * The Subscribe to send when the server, which tells `told`, does not yet
   * tell everything wanted; null when nothing needs sending.
   * @param {Set<string>} told
   * @returns {{events: string[], told: Set<string>} | null}
   */
  request(told) {
    if (told.has(ALL)) return null;
    /** @type {Set<string>} */
    const wanted = new Set();
    for (const s of this.#subs) for (const e of s.events) wanted.add(e);
    if (wanted.has(ALL)) return { events: [], told: new Set([ALL]) };
    if ([...wanted].every((e) => told.has(e))) return null;
    return { events: [...wanted].sort(), told: wanted };
  }

  /**
   * Whether a pushed event on `conn` belongs to its current subscription:
   * events without an id (made by the extension itself) always do.
   * @param {Envelope} msg
   * @param {Connection} conn
   */
  static acceptsEvent(msg, conn) {
    if (msg.id === undefined || msg.id === null) return true;
    return conn.subscriptionId !== null && String(msg.id) === String(conn.subscriptionId);
  }

  /**
   * Call every subscriber of the event's name.
   * @param {Envelope} msg
   */
  dispatch(msg) {
    const name = eventName(msg);
    for (const sub of [...this.#subs]) {
      if (!sub.events.has(name) && !sub.events.has(ALL)) continue;
      try {
        sub.callback(msg);
      } catch (e) {
        this.#logger.warn('tabagent: event callback threw', e);
      }
    }
  }
}
