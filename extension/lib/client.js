// TabAgentClient: one request/stream/subscribe/cancel API over whichever
// transport reaches tabagent. It owns request ids, timeouts, the choice of
// transport (native messaging first, then WebRTC, unless the user forces one)
// and reconnection with exponential backoff. It knows nothing about Chrome:
// a transport is anything that hands out a port shaped like chrome.runtime.Port
// (postMessage, onMessage, onDisconnect, disconnect), so node tests drive it
// with fakes and the extension plugs in connectNative or the offscreen bridge.
// Timers and randomness are injected too, so timeouts and backoff are testable.

import {
  GENERATION_TYPES,
  Req,
  encodedSize,
  eventName,
  isError,
  isEvent,
  isFinal,
  makeRequest,
} from './protocol.js';
import { TabAgentError, messageOf } from './errors.js';
import { AsyncQueue } from './async-queue.js';

export { TabAgentError };

/**
 * @typedef {import('./protocol.js').Envelope} Envelope
 * @typedef {import('./protocol.js').RequestId} RequestId
 * @typedef {import('./protocol.js').ProblemDetails} ProblemDetails
 */

/**
 * The part of chrome.runtime.Port the client uses. A transport may pass an
 * Error (or string) as the second onDisconnect argument; Chrome passes only
 * the port and leaves the reason in chrome.runtime.lastError, which the
 * transport's `lastError()` reads.
 * @typedef {object} PortLike
 * @property {(msg: any) => void} postMessage
 * @property {() => void} disconnect
 * @property {{addListener(fn: (msg: any) => void): void}} onMessage
 * @property {{addListener(fn: (port?: any, error?: unknown) => void): void}} onDisconnect
 */

/**
 * @typedef {object} Transport
 * @property {string} name                         'native', 'webrtc', 'relay', ...
 * @property {() => PortLike | Promise<PortLike>} connect
 * @property {() => (string | undefined)} [lastError] why the last port closed
 * @property {number} [maxMessageBytes]            refuse larger requests locally
 * @property {{type: string, fields?: Record<string, any>}} [probe] request that proves the far end answers (default Health)
 * @property {number} [probeTimeoutMs]
 */

/**
 * @typedef {'idle' | 'connecting' | 'connected' | 'backoff' | 'closed'} ClientState
 * @typedef {object} ClientStatus
 * @property {ClientState} state
 * @property {string | null} transport      name of the transport in use
 * @property {string} preference            'auto' or a transport name
 * @property {string | null} lastError
 * @property {number | null} retryInMs      set while in backoff
 * @property {Envelope | null} health       the probe's reply on the current connection
 */

/**
 * @typedef {object} BackoffOptions
 * @property {number} [initialMs] first delay (default 500)
 * @property {number} [maxMs]     ceiling (default 30000)
 * @property {number} [factor]    growth per failed attempt (default 2)
 * @property {number} [jitter]    0..1, fraction of the delay randomly removed (default 0.2)
 */

/**
 * @typedef {object} ClientOptions
 * @property {Transport[]} transports  in the order 'auto' tries them
 * @property {string} [preference]     'auto' (default) or one transport's name
 * @property {number} [requestTimeoutMs]     default 30 s, total per request
 * @property {number} [streamIdleTimeoutMs]  default 120 s, between two chunks
 * @property {number} [probeTimeoutMs]       default 3 s
 * @property {'auto' | 'always' | 'never'} [reconnect] background reconnect: 'auto' = while subscriptions exist
 * @property {BackoffOptions} [backoff]
 * @property {{setTimeout: (fn: () => void, ms: number) => any, clearTimeout: (t: any) => void}} [timers]
 * @property {() => number} [random]
 * @property {{warn: (...a: any[]) => void, debug?: (...a: any[]) => void}} [logger]
 */

/**
 * @typedef {object} RequestOptions
 * @property {number} [timeoutMs]   0 = no timeout
 * @property {RequestId} [id]       use this id (from nextId()) instead of a fresh one
 * @property {(msg: Envelope) => void} [onChunk] called for every non-final reply
 * @property {AbortSignal} [signal] abort: reject at once and stop a generation
 */

/**
 * @typedef {object} Connection
 * @property {PortLike} port
 * @property {Transport} transport
 * @property {boolean} open
 *
 * @typedef {object} Pending
 * @property {RequestId} id
 * @property {string} type
 * @property {Connection} conn
 * @property {(msg: Envelope) => void} resolve
 * @property {(err: Error) => void} reject
 * @property {((msg: Envelope) => void) | undefined} onChunk
 * @property {number} timeoutMs
 * @property {boolean} idle          timeout restarts on each chunk
 * @property {any} timer
 *
 * @typedef {{events: Set<string>, callback: (msg: Envelope) => void}} Subscription
 */

export class TabAgentClient {
  /** @type {Transport[]} */ #transports;
  /** @type {string} */ #preference;
  #requestTimeoutMs;
  #streamIdleTimeoutMs;
  #probeTimeoutMs;
  #reconnect;
  /** @type {Required<BackoffOptions>} */ #backoff;
  #timers;
  #random;
  #logger;

  /** @type {ClientState} */ #state = 'idle';
  /** @type {Connection | null} */ #conn = null;
  /** @type {Promise<string> | null} */ #connecting = null;
  /** @type {Map<string, Pending>} */ #pending = new Map();
  /** @type {Set<Subscription>} */ #subs = new Set();
  /** events the server was last told about on this connection, as a sorted key */
  #serverEvents = '';
  #nextId = 1;
  #attempt = 0;
  /** @type {any} */ #retryTimer = null;
  /** @type {number | null} */ #retryInMs = null;
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
    this.#backoff = { initialMs: 500, maxMs: 30_000, factor: 2, jitter: 0.2, ...options.backoff };
    this.#timers = options.timers ?? {
      setTimeout: (fn, ms) => setTimeout(fn, ms),
      clearTimeout: (t) => clearTimeout(t),
    };
    this.#random = options.random ?? Math.random;
    this.#logger = options.logger ?? { warn: () => {} };
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
      retryInMs: this.#state === 'backoff' ? this.#retryInMs : null,
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
    this.#clearRetry();
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
    this.#attempt = 0;
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
    return this.#send(conn, type, fields, {
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
   * Chat, Generate and Responses get `stream: true` unless fields say otherwise.
   * @param {string} type
   * @param {Record<string, any>} [fields]
   * @param {RequestOptions} [options]
   * @returns {AsyncIterableIterator<Envelope> & {id: RequestId}}
   */
  stream(type, fields = {}, options = {}) {
    const id = options.id ?? this.nextId();
    const body = GENERATION_TYPES.has(type) && fields.stream === undefined ? { ...fields, stream: true } : fields;
    /** @type {AsyncQueue<{value?: Envelope, last?: boolean, error?: unknown}>} */
    const queue = new AsyncQueue();
    const push = queue.push.bind(queue);
    let finished = false; // iterator has returned done
    let settled = false; // the request itself has ended
    const client = this;
    this.#ensureConnected()
      .then((conn) => {
        if (finished) throw new TabAgentError({ type: 'aborted', title: 'aborted' }, id); // left before it was sent
        return this.#send(conn, type, body, {
          id,
          timeoutMs: options.timeoutMs ?? this.#streamIdleTimeoutMs,
          idle: true,
          onChunk: (m) => push({ value: m }),
          signal: options.signal,
        });
      })
      .then(
        (final) => {
          settled = true;
          push({ value: final, last: true });
        },
        (err) => {
          settled = true;
          push({ error: err });
        },
      );

    /** @type {AsyncIterableIterator<Envelope> & {id: RequestId}} */
    const iterator = {
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
          if (!settled) client.#abandon(id, GENERATION_TYPES.has(type));
        }
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
    return iterator;
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
    /** @type {Subscription} */
    const sub = { events: new Set(events), callback };
    this.#subs.add(sub);
    const unsubscribe = () => {
      if (this.#subs.delete(sub) && this.#conn) this.#syncSubscriptions(this.#conn).catch(() => {});
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
    this.#clearRetry();
    const conn = this.#conn;
    this.#setState('closed');
    if (conn) this.#dropConnection(conn, 'client closed', false);
    for (const p of [...this.#pending.values()]) this.#fail(p, this.#closedError());
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
        this.#attempt = 0;
        this.#lastError = null;
        this.#serverEvents = '';
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
    const conn = { port, transport, open: true };
    port.onMessage.addListener((msg) => this.#handleMessage(msg));
    port.onDisconnect.addListener((_port, error) => {
      const reason = messageOf(error) || transport.lastError?.() || 'port closed';
      this.#handleDisconnect(conn, reason);
    });
    const probe = transport.probe ?? { type: Req.Health };
    try {
      const health = await this.#send(conn, probe.type, probe.fields ?? {}, {
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
    for (const p of [...this.#pending.values()]) {
      if (p.conn === conn) {
        this.#fail(p, new TabAgentError({ type: 'disconnected', title: 'connection lost', detail: reason }, p.id));
      }
    }
    if (this.#conn !== conn) return;
    this.#conn = null;
    this.#health = null;
    this.#serverEvents = '';
    this.#lastError = reason;
    if (this.#state === 'closed') return;
    if (byPeer && this.#wantsConnection()) this.#scheduleReconnect();
    else this.#setState('idle');
  }

  #scheduleReconnect() {
    this.#clearRetry();
    const { initialMs, maxMs, factor, jitter } = this.#backoff;
    const base = Math.min(maxMs, initialMs * Math.pow(factor, this.#attempt));
    const delay = Math.round(base * (1 - jitter * this.#random()));
    this.#attempt += 1;
    this.#retryInMs = delay;
    this.#retryTimer = this.#timers.setTimeout(() => {
      this.#retryTimer = null;
      this.connect().catch(() => {
        // reported through status(); the failure already scheduled the next try
      });
    }, delay);
    this.#setState('backoff');
  }

  #clearRetry() {
    if (this.#retryTimer !== null) {
      this.#timers.clearTimeout(this.#retryTimer);
      this.#retryTimer = null;
    }
    this.#retryInMs = null;
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

  // ---- requests ---------------------------------------------------------

  /**
   * @param {Connection} conn
   * @param {string} type
   * @param {Record<string, any>} fields
   * @param {{id: RequestId, timeoutMs: number, idle: boolean, onChunk?: (m: Envelope) => void, signal?: AbortSignal}} opts
   * @returns {Promise<Envelope>}
   */
  #send(conn, type, fields, opts) {
    return new Promise((resolve, reject) => {
      const { id } = opts;
      const key = String(id);
      if (this.#pending.has(key)) {
        reject(new TabAgentError({ type: 'duplicate_id', title: 'request id already in use', detail: key }, id));
        return;
      }
      const envelope = makeRequest(id, type, fields);
      const max = conn.transport.maxMessageBytes;
      if (max) {
        const size = encodedSize(envelope);
        if (size > max) {
          reject(
            new TabAgentError(
              {
                type: 'too_large',
                title: 'request too large for transport',
                status: 413,
                detail: `${size} bytes > ${max} allowed over ${conn.transport.name}`,
              },
              id,
            ),
          );
          return;
        }
      }
      /** @type {Pending} */
      const p = {
        id,
        type,
        conn,
        resolve,
        reject,
        onChunk: opts.onChunk,
        timeoutMs: opts.timeoutMs,
        idle: opts.idle,
        timer: null,
      };
      this.#pending.set(key, p);
      this.#armTimer(p);
      if (opts.signal) {
        opts.signal.addEventListener(
          'abort',
          () => {
            if (this.#pending.get(key) !== p) return;
            this.#fail(p, new TabAgentError({ type: 'aborted', title: 'aborted' }, id));
            if (GENERATION_TYPES.has(type)) this.#bestEffortCancel(id);
          },
          { once: true },
        );
      }
      try {
        conn.port.postMessage(envelope);
      } catch (e) {
        this.#fail(p, new TabAgentError({ type: 'disconnected', title: 'send failed', detail: messageOf(e) }, id));
        this.#handleDisconnect(conn, messageOf(e) || 'send failed');
      }
    });
  }

  /** @param {Pending} p */
  #armTimer(p) {
    if (p.timer !== null) this.#timers.clearTimeout(p.timer);
    p.timer = null;
    if (!(p.timeoutMs > 0)) return;
    p.timer = this.#timers.setTimeout(() => {
      if (this.#pending.get(String(p.id)) !== p) return;
      const what = p.idle ? 'no reply' : 'no final reply';
      this.#fail(
        p,
        new TabAgentError(
          { type: 'timeout', title: 'request timed out', status: 504, detail: `${p.type}: ${what} within ${p.timeoutMs} ms` },
          p.id,
        ),
      );
      if (GENERATION_TYPES.has(p.type)) this.#bestEffortCancel(p.id);
    }, p.timeoutMs);
  }

  /**
   * @param {Pending} p
   * @param {Error} err
   */
  #fail(p, err) {
    this.#finish(p);
    p.reject(err);
  }

  /** @param {Pending} p */
  #finish(p) {
    if (p.timer !== null) this.#timers.clearTimeout(p.timer);
    p.timer = null;
    this.#pending.delete(String(p.id));
  }

  /**
   * Stop tracking a request whose caller went away; optionally stop its generation.
   * @param {RequestId} id
   * @param {boolean} stopGeneration
   */
  #abandon(id, stopGeneration) {
    const p = this.#pending.get(String(id));
    if (!p) return;
    this.#finish(p);
    if (stopGeneration) this.#bestEffortCancel(id);
  }

  /** @param {RequestId} id */
  #bestEffortCancel(id) {
    if (!this.#conn) return;
    this.#send(this.#conn, Req.StopGeneration, { target_id: id }, { id: this.nextId(), timeoutMs: 10_000, idle: false }).catch(
      () => {
        // the generation ends on its own (or with the connection) anyway
      },
    );
  }

  /** @param {unknown} raw */
  #handleMessage(raw) {
    if (typeof raw !== 'object' || raw === null) return;
    const msg = /** @type {Envelope} */ (raw);
    if (isEvent(msg)) {
      this.#dispatchEvent(msg);
      return;
    }
    if (msg.id === undefined || msg.id === null) return;
    const p = this.#pending.get(String(msg.id));
    if (!p) return; // late reply to a request that timed out or was abandoned
    if (isError(msg)) {
      this.#fail(p, TabAgentError.fromReply(msg));
    } else if (isFinal(msg)) {
      this.#finish(p);
      p.resolve(msg);
    } else {
      if (p.idle) this.#armTimer(p);
      try {
        p.onChunk?.(msg);
      } catch (e) {
        this.#logger.warn('tabagent: chunk handler threw', e);
      }
    }
  }

  // ---- subscriptions ----------------------------------------------------

  /** @param {Envelope} msg */
  #dispatchEvent(msg) {
    const name = eventName(msg);
    for (const sub of [...this.#subs]) {
      if (!sub.events.has(name) && !sub.events.has('*')) continue;
      try {
        sub.callback(msg);
      } catch (e) {
        this.#logger.warn('tabagent: event callback threw', e);
      }
    }
  }

  /**
   * Tell the server the union of subscribed events, if it changed.
   * @param {Connection} conn
   */
  async #syncSubscriptions(conn) {
    const union = new Set();
    for (const s of this.#subs) for (const e of s.events) union.add(e);
    const events = [...union].sort();
    const key = events.join('\n');
    if (key === this.#serverEvents) return;
    await this.#send(conn, Req.Subscribe, { events }, { id: this.nextId(), timeoutMs: this.#requestTimeoutMs, idle: false });
    if (this.#conn === conn) this.#serverEvents = key;
  }
}
