// One conversation, DOM-free: sends a turn as a streamed `Responses` request
// (the server keeps the session, so history survives reinstalling the
// extension), reports tokens as they come, and stops on request. If the
// server does not know `Responses`, it falls back to `Chat` with the whole
// conversation and stores both messages with `SaveMessage`.

import { Req, chunkText } from './protocol.js';
import { TabAgentError } from './client.js';
import { finalText } from './readers.js';

/**
 * @typedef {import('./client.js').TabAgentClient} TabAgentClient
 * @typedef {import('./readers.js').HistoryMessage} HistoryMessage
 * @typedef {{text: string, finishReason: string, usage: {prompt_tokens?: number, completion_tokens?: number} | null, citations?: any[]}} TurnResult
 * @typedef {object} TurnOptions
 * @property {string} input
 * @property {string} [system]   system prompt for this turn
 * @property {string} [model]
 * @property {Record<string, number>} [params]  temperature, top_p, max_tokens, ...
 * @property {string[]} [collections]  knowledge-base collections to ground the answer in (the reply cites them)
 * @property {(delta: string, text: string) => void} [onDelta]
 */

/**
 * Did the server refuse the request type itself (as opposed to failing it)?
 * @param {unknown} e
 */
export function isUnsupported(e) {
  if (!(e instanceof TabAgentError)) return false;
  if (e.status === 501 || /not[_ ]implemented|unsupported|unknown[_ ](request|variant|type)/i.test(e.type)) return true;
  const text = `${e.title} ${e.detail}`;
  return (e.status === 400 || e.status === 404) && /unknown variant|request_type|Responses/i.test(text);
}

export class ChatController {
  #client;
  #newId;
  /** @type {string | null} */ sessionId = null;
  /** the conversation so far (user and assistant turns), for the Chat fallback */
  /** @type {HistoryMessage[]} */ messages = [];
  /** the server has no Responses: use Chat + SaveMessage */
  useChat = false;
  /** @type {import('./protocol.js').RequestId | null} id of the generation in flight */
  current = null;

  /**
   * @param {TabAgentClient} client
   * @param {{newId?: () => string}} [options]
   */
  constructor(client, options = {}) {
    this.#client = client;
    this.#newId = options.newId ?? (() => crypto.randomUUID());
  }

  get busy() {
    return this.current !== null;
  }

  /** Start a new conversation. */
  reset() {
    this.sessionId = null;
    this.messages = [];
  }

  /**
   * Continue a stored conversation.
   * @param {string} sessionId
   * @param {HistoryMessage[]} messages
   */
  open(sessionId, messages) {
    this.sessionId = sessionId;
    this.messages = messages.filter((m) => m.role === 'user' || m.role === 'assistant');
  }

  /**
   * Send one user turn and stream the answer.
   * @param {TurnOptions} turn
   * @returns {Promise<TurnResult>}
   */
  async send(turn) {
    if (this.busy) throw new Error('a reply is still being generated');
    this.sessionId ??= this.#newId();
    let result;
    if (!this.useChat) {
      try {
        result = await this.#stream(Req.Responses, {
          session_id: this.sessionId,
          input: turn.input,
          ...(turn.system ? { system: turn.system } : {}),
          ...(turn.model ? { model: turn.model } : {}),
          ...(turn.collections?.length ? { collections: turn.collections } : {}),
          ...turn.params,
        }, turn);
      } catch (e) {
        if (!isUnsupported(e)) throw e;
        this.useChat = true;
      }
    }
    if (!result) {
      const messages = [
        ...(turn.system ? [{ role: 'system', content: turn.system }] : []),
        ...this.messages,
        { role: 'user', content: turn.input },
      ];
      const collections = turn.collections?.length ? { collections: turn.collections } : {};
      result = await this.#stream(Req.Chat, { messages, ...(turn.model ? { model: turn.model } : {}), ...collections, ...turn.params }, turn);
      await this.#save('user', turn.input);
      await this.#save('assistant', result.text, { finish_reason: result.finishReason });
    }
    this.messages.push({ role: 'user', content: turn.input }, { role: 'assistant', content: result.text });
    return result;
  }

  /** Ask the server to stop the reply in flight; its stream then ends as "cancelled". */
  async stop() {
    if (this.current === null) return;
    await this.#client.cancel(this.current);
  }

  /**
   * @param {string} type
   * @param {Record<string, any>} fields
   * @param {TurnOptions} turn
   * @returns {Promise<TurnResult>}
   */
  async #stream(type, fields, turn) {
    const s = this.#client.stream(type, fields);
    this.current = s.id;
    let text = '';
    try {
      for await (const msg of s) {
        if (msg.done) {
          const full = finalText(msg);
          if (full && full.length >= text.length) text = full;
          return {
            text,
            finishReason: typeof msg.finish_reason === 'string' ? msg.finish_reason : 'stop',
            usage: msg.usage && typeof msg.usage === 'object' ? msg.usage : null,
            ...(Array.isArray(msg.citations) && msg.citations.length ? { citations: msg.citations } : {}),
          };
        }
        const delta = chunkText(msg);
        if (delta) {
          text += delta;
          turn.onDelta?.(delta, text);
        }
      }
      return { text, finishReason: 'stop', usage: null };
    } finally {
      this.current = null;
    }
  }

  /**
   * Best effort: a failed save must not lose the answer on screen.
   * @param {string} role
   * @param {string} content
   * @param {Record<string, unknown>} [metadata]
   */
  async #save(role, content, metadata) {
    try {
      await this.#client.request(Req.SaveMessage, {
        session_id: this.sessionId,
        role,
        content,
        ...(metadata ? { metadata } : {}),
      });
    } catch {
      // history is a convenience; the conversation on screen is intact
    }
  }
}
