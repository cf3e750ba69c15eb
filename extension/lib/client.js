// TabAgentClient: one request/stream/subscribe/cancel API over whichever
// transport reaches tabagent. It owns the connection: the choice of
// transport (native messaging first, then WebRTC, unless the user forces one),
// the probe that proves the far end answers, reconnection with backoff
// (backoff.js), and the status it reports. Requests in flight live in
// pending.js, event subscribers in subscriptions.js, stream iterators in
// reply-stream.js. It knows nothing about Chrome: a transport is anything
// that hands out a port shaped like chrome.runtime.Port (postMessage,
// onMessage, onDisconnect, disconnect), so node tests drive it with fakes and
// the extension plugs in connectNative or the offscreen bridge. Timers and
// randomness are injected too, so timeouts and backoff are testable.

import { GENERATION_TYPES, Req, isEvent } from './protocol.js';
import { TabAgentError, messageOf } from './errors.js';
import { Backoff } from './backoff.js';
import { PendingRequests } from './pending.js';
import { Subscriptions } from './subscriptions.js';
import { replyStream } from './reply-stream.js';

export { TabAgentError };

/**
 * @typedef {import('./protocol.js').Envelope} Envelope
 * @typedef {import('./protocol.js').RequestId} RequestId
 * @typedef {import('./protocol.js').ProblemDetails} ProblemDetails
 * @typedef {import('./client-types.js').PortLike} PortLike
 * @typedef {import('./client-types.js').Transport} Transport
 * @typedef {import('./client-types.js').ClientState} ClientState
 * @typedef {import('./client-types.js').ClientStatus} ClientStatus
 * @typedef {import('./client-types.js').BackoffOptions} BackoffOptions
 * @typedef {import('./client-types.js').ClientOptions} ClientOptions
 * @typedef {import('./client-types.js').RequestOptions} RequestOptions
 * @typedef {import('./client-types.js').Connection} Connection
 */

export class TabAgentClient {
  /** @type {Transport[]} */ #transports;
  /** @type {string} */ #preference;
  #requestTimeoutMs;
  #streamIdleTimeoutMs;
  #probeTimeoutMs;
  #reconnect;
  #backoff;
  #logger;
  #pending;
  #subs;

  /** @type {ClientState} */ #state = 'idle';
  /** @type {Connection | null} */ #conn = null;
  /** @type {Promise<string> | null} */ #connecting = null;
  #nextId = 1;
  /** @type {string | null} */ #lastError = null;
  /** @type {Envelope | null} */ #health = null;
  /** @type {Set<(s: ClientStatus) => void>} */ #statusListeners = new Set();

  /** @param {ClientOptions} options */
  constructor(options) {
    if (!options || !Array.isArray(options.transports) || options.transports.length === 0) {
      throw new TypeError('TabAgentClient needs at least one transport');
    }
    this.#transports = options.transports;
    this.#preference = options.preference ?? 'auto';
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.#streamIdleTimeoutMs = options.streamIdleTimeoutMs ?? 120_000;
    this.#probeTimeoutMs = options.probeTimeoutMs ?? 3_000;
    this.#reconnect = options.reconnect ?? 'auto';
    const timers = options.timers ?? {
      setTimeout: (/** @type {() => void} */ fn, /** @type {number} */ ms) => setTimeout(fn, ms),
      clearTimeout: (/** @type {any} */ t) => clearTimeout(t),
    };
    this.#backoff = new Backoff(options.backoff, timers, options.random ?? Math.random);
    this.#logger = options.logger ?? { warn: () => {} };
    this.#pending = new PendingRequests({
      timers,
      logger: this.#logger,
      onOrphan: (id) => this.#bestEffortCancel(id),
      onSendError: (conn, reason) => this.#handleDisconnect(conn, reason),
    });
    this.#subs = new Subscriptions(this.#logger);
  }

  // ---- public API -------------------------------------------------------

  /** A fresh request id (numbers, never reused by this client). */
  nextId() {
    return this.#nextId++;
  }

  /** @returns {ClientStatus} */
  status() {
    return {
      state: this.#state,
      transport: this.#conn ? this.#conn.transport.name : null,
      preference: this.#preference,
      lastError: this.#lastError,
      retryInMs: this.#state === 'backoff' ? this.#backoff.retryInMs : null,
      health: this.#conn ? this.#health : null,
    };
  }

  /**
   * Listen to status changes (state, transport). Returns an unsubscribe function.
   * @param {(s: ClientStatus) => void} listener
   */
  onStatus(listener) {
    this.#statusListeners.add(listener);
    return () => this.#statusListeners.delete(listener);
  }

  /**
   * Connect now if not connected (cancelling any backoff wait). Resolves with
   * the transport's name; rejects with a TabAgentError of type 'unavailable'
   * listing why each candidate failed.
   * @returns {Promise<string>}
   */
  connect() {
    if (this.#state === 'closed') return Promise.reject(this.#closedError());
    if (this.#conn) return Promise.resolve(this.#conn.transport.name);
    if (this.#connecting) return this.#connecting;
    this.#backoff.clear();
    this.#connecting = this.#doConnect().finally(() => {
      this.#connecting = null;
    });
    return this.#connecting;
  }

  /**
   * Drop the current connection (pending requests fail with 'disconnected')
   * and connect again from the first candidate.
   */
  reconnect() {
    if (this.#conn) this.#dropConnection(this.#conn, 'reconnecting', false);
    this.#backoff.reset();
    return this.connect();
  }

  /**
   * Change the transport preference ('auto' or a transport name). A live
   * connection over a transport no longer allowed is dropped; the next
   * request (or the background reconnect) uses the new choice.
   * @param {string} preference
   */
  setPreference(preference) {
    this.#preference = preference;
    const conn = this.#conn;
    if (conn && !this.#candidates().includes(conn.transport)) {
      this.#dropConnection(conn, `transport preference changed to ${preference}`, false);
      if (this.#wantsConnection()) this.connect().catch(() => {});
    } else {
      this.#emitStatus();
    }
  }

  /**
   * Send a request and resolve with its final reply (`done: true`). An Error
   * reply rejects with a TabAgentError carrying the server's problem details.
   * @param {string} type
   * @param {Record<string, any>} [fields]
   * @param {RequestOptions} [options]
   * @returns {Promise<Envelope>}
   */
  async request(type, fields = {}, options = {}) {
    const id = options.id ?? this.nextId();
    if (options.signal?.aborted) throw new TabAgentError({ type: 'aborted', title: 'aborted' }, id);
    const conn = await this.#ensureConnected();
    return this.#pending.send(conn, type, fields, {
      id,
      timeoutMs: options.timeoutMs ?? this.#requestTimeoutMs,
      idle: false,
      onChunk: options.onChunk,
      signal: options.signal,
    });
  }

  /**
   * Send a request and iterate over its replies: every chunk, then the final
   * `done: true` message; an Error reply throws. The returned iterable has the
   * request's `id` (for cancel). Leaving the loop early (break, throw) stops a
   * generation on the server. `timeoutMs` is an idle timeout between replies.
   * Chat, Generate, Responses and CreateResponse get `stream: true` unless fields say otherwise.
   * @param {string} type
   * @param {Record<string, any>} [fields]
   * @param {RequestOptions} [options]
   * @returns {AsyncIterableIterator<Envelope> & {id: RequestId}}
   */
  stream(type, fields = {}, options = {}) {
    const id = options.id ?? this.nextId();
    const body = GENERATION_TYPES.has(type) && fields.stream === undefined ? { ...fields, stream: true } : fields;
    return replyStream(
      id,
      async (onChunk, left) => {
        const conn = await this.#ensureConnected();
        if (left()) throw new TabAgentError({ type: 'aborted', title: 'aborted' }, id); // left before it was sent
        return this.#pending.send(conn, type, body, {
          id,
          timeoutMs: options.timeoutMs ?? this.#streamIdleTimeoutMs,
          idle: true,
          onChunk,
          signal: options.signal,
        });
      },
      () => this.#pending.abandon(id, GENERATION_TYPES.has(type)),
    );
  }

  /**
   * Ask the server to stop the generation started by request `id`. The
   * generation's own stream then ends with finish_reason "cancelled".
   * @param {RequestId} id
   * @param {{timeoutMs?: number}} [options]
   */
  cancel(id, options = {}) {
    return this.request(Req.StopGeneration, { target_id: id }, { timeoutMs: options.timeoutMs ?? 10_000 });
  }

  /**
   * Receive pushed events whose name is in `events` ('*' = all). The
   * subscription survives reconnects (it is sent again on each new
   * connection, and keeps a background reconnect going). Resolves with an
   * unsubscribe function; rejects only if the server refuses the Subscribe.
   * @param {string[]} events
   * @param {(msg: Envelope) => void} callback
   * @returns {Promise<() => void>}
   */
  async subscribe(events, callback) {
    const sub = this.#subs.add(events, callback);
    // The server cannot narrow a subscription; events nobody wants are dropped here.
    const unsubscribe = () => {
      this.#subs.delete(sub);
    };
    let conn;
    try {
      conn = await this.#ensureConnected();
    } catch {
      return unsubscribe; // kept; sent when a reconnect succeeds
    }
    try {
      await this.#syncSubscriptions(conn);
    } catch (e) {
      if (e instanceof TabAgentError && (e.type === 'disconnected' || e.type === 'timeout')) return unsubscribe;
      this.#subs.delete(sub);
      throw e;
    }
    return unsubscribe;
  }

  /** Close for good: fail everything pending, stop reconnecting. */
  close() {
    if (this.#state === 'closed') return;
    this.#backoff.clear();
    const conn = this.#conn;
    this.#setState('closed');
    if (conn) this.#dropConnection(conn, 'client closed', false);
    this.#pending.failAll(() => this.#closedError());
    this.#subs.clear();
    this.#emitStatus();
  }

  // ---- connection -------------------------------------------------------

  /** @returns {Transport[]} */
  #candidates() {
    if (this.#preference === 'auto') return this.#transports;
    return this.#transports.filter((t) => t.name === this.#preference);
  }

  #wantsConnection() {
    if (this.#state === 'closed' || this.#reconnect === 'never') return false;
    return this.#reconnect === 'always' || this.#subs.size > 0;
  }

  /** @returns {Promise<Connection>} */
  async #ensureConnected() {
    if (!this.#conn) await this.connect();
    if (!this.#conn) throw new TabAgentError({ type: 'disconnected', title: 'connection lost' });
    return this.#conn;
  }

  /** @returns {Promise<string>} */
  async #doConnect() {
    this.#setState('connecting');
    const candidates = this.#candidates();
    /** @type {string[]} */
    const reasons = [];
    if (candidates.length === 0) reasons.push(`no transport named ${this.#preference}`);
    for (const transport of candidates) {
      try {
        const { conn, health } = await this.#open(transport);
        if (this.#state === 'closed') {
          this.#dropConnection(conn, 'client closed', false);
          throw this.#closedError();
        }
        this.#conn = conn;
        this.#health = health;
        this.#backoff.reset();
        this.#lastError = null;
        this.#setState('connected');
        if (this.#subs.size > 0) {
          this.#syncSubscriptions(conn).catch((e) => this.#logger.warn('tabagent: resubscribe failed', e));
        }
        return transport.name;
      } catch (e) {
        if (this.#state === 'closed') throw this.#closedError();
        const why = e instanceof TabAgentError && e.detail ? e.detail : messageOf(e);
        reasons.push(`${transport.name}: ${why || 'failed'}`);
      }
    }
    const err = new TabAgentError({
      type: 'unavailable',
      title: 'tabagent is not reachable',
      status: 503,
      detail: reasons.join('; '),
    });
    this.#lastError = err.detail;
    if (this.#wantsConnection()) this.#scheduleReconnect();
    else this.#setState('idle');
    throw err;
  }

  /**
   * Open a port on one transport and prove the far end answers.
   * @param {Transport} transport
   * @returns {Promise<{conn: Connection, health: Envelope}>}
   */
  async #open(transport) {
    const port = await transport.connect();
    /** @type {Connection} */
    const conn = { port, transport, open: true, told: new Set(), subscriptionId: null, syncing: null };
    port.onMessage.addListener((msg) => this.#handleMessage(conn, msg));
    port.onDisconnect.addListener((_port, error) => {
      const reason = messageOf(error) || transport.lastError?.() || 'port closed';
      this.#handleDisconnect(conn, reason);
    });
    const probe = transport.probe ?? { type: Req.Health };
    try {
      const health = await this.#pending.send(conn, probe.type, probe.fields ?? {}, {
        id: this.nextId(),
        timeoutMs: transport.probeTimeoutMs ?? this.#probeTimeoutMs,
        idle: false,
      });
      return { conn, health };
    } catch (e) {
      this.#dropConnection(conn, messageOf(e), false);
      throw e;
    }
  }

  /**
   * The far end closed the port (host exited, channel closed, ...).
   * @param {Connection} conn
   * @param {string} reason
   */
  #handleDisconnect(conn, reason) {
    if (!conn.open) return;
    this.#dropConnection(conn, reason, true);
  }

  /**
   * Forget a connection: fail its pending requests, disconnect the port, and
   * if it was the current one, go idle or schedule a reconnect.
   * @param {Connection} conn
   * @param {string} reason
   * @param {boolean} byPeer  the far end closed it (so do not call disconnect)
   */
  #dropConnection(conn, reason, byPeer) {
    if (!conn.open) return;
    conn.open = false;
    if (!byPeer) {
      try {
        conn.port.disconnect();
      } catch {
        // already gone; nothing to release
      }
    }
    this.#pending.failConnection(conn, reason);
    if (this.#conn !== conn) return;
    this.#conn = null;
    this.#health = null;
    this.#lastError = reason;
    if (this.#state === 'closed') return;
    if (byPeer && this.#wantsConnection()) this.#scheduleReconnect();
    else this.#setState('idle');
  }

  #scheduleReconnect() {
    this.#backoff.schedule(() => {
      this.connect().catch(() => {
        // reported through status(); the failure already scheduled the next try
      });
    });
    this.#setState('backoff');
  }

  /** @param {ClientState} state */
  #setState(state) {
    this.#state = state;
    this.#emitStatus();
  }

  #emitStatus() {
    const s = this.status();
    for (const l of [...this.#statusListeners]) {
      try {
        l(s);
      } catch (e) {
        this.#logger.warn('tabagent: status listener threw', e);
      }
    }
  }

  #closedError() {
    return new TabAgentError({ type: 'closed', title: 'client closed' });
  }

  // ---- messages -----------------------------------------------------------

  /** @param {RequestId} id */
  #bestEffortCancel(id) {
    if (!this.#conn) return;
    this.#pending
      .send(this.#conn, Req.StopGeneration, { target_id: id }, { id: this.nextId(), timeoutMs: 10_000, idle: false })
      .catch(() => {
        // the generation ends on its own (or with the connection) anyway
      });
  }

  /**
   * @param {Connection} conn the connection it arrived on
   * @param {unknown} raw
   */
  #handleMessage(conn, raw) {
    if (typeof raw !== 'object' || raw === null) return;
    const msg = /** @type {Envelope} */ (raw);
    if (isEvent(msg)) {
      // pushed under a Subscribe's id (or none, when the extension made it)
      if (Subscriptions.acceptsEvent(msg, conn)) this.#subs.dispatch(msg);
      return;
    }
    this.#pending.route(msg);
  }

  /**
   * Ask the server for every subscribed event, if it does not tell them all
   * yet. One Subscribe at a time per connection: a second caller waits for
   * the first, then sends only what is still missing.
   * @param {Connection} conn
   */
  async #syncSubscriptions(conn) {
    while (conn.syncing) await conn.syncing.catch(() => {});
    const ask = this.#subs.request(conn.told);
    if (!ask) return;
    const id = this.nextId();
    conn.syncing = this.#pending.send(conn, Req.Subscribe, { events: ask.events }, { id, timeoutMs: this.#requestTimeoutMs, idle: false });
    const previous = conn.subscriptionId;
    conn.subscriptionId = id; // events may follow the Subscribed reply at once
    try {
      await conn.syncing;
      conn.told = ask.told;
    } catch (e) {
      conn.subscriptionId = previous; // the earlier one still stands
      throw e;
    } finally {
      conn.syncing = null;
    }
  }
}
