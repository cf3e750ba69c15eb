// One conversation, DOM-free: sends a turn as a streamed `Responses` request
// (the server keeps the session, so history survives reinstalling the
// extension), reports tokens as they come, and stops on request. If the
// server does not know `Responses`, it falls back to `Chat` with the whole
// conversation and stores both messages with `SaveMessage`. Regenerate and
// edit-and-resend rewind the conversation to a user turn first
// (`TruncateSession` on the server, so its history stays what the user
// sees); the chat's model and parameters are kept with its session
// (`SetSessionSettings`).

import { Req, chunkText } from './protocol.js';
import { TabAgentError } from './client.js';
import { finalText } from './readers.js';
import { DEFAULT_CHAT_SETTINGS, readChatSettings, settingsParams } from './chat-settings.js';

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
  /** @type {import('./chat-settings.js').ChatSettings} this chat's model and parameters */
  settings = { ...DEFAULT_CHAT_SETTINGS };
  /** the settings the server has for this session (JSON), to save only changes */
  #savedSettings = '';

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

  /** Start a new conversation (its settings stay, for the next chat). */
  reset() {
    this.sessionId = null;
    this.messages = [];
    this.#savedSettings = '';
  }

  /**
   * Continue a stored conversation.
   * @param {string} sessionId
   * @param {HistoryMessage[]} messages
   * @param {unknown} [settings] what the server kept for it (ChatHistory's `settings`)
   */
  open(sessionId, messages, settings) {
    this.sessionId = sessionId;
    this.messages = messages.filter((m) => m.role === 'user' || m.role === 'assistant');
    if (settings && typeof settings === 'object') {
      this.settings = readChatSettings(settings);
      this.#savedSettings = JSON.stringify(this.settings);
    } else {
      this.#savedSettings = '';
    }
  }

  /**
   * Change this chat's settings; kept on the server once the chat exists.
   * @param {Partial<import('./chat-settings.js').ChatSettings>} patch
   */
  async setSettings(patch) {
    this.settings = readChatSettings({ ...this.settings, ...patch });
    if (this.sessionId !== null && this.messages.length > 0) await this.#saveSettings();
  }

  /** Keep the settings with the session if they changed (best effort). */
  async #saveSettings() {
    const text = JSON.stringify(this.settings);
    if (text === this.#savedSettings || this.sessionId === null) return;
    // nothing to keep for a chat that never left the defaults
    if (this.#savedSettings === '' && text === JSON.stringify(DEFAULT_CHAT_SETTINGS)) return;
    try {
      await this.#client.request(Req.SetSessionSettings, { session_id: this.sessionId, settings: this.settings });
      this.#savedSettings = text;
    } catch {
      // the chat still uses them; they are sent with every turn
    }
  }

  /**
   * Rewind to before the `userIndex`-th user turn (0-based): the server
   * deletes that message and every later one (`TruncateSession`), and the
   * local conversation follows. Regenerate rewinds to the last user turn
   * and sends it again; edit-and-resend rewinds to the edited one.
   * @param {number} userIndex
   */
  async rewind(userIndex) {
    if (this.busy) throw new Error('a reply is still being generated');
    const local = this.messages.findIndex((m, i) => m.role === 'user' && this.messages.slice(0, i).filter((x) => x.role === 'user').length === userIndex);
    if (this.sessionId === null && local < 0) throw new Error(`there is no user turn ${userIndex + 1}`);
    // The server's turns decide: a turn that failed is shown and kept there,
    // though not in `messages` (the Chat fallback's conversation).
    if (this.sessionId !== null) {
      const page = await this.#client.request(Req.ChatHistory, { session_id: this.sessionId, order: 'oldest', limit: 1000 });
      const users = (Array.isArray(page.messages) ? page.messages : []).filter((/** @type {any} */ m) => m?.role === 'user');
      const id = users[userIndex]?.id;
      if (typeof id !== 'number') throw new Error('the server has no such turn in this chat');
      await this.#client.request(Req.TruncateSession, { session_id: this.sessionId, from_id: id });
    }
    if (local >= 0) this.messages = this.messages.slice(0, local);
  }

  /**
   * Send one user turn and stream the answer.
   * @param {TurnOptions} turn
   * @returns {Promise<TurnResult>}
   */
  async send(turn) {
    if (this.busy) throw new Error('a reply is still being generated');
    this.sessionId ??= this.#newId();
    // the chat's own settings, under what the turn itself says
    turn = { ...turn, model: turn.model ?? (this.settings.model || undefined), params: { ...settingsParams(this.settings), ...turn.params } };
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
    // not awaited: the answer is shown whatever becomes of this
    void this.#saveSettings();
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
