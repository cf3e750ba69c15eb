// The service worker's gate for web pages (and other extensions) using the
// page API. Each connects on its own port (from page-bridge.js, or
// chrome.runtime.onConnectExternal); the gate checks the caller's origin as
// Chrome reports it (never as the page claims it), lets through only what
// the Prompt API needs, and answers everything else itself:
//   Availability -> is there a chat model;  Params -> sampling defaults;
//   Load -> load the page model, with progress;  Chat, Tokenize,
//   StopGeneration -> the server, through a Relay (fresh upstream ids,
//   cancel on hang-up), with the fields cut to the Prompt API's.
// A page never reaches history, documents, model management or another
// origin's requests: its conversation lives in the page, and every
// upstream request is a stateless Chat. Chats per origin are capped, and
// `onActivity` tells the worker when a tab starts and stops using the model
// (it shows a badge).

import { Relay, problemOf } from './relay.js';
import { ModelKind, Req, isFinal, makeError } from './protocol.js';

/** Port name page-bridge.js connects with. */
export const PAGE_PORT_NAME = 'tabagent-page';

/** Chats one origin may run at once (across its tabs). */
export const DEFAULT_MAX_CONCURRENT = 2;

/** What the Prompt API reports as its sampling bounds. */
export const MAX_TOP_K = 128;
export const MAX_TEMPERATURE = 2;

/** Request types a page may send (anything else is refused). */
export const PageReq = Object.freeze({
  Availability: 'Availability',
  Params: 'Params',
  Load: 'Load',
  Chat: Req.Chat,
  Tokenize: 'Tokenize',
  StopGeneration: Req.StopGeneration,
});

/**
 * @typedef {import('./protocol.js').Envelope} Envelope
 * @typedef {import('./client.js').TabAgentClient} TabAgentClient
 * @typedef {import('./client.js').PortLike} PortLike
 * @typedef {import('./page-origins.js').AccessDecision} AccessDecision
 * @typedef {object} GateOptions
 * @property {(origin: string) => Promise<AccessDecision>} access   may this origin use the API
 * @property {() => Promise<string>} [pageModel]   the model pages use ('' = the server's default chat model)
 * @property {(origin: string) => void} [onRefused]   an origin that is not enabled asked
 * @property {(tabId: number, active: boolean) => void} [onActivity]
 * @property {number} [maxConcurrent]
 * @property {Promise<unknown>} [ready]
 */

/** @param {string} title @param {number} [status] */
const notAllowed = (title, status = 403) => ({ type: 'not_allowed', title, status });

/**
 * The messages of a page's conversation, checked: roles system, user and
 * assistant, text content only (audio and images are refused in the page).
 * @param {unknown} raw
 * @returns {{role: string, content: string}[] | null}
 */
export function cleanMessages(raw) {
  if (!Array.isArray(raw) || raw.length === 0) return null;
  const out = [];
  for (const m of raw) {
    if (typeof m !== 'object' || m === null) return null;
    const { role, content } = /** @type {Record<string, unknown>} */ (m);
    if (!['system', 'user', 'assistant'].includes(/** @type {string} */ (role)) || typeof content !== 'string') return null;
    out.push({ role: /** @type {string} */ (role), content });
  }
  return out;
}

/**
 * Chat fields a page may set; the rest are dropped.
 * @param {Record<string, any>} fields
 * @param {string} model
 * @returns {Record<string, any> | null}
 */
export function cleanChat(fields, model) {
  const messages = cleanMessages(fields.messages);
  if (!messages) return null;
  /** @type {Record<string, any>} */
  const out = { messages, stream: true };
  if (model) out.model = model;
  if (typeof fields.temperature === 'number' && fields.temperature >= 0 && fields.temperature <= MAX_TEMPERATURE) out.temperature = fields.temperature;
  if (Number.isInteger(fields.top_k) && fields.top_k >= 1 && fields.top_k <= MAX_TOP_K) out.top_k = fields.top_k;
  if (typeof fields.json_schema === 'object' && fields.json_schema !== null && !Array.isArray(fields.json_schema)) out.json_schema = fields.json_schema;
  return out;
}

export class PageGate {
  #client;
  #relay;
  #options;
  /** @type {Map<string, number>} origin -> chats running */
  #running = new Map();
  /** @type {Map<number, number>} tab -> requests running */
  #tabs = new Map();

  /**
   * @param {TabAgentClient} client
   * @param {GateOptions} options
   */
  constructor(client, options) {
    this.#client = client;
    this.#relay = new Relay(client, { ready: options.ready });
    this.#options = options;
  }

  /** Chats running for an origin (tests, diagnostics). @param {string} origin */
  running(origin) {
    return this.#running.get(origin) ?? 0;
  }

  /**
   * Serve one caller's port. `origin` is what Chrome says the sender is;
   * `tabId` is its tab (none for another extension).
   * @param {PortLike} port
   * @param {string} origin
   * @param {number} [tabId]
   */
  attach(port, origin, tabId) {
    /** @type {Map<string, string>} relayed request id -> type */
    const relayed = new Map();
    /** @type {((msg: any) => void)[]} */ const toRelay = [];
    /** @type {((p?: any) => void)[]} */ const hangUps = [];
    let open = true;
    const post = (/** @type {Envelope} */ msg) => {
      if (!open) return;
      try {
        port.postMessage(msg);
      } catch {
        // the page went away; onDisconnect cleans up
      }
    };
    const finish = (/** @type {string} */ key) => {
      const type = relayed.get(key);
      if (type === undefined) return;
      relayed.delete(key);
      if (type === PageReq.Chat) this.#count(this.#running, origin, -1);
      if (tabId !== undefined) this.#activity(tabId, -1);
    };
    // What the relay sees of the page: requests we let through; its replies
    // come back here to be trimmed and counted.
    /** @type {PortLike} */
    const inner = {
      postMessage: (/** @type {Envelope} */ msg) => {
        const key = String(msg.id);
        const type = relayed.get(key);
        if (type === PageReq.Tokenize && isFinal(msg) && !msg.error) {
          post({ id: msg.id, response_type: 'TokenCount', count: Array.isArray(msg.tokens) ? msg.tokens.length : 0, done: true });
        } else {
          post(msg);
        }
        if (isFinal(msg)) finish(key);
      },
      disconnect: () => port.disconnect(),
      onMessage: { addListener: (fn) => toRelay.push(fn) },
      onDisconnect: { addListener: (fn) => hangUps.push(fn) },
    };
    this.#relay.attach(inner);
    port.onDisconnect.addListener(() => {
      open = false;
      for (const fn of hangUps) fn(inner);
      for (const key of [...relayed.keys()]) finish(key);
    });
    port.onMessage.addListener((raw) => {
      if (typeof raw !== 'object' || raw === null) return;
      const msg = /** @type {Envelope} */ (raw);
      if (msg.id === undefined || msg.id === null) return;
      this.#handle(msg, origin, post).then((forward) => {
        if (!forward || !open) return;
        relayed.set(String(msg.id), String(forward.request_type));
        if (forward.request_type === PageReq.Chat) this.#count(this.#running, origin, 1);
        if (tabId !== undefined) this.#activity(tabId, 1);
        for (const fn of toRelay) fn(forward);
      });
    });
  }

  /**
   * Answer a page request here, or return what to relay upstream.
   * @param {Envelope} msg
   * @param {string} origin
   * @param {(msg: Envelope) => void} post
   * @returns {Promise<Envelope | null>}
   */
  async #handle(msg, origin, post) {
    const { id, request_type: type, ...fields } = msg;
    const fail = (/** @type {import('./protocol.js').ProblemDetails} */ p) => {
      post(makeError(id, p));
      return null;
    };
    let decision;
    try {
      decision = await this.#options.access(origin);
    } catch (e) {
      return fail(problemOf(e));
    }
    if (!decision.enabled) {
      this.#options.onRefused?.(origin);
      return fail(notAllowed(`tabagent is not enabled for ${origin}; enable it on tabagent's options page`));
    }
    const model = (await this.#options.pageModel?.()) ?? '';
    try {
      switch (type) {
        case PageReq.Availability:
          post({ id, response_type: 'Availability', availability: (await this.#chatModel(model)) ? 'available' : 'unavailable', done: true });
          return null;
        case PageReq.Params:
          post({ id, response_type: 'Params', ...(await this.#params()), done: true });
          return null;
        case PageReq.Load:
          await this.#load(id, model, post);
          return null;
        case PageReq.Chat: {
          const max = this.#options.maxConcurrent ?? DEFAULT_MAX_CONCURRENT;
          if (this.running(origin) >= max) return fail({ type: 'busy', title: `at most ${max} prompts at once per site`, status: 429 });
          const chat = cleanChat(fields, (await this.#chatModel(model)) ?? '');
          if (!chat) return fail({ type: 'bad_request', title: 'messages: a list of {role: system|user|assistant, content: text}', status: 400 });
          return { id, request_type: Req.Chat, ...chat };
        }
        case PageReq.Tokenize: {
          if (typeof fields.content !== 'string') return fail({ type: 'bad_request', title: 'content: text to measure', status: 400 });
          const m = await this.#chatModel(model);
          return { id, request_type: 'Tokenize', content: fields.content, ...(m ? { model: m } : {}) };
        }
        case PageReq.StopGeneration:
          return { id, request_type: Req.StopGeneration, target_id: fields.target_id };
        default:
          return fail(notAllowed(`the page API does not offer ${String(type)}`));
      }
    } catch (e) {
      return fail(problemOf(e));
    }
  }

  /**
   * The chat model pages use: the configured one if the server has it, else
   * one already loaded, else the first; null when there is none.
   * @param {string} wanted
   * @returns {Promise<string | null>}
   */
  async #chatModel(wanted) {
    const reply = await this.#client.request(Req.ListModels);
    /** @type {{id: string, kind: string, loaded: boolean}[]} */
    const chat = (reply.models ?? []).filter((/** @type {any} */ m) => m.kind === ModelKind.Chat);
    if (wanted && chat.some((m) => m.id === wanted)) return wanted;
    return (chat.find((m) => m.loaded) ?? chat[0])?.id ?? null;
  }

  async #params() {
    const p = await this.#client.request(Req.GetParams);
    const src = p.params ?? p;
    const temperature = typeof src.temperature === 'number' ? src.temperature : 0.8;
    const topK = Number.isInteger(src.top_k) && src.top_k > 0 ? src.top_k : 40;
    return { defaultTopK: Math.min(topK, MAX_TOP_K), maxTopK: MAX_TOP_K, defaultTemperature: temperature, maxTemperature: MAX_TEMPERATURE };
  }

  /**
   * Load the page model; its load progress goes to the page as LoadProgress
   * chunks, then one Loaded with the context window.
   * @param {import('./protocol.js').RequestId | undefined} id
   * @param {string} wanted
   * @param {(msg: Envelope) => void} post
   */
  async #load(id, wanted, post) {
    const model = await this.#chatModel(wanted);
    if (!model) {
      post(makeError(id, { type: 'not_found', title: 'no chat model on this machine', status: 404 }));
      return;
    }
    post({ id, response_type: 'LoadProgress', loaded: 0, done: false });
    const unsubscribe = await this.#client
      .subscribe(['ModelLoadProgress'], (e) => {
        if (e.model === model && typeof e.progress === 'number') post({ id, response_type: 'LoadProgress', loaded: Math.max(0, Math.min(1, e.progress)), done: false });
      })
      .catch(() => () => {});
    try {
      const loaded = await this.#client.request(Req.LoadModel, { model }, { timeoutMs: 10 * 60_000 });
      post({ id, response_type: 'LoadProgress', loaded: 1, done: false });
      post({ id, response_type: 'Loaded', contextWindow: loaded.context_size ?? null, done: true });
    } finally {
      unsubscribe();
    }
  }

  /** @param {Map<any, number>} map @param {any} key @param {number} delta */
  #count(map, key, delta) {
    const n = Math.max(0, (map.get(key) ?? 0) + delta);
    if (n === 0) map.delete(key);
    else map.set(key, n);
    return n;
  }

  /** @param {number} tabId @param {number} delta */
  #activity(tabId, delta) {
    const before = this.#tabs.get(tabId) ?? 0;
    const after = this.#count(this.#tabs, tabId, delta);
    if ((before === 0) !== (after === 0)) this.#options.onActivity?.(tabId, after > 0);
  }
}
