// The page API, in the page's own JavaScript world (a MAIN-world content
// script run at document_start): `navigator.tabagent.LanguageModel` with the
// shape of Chrome's Prompt API (webmachinelearning/prompt-api), and
// Summarizer, Writer, Rewriter, Translator and LanguageDetector as prompt
// templates over it (page-tasks.js). The global `LanguageModel` & co. are
// defined where the browser has none, and replace the browser's where the
// user opted in for this origin (page-replace.js, registered only there).
//
// A session's conversation lives here, in the page: each prompt is one
// stateless Chat through page-bridge.js (isolated world) and the service
// worker's gate, which checks this origin. Nothing here is trusted by the
// extension; it is the page's own code, and can only ask.
(() => {
  const win = /** @type {Window & typeof globalThis & Record<string | symbol, any>} */ (globalThis);
  if (/** @type {any} */ (win.navigator).tabagent) return;
  const MARK = '__tabagent';
  const REPLACE = Symbol.for('tabagent.replaceBuiltins');

  // ---- messages to the extension -----------------------------------------------------
  let nextId = 1;
  /** @type {Map<string, {chunk: (m: any) => void, done: (m: any) => void, fail: (e: unknown) => void}>} */
  const pending = new Map();
  win.addEventListener('message', (e) => {
    if (e.source !== win || typeof e.data !== 'object' || e.data === null || e.data[MARK] !== 'ext->page') return;
    const msg = e.data.msg;
    const p = pending.get(String(msg?.id));
    if (!p) return;
    if (msg.response_type === 'Error' || msg.error) {
      pending.delete(String(msg.id));
      p.fail(domError(msg.error));
    } else if (msg.done) {
      pending.delete(String(msg.id));
      p.done(msg);
    } else {
      p.chunk(msg);
    }
  });

  /**
   * @param {string} type
   * @param {Record<string, any>} fields
   * @param {(m: any) => void} [onChunk]
   */
  function call(type, fields = {}, onChunk = () => {}) {
    const id = `p${nextId++}`;
    const promise = new Promise((done, fail) => pending.set(id, { chunk: onChunk, done, fail }));
    win.postMessage({ [MARK]: 'page->ext', msg: { ...fields, id, request_type: type } }, '*');
    return { id, promise };
  }

  /** Stop a running Chat: the server's job ends; the page no longer waits for it. @param {string} id @param {unknown} reason */
  function stop(id, reason) {
    const p = pending.get(id);
    pending.delete(id);
    call('StopGeneration', { target_id: id }).promise.catch(() => {});
    p?.fail(reason);
  }

  /** @param {any} problem */
  function domError(problem) {
    const title = String(problem?.title ?? 'tabagent failed');
    const message = problem?.detail ? `${title}: ${problem.detail}` : title;
    const name = problem?.type === 'not_allowed' ? 'NotAllowedError' : problem?.type === 'busy' ? 'QuotaExceededError' : 'OperationError';
    return new DOMException(message, name);
  }

  /** @param {AbortSignal | undefined} signal */
  function checkSignal(signal) {
    if (signal?.aborted) throw signal.reason ?? new DOMException('aborted', 'AbortError');
  }

  /**
   * Resolve `work` unless `signal` aborts first (then `onAbort` runs and the
   * promise rejects with the signal's reason).
   * @template T
   * @param {Promise<T>} work
   * @param {AbortSignal | undefined} signal
   * @param {(reason: unknown) => void} [onAbort]
   * @returns {Promise<T>}
   */
  function abortable(work, signal, onAbort) {
    if (!signal) return work;
    return new Promise((resolve, reject) => {
      const abort = () => {
        const reason = signal.reason ?? new DOMException('aborted', 'AbortError');
        onAbort?.(reason);
        reject(reason);
      };
      if (signal.aborted) return abort();
      signal.addEventListener('abort', abort, { once: true });
      work.then(resolve, reject).finally(() => signal.removeEventListener('abort', abort));
    });
  }

  // ---- prompt input ------------------------------------------------------------------
  /**
   * Text of one message's content: a string, or a list of {type: 'text', value}.
   * Audio and images are refused as Chrome refuses what it cannot do.
   * @param {unknown} content
   */
  function contentText(content) {
    if (typeof content === 'string') return content;
    if (!Array.isArray(content)) throw new TypeError('content: a string or a list of {type, value}');
    return content
      .map((part) => {
        if (typeof part === 'string') return part;
        if (part?.type !== 'text' || typeof part.value !== 'string') {
          throw new DOMException(`tabagent takes text only, not ${String(part?.type)}`, 'NotSupportedError');
        }
        return part.value;
      })
      .join('');
  }

  /**
   * A prompt (a string, or a list of messages) as Chat messages.
   * @param {unknown} input
   * @param {boolean} allowSystem
   * @returns {{role: string, content: string}[]}
   */
  function toMessages(input, allowSystem) {
    if (typeof input === 'string') return [{ role: 'user', content: input }];
    if (!Array.isArray(input)) throw new TypeError('a prompt is a string or a list of {role, content}');
    return input.map((m, i) => {
      const role = m?.role ?? 'user';
      if (!['system', 'user', 'assistant'].includes(role)) throw new TypeError(`role: ${String(role)}`);
      if (role === 'system' && !(allowSystem && i === 0)) throw new DOMException('a system message comes first in initialPrompts only', 'NotSupportedError');
      return { role, content: contentText(m.content) };
    });
  }

  /** @param {unknown} types @param {string} what */
  function textOnly(types, what) {
    if (types === undefined) return;
    for (const t of /** @type {any[]} */ (types ?? [])) {
      if (t?.type && t.type !== 'text') throw new DOMException(`${what}: tabagent takes text only, not ${t.type}`, 'NotSupportedError');
    }
  }

  // ---- LanguageModel -------------------------------------------------------------------
  const secret = Symbol('tabagent.session');

  /**
   * @typedef {{messages: {role: string, content: string}[], temperature?: number, topK?: number, contextWindow: number, contextUsage: number}} SessionState
   */

  class LanguageModel extends EventTarget {
    /** @type {SessionState} */ #s;
    #destroyed = false;
    /** @type {Set<string>} */ #running = new Set();
    /** @type {((e: Event) => any) | null} */ #onoverflow = null;

    /** @param {symbol} key @param {SessionState} state */
    constructor(key, state) {
      if (key !== secret) throw new TypeError('Illegal constructor: use LanguageModel.create()');
      super();
      this.#s = state;
    }

    /** @param {Record<string, any>} [options] */
    static async availability(options = {}) {
      try {
        textOnly(options.expectedInputs, 'expectedInputs');
        textOnly(options.expectedOutputs, 'expectedOutputs');
      } catch {
        return 'unavailable';
      }
      const r = await call('Availability').promise;
      return r.availability;
    }

    static async params() {
      const r = await call('Params').promise;
      return { defaultTopK: r.defaultTopK, maxTopK: r.maxTopK, defaultTemperature: r.defaultTemperature, maxTemperature: r.maxTemperature };
    }

    /** @param {Record<string, any>} [options] */
    static async create(options = {}) {
      const signal = options.signal;
      checkSignal(signal);
      textOnly(options.expectedInputs, 'expectedInputs');
      textOnly(options.expectedOutputs, 'expectedOutputs');
      if ((options.temperature === undefined) !== (options.topK === undefined)) {
        throw new DOMException('give both temperature and topK, or neither', 'NotSupportedError');
      }
      const messages = options.initialPrompts ? toMessages(options.initialPrompts, true) : [];
      const monitor = new EventTarget();
      if (typeof options.monitor === 'function') options.monitor(monitor);
      const load = call('Load', {}, (m) => {
        if (m.response_type !== 'LoadProgress') return;
        const e = new Event('downloadprogress');
        Object.assign(e, { loaded: m.loaded, total: 1, lengthComputable: true });
        monitor.dispatchEvent(e);
      });
      const loaded = await abortable(load.promise, signal, () => pending.delete(load.id));
      const session = new LanguageModel(secret, {
        messages,
        temperature: options.temperature,
        topK: options.topK,
        contextWindow: typeof loaded.contextWindow === 'number' ? loaded.contextWindow : Infinity,
        contextUsage: 0,
      });
      if (messages.length > 0) session.#s.contextUsage = await abortable(measure(messages), signal);
      return session;
    }

    get contextWindow() {
      return this.#s.contextWindow;
    }
    get contextUsage() {
      return this.#s.contextUsage;
    }
    get inputQuota() {
      return this.#s.contextWindow;
    }
    get inputUsage() {
      return this.#s.contextUsage;
    }
    get topK() {
      return this.#s.topK;
    }
    get temperature() {
      return this.#s.temperature;
    }
    get oncontextoverflow() {
      return this.#onoverflow;
    }
    set oncontextoverflow(fn) {
      if (this.#onoverflow) this.removeEventListener('contextoverflow', this.#onoverflow);
      this.#onoverflow = typeof fn === 'function' ? fn : null;
      if (this.#onoverflow) this.addEventListener('contextoverflow', this.#onoverflow);
    }
    get onquotaoverflow() {
      return this.oncontextoverflow;
    }
    set onquotaoverflow(fn) {
      this.oncontextoverflow = fn;
    }

    #alive() {
      if (this.#destroyed) throw new DOMException('the session was destroyed', 'InvalidStateError');
    }

    /**
     * One Chat over the conversation plus `input`; `onText` gets each piece.
     * @param {unknown} input
     * @param {Record<string, any>} options
     * @param {(text: string) => void} onText
     */
    #run(input, options, onText) {
      this.#alive();
      checkSignal(options.signal);
      const added = toMessages(input, false);
      /** @type {Record<string, any>} */
      const fields = { messages: [...this.#s.messages, ...added] };
      if (this.#s.temperature !== undefined) fields.temperature = this.#s.temperature;
      if (this.#s.topK !== undefined) fields.top_k = this.#s.topK;
      if (options.responseConstraint !== undefined) {
        const c = options.responseConstraint;
        if (Object.prototype.toString.call(c) === '[object RegExp]') throw new DOMException('tabagent takes a JSON schema as responseConstraint, not a RegExp', 'NotSupportedError');
        fields.json_schema = c;
      }
      let streamed = false;
      const req = call('Chat', fields, (m) => {
        if (typeof m.delta === 'string' && m.delta !== '') {
          streamed = true;
          onText(m.delta);
        }
      });
      this.#running.add(req.id);
      const work = abortable(req.promise, options.signal, (reason) => stop(req.id, reason)).then(
        (final) => {
          if (!streamed && final.text) onText(String(final.text)); // an answer that came in one piece
          this.#s.messages.push(...added, { role: 'assistant', content: String(final.text ?? '') });
          const used = (final.usage?.prompt_tokens ?? 0) + (final.usage?.completion_tokens ?? 0);
          if (used > 0) this.#s.contextUsage = used;
          if (this.#s.contextUsage > this.#s.contextWindow) this.dispatchEvent(new Event('contextoverflow'));
          return String(final.text ?? '');
        },
      );
      return { id: req.id, work: work.finally(() => this.#running.delete(req.id)) };
    }

    /** @param {unknown} input @param {Record<string, any>} [options] */
    async prompt(input, options = {}) {
      return this.#run(input, options, () => {}).work;
    }

    /** @param {unknown} input @param {Record<string, any>} [options] */
    promptStreaming(input, options = {}) {
      /** @type {{id: string, work: Promise<string>} | null} */
      let run = null;
      return new ReadableStream({
        start: (controller) => {
          run = this.#run(input, options, (text) => controller.enqueue(text));
          run.work.then(
            () => controller.close(),
            (e) => controller.error(e),
          );
        },
        cancel: (reason) => {
          if (run) stop(run.id, reason);
        },
      });
    }

    /** @param {unknown} input @param {Record<string, any>} [options] */
    async append(input, options = {}) {
      this.#alive();
      checkSignal(options.signal);
      const added = toMessages(input, false);
      const usage = await abortable(measure([...this.#s.messages, ...added]), options.signal);
      this.#s.messages.push(...added);
      this.#s.contextUsage = usage;
      if (usage > this.#s.contextWindow) this.dispatchEvent(new Event('contextoverflow'));
    }

    /** @param {unknown} input @param {Record<string, any>} [options] */
    async measureContextUsage(input, options = {}) {
      this.#alive();
      checkSignal(options.signal);
      return abortable(measure(toMessages(input, false)), options.signal);
    }

    /** @param {unknown} input @param {Record<string, any>} [options] */
    measureInputUsage(input, options = {}) {
      return this.measureContextUsage(input, options);
    }

    /** @param {Record<string, any>} [options] */
    async clone(options = {}) {
      this.#alive();
      checkSignal(options.signal);
      return new LanguageModel(secret, { ...this.#s, messages: this.#s.messages.map((m) => ({ ...m })) });
    }

    destroy() {
      if (this.#destroyed) return;
      this.#destroyed = true;
      for (const id of this.#running) stop(id, new DOMException('the session was destroyed', 'AbortError'));
      this.#running.clear();
    }
  }

  /** Tokens of some messages' text, counted by the model's tokenizer. @param {{content: string}[]} messages */
  async function measure(messages) {
    const r = await call('Tokenize', { content: messages.map((m) => m.content).join('\n') }).promise;
    return Number(r.count) || 0;
  }

  // ---- exposing it -------------------------------------------------------------------
  // page-tasks.js, run just before this script, left its factory here.
  const makeTasks = win[Symbol.for('tabagent.tasks')];
  delete win[Symbol.for('tabagent.tasks')];
  const tasks = typeof makeTasks === 'function' ? makeTasks(LanguageModel) : {};
  const api = Object.freeze({ LanguageModel, ...tasks });
  Object.defineProperty(win.navigator, 'tabagent', { value: api, enumerable: false, configurable: false, writable: false });

  /** Define the globals: where the browser has none, or all of them when replacing. @param {boolean} replace */
  function installGlobals(replace) {
    for (const [name, value] of Object.entries(api)) {
      if (!replace && name in win) continue;
      Object.defineProperty(win, name, { value, writable: true, configurable: true, enumerable: false });
    }
  }
  installGlobals(win[REPLACE] === true);
  // page-replace.js may run after this script: it calls back here.
  win[Symbol.for('tabagent.installGlobals')] = installGlobals;
})();
