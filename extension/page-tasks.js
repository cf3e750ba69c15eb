// The writing-assistance and translation APIs of Chrome's built-in AI
// (Summarizer, Writer, Rewriter, Translator, LanguageDetector), each a
// prompt template over tabagent's LanguageModel (page-api.js, which runs
// right after this MAIN-world script and calls the factory it leaves).
// Every call is a clone of the task's session, so calls do not pile up
// into one conversation.
(() => {
  const win = /** @type {Window & typeof globalThis & Record<string | symbol, any>} */ (globalThis);

  /** @param {any} LanguageModel */
  function makeTasks(LanguageModel) {
    /**
     * One task: a system prompt made from its options, then one prompt per call.
     * @param {string} name
     * @param {(options: Record<string, any>) => string} system
     * @param {(input: string, options: Record<string, any>) => string} user
     */
    function task(name, system, user) {
      const Task = class {
        /** @type {any} */ #session;
        /** @type {Record<string, any>} */ #options;
        /** @param {symbol} key @param {any} session @param {Record<string, any>} options */
        constructor(key, session, options) {
          if (key !== made) throw new TypeError(`Illegal constructor: use ${name}.create()`);
          this.#session = session;
          this.#options = options;
          for (const [k, v] of Object.entries(options)) if (typeof v !== 'function' && k !== 'signal') Object.defineProperty(this, k, { value: v, enumerable: true });
        }
        /** @param {Record<string, any>} [options] */
        static availability(options = {}) {
          return LanguageModel.availability(options);
        }
        /** @param {Record<string, any>} [options] */
        static async create(options = {}) {
          const session = await LanguageModel.create({ initialPrompts: [{ role: 'system', content: system(options) }], signal: options.signal, monitor: options.monitor });
          return new this(made, session, options);
        }
        get inputQuota() {
          return this.#session.contextWindow;
        }
        /** @param {string} input @param {Record<string, any>} [options] */
        async measureInputUsage(input, options = {}) {
          return this.#session.measureContextUsage(user(String(input), { ...this.#options, ...options }), options);
        }
        /** @param {string} input @param {Record<string, any>} options @param {object} [constraint] a JSON schema for the answer */
        async run(input, options = {}, constraint = undefined) {
          const s = await this.#session.clone({ signal: options.signal });
          try {
            return await s.prompt(user(String(input), { ...this.#options, ...options }), { signal: options.signal, responseConstraint: constraint });
          } finally {
            s.destroy();
          }
        }
        /** @param {string} input @param {Record<string, any>} options */
        runStreaming(input, options = {}) {
          const text = user(String(input), { ...this.#options, ...options });
          /** @type {ReadableStreamDefaultReader<string> | null} */
          let reader = null;
          /** @type {any} */
          let s = null;
          return new ReadableStream({
            pull: async (controller) => {
              if (!reader) {
                s = await this.#session.clone({ signal: options.signal });
                reader = s.promptStreaming(text, { signal: options.signal }).getReader();
              }
              const r = await /** @type {ReadableStreamDefaultReader<string>} */ (reader).read();
              if (r.done) {
                s.destroy();
                controller.close();
              } else {
                controller.enqueue(r.value);
              }
            },
            cancel: (reason) => {
              reader?.cancel(reason);
              s?.destroy();
            },
          });
        }
        destroy() {
          this.#session.destroy();
        }
      };
      Object.defineProperty(Task, 'name', { value: name });
      return Task;
    }
    const made = Symbol('tabagent.task');
    /** @param {Record<string, any>} o */
    const context = (o) => (o.sharedContext ? `\nBackground: ${o.sharedContext}` : '');
    /** @param {Record<string, any>} o */
    const extra = (o) => (o.context ? `\nContext: ${o.context}` : '');
    /** @param {Record<string, any>} o */
    const lang = (o) => (o.outputLanguage ? ` Answer in ${o.outputLanguage}.` : '');

    const SummarizerBase = task(
      'Summarizer',
      (o) => `You summarize text. Kind of summary: ${o.type ?? 'key-points'}; length: ${o.length ?? 'short'}; format: ${o.format ?? 'markdown'}.${lang(o)} Reply with the summary only.${context(o)}`,
      (input, o) => `Summarize this text:${extra(o)}\n\n${input}`,
    );
    class Summarizer extends SummarizerBase {
      /** @param {string} input @param {Record<string, any>} [options] */ summarize(input, options) { return this.run(input, options); }
      /** @param {string} input @param {Record<string, any>} [options] */ summarizeStreaming(input, options) { return this.runStreaming(input, options); }
    }
    const WriterBase = task(
      'Writer',
      (o) => `You write text for the user. Tone: ${o.tone ?? 'neutral'}; length: ${o.length ?? 'short'}; format: ${o.format ?? 'markdown'}.${lang(o)} Reply with the text only.${context(o)}`,
      (input, o) => `Write this:${extra(o)}\n\n${input}`,
    );
    class Writer extends WriterBase {
      /** @param {string} input @param {Record<string, any>} [options] */ write(input, options) { return this.run(input, options); }
      /** @param {string} input @param {Record<string, any>} [options] */ writeStreaming(input, options) { return this.runStreaming(input, options); }
    }
    const RewriterBase = task(
      'Rewriter',
      (o) => `You rewrite text. Tone: ${o.tone ?? 'as-is'}; length: ${o.length ?? 'as-is'}; format: ${o.format ?? 'as-is'}.${lang(o)} Reply with the rewritten text only.${context(o)}`,
      (input, o) => `Rewrite this text:${extra(o)}\n\n${input}`,
    );
    class Rewriter extends RewriterBase {
      /** @param {string} input @param {Record<string, any>} [options] */ rewrite(input, options) { return this.run(input, options); }
      /** @param {string} input @param {Record<string, any>} [options] */ rewriteStreaming(input, options) { return this.runStreaming(input, options); }
    }
    const TranslatorBase = task(
      'Translator',
      (o) => `You translate text from ${o.sourceLanguage ?? 'its language'} to ${o.targetLanguage ?? 'English'}. Reply with the translation only.`,
      (input) => input,
    );
    class Translator extends TranslatorBase {
      /** @param {string} input @param {Record<string, any>} [options] */ translate(input, options) { return this.run(input, options); }
      /** @param {string} input @param {Record<string, any>} [options] */ translateStreaming(input, options) { return this.runStreaming(input, options); }
    }
    const DETECTED = {
      type: 'object',
      properties: { language: { type: 'string', minLength: 2, maxLength: 3 }, confidence: { type: 'number', minimum: 0, maximum: 1 } },
      required: ['language', 'confidence'],
    };
    const DetectorBase = task('LanguageDetector', () => 'You name the language of a text as a BCP 47 code (en, fr, de, ...), with your confidence from 0 to 1, in JSON.', (input) => input);
    class LanguageDetector extends DetectorBase {
      /** @param {string} input @param {Record<string, any>} [options] */
      async detect(input, options = {}) {
        const answer = JSON.parse(await this.run(input, options, DETECTED));
        const confidence = Math.max(0, Math.min(1, Number(answer.confidence) || 0));
        return [
          { detectedLanguage: String(answer.language).toLowerCase(), confidence },
          { detectedLanguage: 'und', confidence: 1 - confidence },
        ];
      }
    }
    return { Summarizer, Writer, Rewriter, Translator, LanguageDetector };
  }
  win[Symbol.for('tabagent.tasks')] = makeTasks;
})();
