// The service worker's multiplexer. The worker owns the one upstream
// TabAgentClient (one native host process, or one WebRTC peer); every
// extension page (side panel, options, test hook) talks to it over a
// chrome.runtime port with the same JSON envelopes, through its own
// TabAgentClient using `relayTransport`. Page ids are private to a page: each
// request gets a fresh upstream id, replies are mapped back, and a
// StopGeneration's target_id is translated. A page that hangs up stops its
// generations. Two request types are answered here and never reach the
// server: ClientStatus and Reconnect (see protocol.js LocalReq).

import {
  EVENT_CLIENT_STATUS,
  GENERATION_TYPES,
  LOCAL_EVENT_PREFIX,
  LocalReq,
  Req,
  Res,
  makeError,
} from './protocol.js';
import { TabAgentError } from './client.js';

/**
 * @typedef {import('./protocol.js').Envelope} Envelope
 * @typedef {import('./client.js').TabAgentClient} TabAgentClient
 * @typedef {import('./client.js').PortLike} PortLike
 */

/** Upper bound for one relayed request upstream; the page enforces its own, shorter timeouts. */
const UPSTREAM_TIMEOUT_MS = 15 * 60_000;

/** Types whose `target_id` names another request of the same page. */
/** @type {ReadonlySet<string>} */
const TARGETED_TYPES = new Set([Req.StopGeneration, Req.GetHaltStatus]);

/**
 * @typedef {object} PageState
 * @property {PortLike} port
 * @property {boolean} open
 * @property {Map<string, {upstreamId: import('./protocol.js').RequestId, type: string}>} inflight  page id -> upstream
 * @property {Set<string>} localEvents
 * @property {(() => void) | null} unsubscribe  its upstream subscription
 * @property {number} subscribeSeq
 */

export class Relay {
  #client;
  #ready;
  /** @type {Set<PageState>} */ #pages = new Set();

  /**
   * @param {TabAgentClient} client the upstream client
   * @param {{ready?: Promise<unknown>}} [options] requests wait for `ready` (settings loaded)
   */
  constructor(client, options = {}) {
    this.#client = client;
    this.#ready = options.ready ?? Promise.resolve();
    client.onStatus((status) => {
      const event = { response_type: Res.Event, event: EVENT_CLIENT_STATUS, status };
      for (const page of this.#pages) if (page.localEvents.has(EVENT_CLIENT_STATUS)) this.#post(page, event);
    });
  }

  /** Number of attached pages (for tests and diagnostics). */
  get size() {
    return this.#pages.size;
  }

  /**
   * Serve one page's port until it disconnects.
   * @param {PortLike} port
   */
  attach(port) {
    /** @type {PageState} */
    const page = {
      port,
      open: true,
      inflight: new Map(),
      localEvents: new Set(),
      unsubscribe: null,
      subscribeSeq: 0,
    };
    this.#pages.add(page);
    port.onMessage.addListener((msg) => {
      this.#ready.then(
        () => this.#handle(page, msg),
        () => this.#handle(page, msg),
      );
    });
    port.onDisconnect.addListener(() => this.#detach(page));
  }

  /** @param {PageState} page */
  #detach(page) {
    if (!page.open) return;
    page.open = false;
    this.#pages.delete(page);
    page.unsubscribe?.();
    page.unsubscribe = null;
    for (const { upstreamId, type } of page.inflight.values()) {
      if (GENERATION_TYPES.has(type)) this.#client.cancel(upstreamId).catch(() => {});
    }
    page.inflight.clear();
  }

  /**
   * @param {PageState} page
   * @param {Envelope} msg
   */
  #post(page, msg) {
    if (!page.open) return;
    try {
      page.port.postMessage(msg);
    } catch {
      this.#detach(page); // the page went away between two messages
    }
  }

  /**
   * @param {PageState} page
   * @param {unknown} raw
   */
  #handle(page, raw) {
    if (!page.open) return;
    if (typeof raw !== 'object' || raw === null) return;
    const { id, request_type: type, ...fields } = /** @type {Envelope} */ (raw);
    if (id === undefined || id === null) return;
    if (typeof type !== 'string' || type === '') {
      this.#post(page, makeError(id, { type: 'bad_request', title: 'missing request_type', status: 400 }));
      return;
    }
    switch (type) {
      case LocalReq.ClientStatus:
        this.#post(page, { id, response_type: Res.ClientStatus, status: this.#client.status(), done: true });
        return;
      case LocalReq.Reconnect:
        this.#client.reconnect().then(
          () => this.#post(page, { id, response_type: Res.ClientStatus, status: this.#client.status(), done: true }),
          (e) => this.#post(page, makeError(id, problemOf(e))),
        );
        return;
      case Req.Subscribe:
        this.#subscribe(page, id, Array.isArray(fields.events) ? fields.events.map(String) : []);
        return;
      default:
        this.#forward(page, id, type, fields);
    }
  }

  /**
   * @param {PageState} page
   * @param {import('./protocol.js').RequestId} id
   * @param {string} type
   * @param {Record<string, any>} fields
   */
  #forward(page, id, type, fields) {
    const key = String(id);
    if (page.inflight.has(key)) {
      this.#post(page, makeError(id, { type: 'duplicate_id', title: 'request id already in use', status: 400 }));
      return;
    }
    if (TARGETED_TYPES.has(type) && fields.target_id !== undefined) {
      const target = page.inflight.get(String(fields.target_id));
      // An unknown target stays as is: the server answers that it is not running.
      if (target) fields = { ...fields, target_id: target.upstreamId };
    }
    const upstreamId = this.#client.nextId();
    page.inflight.set(key, { upstreamId, type });
    this.#client
      .request(type, fields, {
        id: upstreamId,
        timeoutMs: UPSTREAM_TIMEOUT_MS,
        onChunk: (m) => this.#post(page, { ...m, id }),
      })
      .then(
        (final) => this.#post(page, { ...final, id }),
        (e) => this.#post(page, makeError(id, problemOf(e))),
      )
      .finally(() => {
        if (page.inflight.get(key)?.upstreamId === upstreamId) page.inflight.delete(key);
      });
  }

  /**
   * A page's Subscribe replaces its previous one. `client.*` events are
   * served here; the rest become one upstream subscription.
   * @param {PageState} page
   * @param {import('./protocol.js').RequestId} id
   * @param {string[]} events
   */
  #subscribe(page, id, events) {
    const local = events.filter((e) => e.startsWith(LOCAL_EVENT_PREFIX));
    const remote = events.filter((e) => !e.startsWith(LOCAL_EVENT_PREFIX));
    page.localEvents = new Set(local);
    page.unsubscribe?.();
    page.unsubscribe = null;
    const seq = ++page.subscribeSeq;
    const ack = () => this.#post(page, { id, response_type: Res.Subscribed, events, done: true });
    if (remote.length === 0) {
      ack();
      return;
    }
    // server events go to the page under its own Subscribe's id, as the server would
    this.#client.subscribe(remote, (event) => this.#post(page, { ...event, id })).then(
      (unsubscribe) => {
        if (!page.open || seq !== page.subscribeSeq) {
          unsubscribe(); // the page left, or subscribed again meanwhile
          return;
        }
        page.unsubscribe = unsubscribe;
        ack();
      },
      (e) => this.#post(page, makeError(id, problemOf(e))),
    );
  }
}

/**
 * @param {unknown} e
 * @returns {import('./protocol.js').ProblemDetails}
 */
export function problemOf(e) {
  if (e instanceof TabAgentError) return e.toProblem();
  return { type: 'internal', title: 'relay error', status: 500, detail: e instanceof Error ? e.message : String(e) };
}
