// The requests a TabAgentClient has in flight: it sends each envelope on its
// connection (refusing one too large for the transport), keeps it by id with
// its timeout (total, or idle between chunks), routes replies back (chunks,
// the final reply, an Error), and fails requests on abort, timeout or a lost
// connection. A generation whose caller gave up is handed to `onOrphan` so
// the client can ask the server to stop it.

import { GENERATION_TYPES, Req, Res, encodedSize, isError, isFinal, makeRequest } from './protocol.js';
import { TabAgentError, messageOf } from './errors.js';

/**
 * @typedef {import('./protocol.js').Envelope} Envelope
 * @typedef {import('./protocol.js').RequestId} RequestId
 * @typedef {import('./client-types.js').Connection} Connection
 * @typedef {import('./client-types.js').SendOptions} SendOptions
 * @typedef {import('./client-types.js').Timers} Timers
 * @typedef {import('./client-types.js').Logger} Logger
 */

/**
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
 */

/**
 * Whether `msg` settles its request. A Subscribe is settled by its first
 * reply, `Subscribed`: the server keeps the request open (`done: false`) and
 * pushes events under its id for as long as the connection lasts.
 * @param {Pending} p
 * @param {Envelope} msg
 */
function settles(p, msg) {
  return isFinal(msg) || (p.type === Req.Subscribe && msg.response_type === Res.Subscribed);
}

export class PendingRequests {
  /** @type {Map<string, Pending>} */ #map = new Map();
  #timers;
  #logger;
  #onOrphan;
  #onSendError;

  /**
   * @param {object} hooks
   * @param {Timers} hooks.timers
   * @param {Logger} hooks.logger
   * @param {(id: RequestId) => void} hooks.onOrphan  a generation nobody waits for any more
   * @param {(conn: Connection, reason: string) => void} hooks.onSendError  posting on the port threw
   */
  constructor({ timers, logger, onOrphan, onSendError }) {
    this.#timers = timers;
    this.#logger = logger;
    this.#onOrphan = onOrphan;
    this.#onSendError = onSendError;
  }

  /**
   * Send a request on `conn` and resolve with the reply that settles it.
   * @param {Connection} conn
   * @param {string} type
   * @param {Record<string, any>} fields
   * @param {SendOptions} opts
   * @returns {Promise<Envelope>}
   */
  send(conn, type, fields, opts) {
    return new Promise((resolve, reject) => {
      const { id } = opts;
      const key = String(id);
      if (this.#map.has(key)) {
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
      this.#map.set(key, p);
      this.#armTimer(p);
      if (opts.signal) {
        opts.signal.addEventListener(
          'abort',
          () => {
            if (this.#map.get(key) !== p) return;
            this.#fail(p, new TabAgentError({ type: 'aborted', title: 'aborted' }, id));
            if (GENERATION_TYPES.has(type)) this.#onOrphan(id);
          },
          { once: true },
        );
      }
      try {
        conn.port.postMessage(envelope);
      } catch (e) {
        this.#fail(p, new TabAgentError({ type: 'disconnected', title: 'send failed', detail: messageOf(e) }, id));
        this.#onSendError(conn, messageOf(e) || 'send failed');
      }
    });
  }

  /**
   * Hand a reply to the request it answers; a late reply (the request timed
   * out or was abandoned) is dropped.
   * @param {Envelope} msg
   */
  route(msg) {
    if (msg.id === undefined || msg.id === null) return;
    const p = this.#map.get(String(msg.id));
    if (!p) return;
    if (isError(msg)) {
      this.#fail(p, TabAgentError.fromReply(msg));
    } else if (settles(p, msg)) {
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

  /**
   * Fail every request sent on `conn` (its port is gone).
   * @param {Connection} conn
   * @param {string} reason
   */
  failConnection(conn, reason) {
    for (const p of [...this.#map.values()]) {
      if (p.conn === conn) {
        this.#fail(p, new TabAgentError({ type: 'disconnected', title: 'connection lost', detail: reason }, p.id));
      }
    }
  }

  /** @param {() => Error} error a fresh error for each request */
  failAll(error) {
    for (const p of [...this.#map.values()]) this.#fail(p, error());
  }

  /**
   * Stop tracking a request whose caller went away; optionally stop its generation.
   * @param {RequestId} id
   * @param {boolean} stopGeneration
   */
  abandon(id, stopGeneration) {
    const p = this.#map.get(String(id));
    if (!p) return;
    this.#finish(p);
    if (stopGeneration) this.#onOrphan(id);
  }

  /** @param {Pending} p */
  #armTimer(p) {
    if (p.timer !== null) this.#timers.clearTimeout(p.timer);
    p.timer = null;
    if (!(p.timeoutMs > 0)) return;
    p.timer = this.#timers.setTimeout(() => {
      if (this.#map.get(String(p.id)) !== p) return;
      const what = p.idle ? 'no reply' : 'no final reply';
      this.#fail(
        p,
        new TabAgentError(
          { type: 'timeout', title: 'request timed out', status: 504, detail: `${p.type}: ${what} within ${p.timeoutMs} ms` },
          p.id,
        ),
      );
      if (GENERATION_TYPES.has(p.type)) this.#onOrphan(p.id);
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
    this.#map.delete(String(p.id));
  }
}
