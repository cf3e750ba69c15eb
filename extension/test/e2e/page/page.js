// The test page's code: written against Chrome's Prompt API shape only. The
// browser test calls these with `api` = the global `LanguageModel` (Chrome's
// own name) or navigator.tabagent's; the page does not know which it got.
// Every function returns plain JSON for DevTools' evaluate.

/** The API under test: 'global' or 'tabagent'. @param {string} which */
function apiOf(which) {
  const root = which === 'tabagent' ? navigator.tabagent : globalThis;
  return { LanguageModel: root.LanguageModel, Summarizer: root.Summarizer, Writer: root.Writer, Rewriter: root.Rewriter, Translator: root.Translator, LanguageDetector: root.LanguageDetector };
}

/**
 * A WPT-style conformance list of the IDL members tabagent implements: each
 * entry is [name, passed].
 * @param {string} which
 */
async function conformance(which) {
  const api = apiOf(which);
  const LM = api.LanguageModel;
  const results = [];
  const t = (name, fn) => {
    try {
      results.push([name, Boolean(fn())]);
    } catch (e) {
      results.push([name, false, String(e)]);
    }
  };
  // an attribute is a getter on the prototype chain (an interface's, or an inherited one)
  const isAttr = (proto, name) => {
    for (let p = proto; p && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
      const d = Object.getOwnPropertyDescriptor(p, name);
      if (d) return typeof d.get === 'function';
    }
    return false;
  };
  t('LanguageModel is a function', () => typeof LM === 'function');
  t('LanguageModel inherits EventTarget', () => LM.prototype instanceof EventTarget);
  t('new LanguageModel() throws TypeError', () => {
    try {
      new LM();
      return false;
    } catch (e) {
      return e instanceof TypeError;
    }
  });
  for (const m of ['create', 'availability', 'params']) t(`static LanguageModel.${m}()`, () => typeof LM[m] === 'function');
  for (const m of ['prompt', 'promptStreaming', 'append', 'measureContextUsage', 'clone', 'destroy']) t(`LanguageModel.prototype.${m}()`, () => typeof LM.prototype[m] === 'function');
  for (const a of ['contextUsage', 'contextWindow', 'topK', 'temperature', 'oncontextoverflow']) t(`LanguageModel.prototype.${a} attribute`, () => isAttr(LM.prototype, a));
  // the older names
  t('LanguageModel.prototype.measureInputUsage() (old name)', () => typeof LM.prototype.measureInputUsage === 'function');
  for (const a of ['inputUsage', 'inputQuota', 'onquotaoverflow']) t(`LanguageModel.prototype.${a} attribute (old name)`, () => isAttr(LM.prototype, a));
  const tasks = { Summarizer: ['summarize', 'summarizeStreaming'], Writer: ['write', 'writeStreaming'], Rewriter: ['rewrite', 'rewriteStreaming'], Translator: ['translate', 'translateStreaming'], LanguageDetector: ['detect'] };
  for (const [name, methods] of Object.entries(tasks)) {
    const C = api[name];
    t(`${name} is a function`, () => typeof C === 'function');
    t(`static ${name}.create()`, () => typeof C.create === 'function');
    t(`static ${name}.availability()`, () => typeof C.availability === 'function');
    for (const m of [...methods, 'destroy', 'measureInputUsage']) t(`${name}.prototype.${m}()`, () => typeof C.prototype[m] === 'function');
    t(`${name}.prototype.inputQuota attribute`, () => isAttr(C.prototype, 'inputQuota'));
  }
  // behaviour every page relies on
  const availability = await LM.availability();
  t('availability() is one of the four states', () => ['unavailable', 'downloadable', 'downloading', 'available'].includes(availability));
  const params = await LM.params();
  t('params() has the four numbers', () => ['defaultTopK', 'maxTopK', 'defaultTemperature', 'maxTemperature'].every((k) => typeof params[k] === 'number'));
  const images = await LM.create({ expectedInputs: [{ type: 'image' }] }).then(
    () => 'created',
    (e) => e.name,
  );
  t('create() with image input rejects NotSupportedError', () => images === 'NotSupportedError');
  const aborted = new AbortController();
  aborted.abort();
  const pre = await LM.create({ signal: aborted.signal }).then(
    () => 'created',
    (e) => e.name,
  );
  t('create() with an aborted signal rejects AbortError', () => pre === 'AbortError');
  return results;
}

/**
 * create() with a monitor, prompt(), promptStreaming(), the context numbers.
 * @param {string} which
 */
async function scenario(which) {
  const LM = apiOf(which).LanguageModel;
  const progress = [];
  const session = await LM.create({
    initialPrompts: [{ role: 'system', content: 'You are a helpful assistant. Answer briefly.' }],
    monitor: (m) => m.addEventListener('downloadprogress', (e) => progress.push(e.loaded)),
  });
  const usageAfterCreate = session.contextUsage;
  const answer = await session.prompt('What is the capital of France?');
  const chunks = [];
  for await (const chunk of session.promptStreaming('And of Italy?')) chunks.push(chunk);
  const measured = await session.measureContextUsage('How many tokens is this?');
  const result = {
    progress,
    answer,
    chunks,
    usageAfterCreate,
    contextUsage: session.contextUsage,
    contextWindow: session.contextWindow,
    inputQuota: session.inputQuota,
    measured,
  };
  session.destroy();
  return result;
}

/** responseConstraint: a JSON schema the answer must follow. @param {string} which */
async function structured(which) {
  const LM = apiOf(which).LanguageModel;
  const session = await LM.create();
  const schema = {
    type: 'object',
    properties: { city: { type: 'string' }, country: { type: 'string' }, population: { type: 'integer' } },
    required: ['city', 'country', 'population'],
    additionalProperties: false,
  };
  const text = await session.prompt('Describe Paris as JSON.', { responseConstraint: schema });
  session.destroy();
  return { text };
}

/** Abort a stream after two chunks. @param {string} which */
async function abortStream(which) {
  const LM = apiOf(which).LanguageModel;
  const session = await LM.create();
  const controller = new AbortController();
  const reader = session.promptStreaming('Count from 1 to 200, separated by commas.', { signal: controller.signal }).getReader();
  const chunks = [];
  while (chunks.length < 2) {
    const r = await reader.read();
    if (r.done) return { chunks, error: 'ended before the abort' };
    chunks.push(r.value);
  }
  controller.abort();
  try {
    await reader.read();
    return { chunks, error: 'no AbortError' };
  } catch (e) {
    return { chunks, error: e.name };
  } finally {
    session.destroy();
  }
}

/** What a non-enabled origin gets. @param {string} which */
async function refused(which) {
  const LM = apiOf(which).LanguageModel;
  const out = {};
  for (const [name, fn] of [
    ['create', () => LM.create()],
    ['availability', () => LM.availability()],
  ]) {
    out[name] = await fn().then(
      () => 'resolved',
      (e) => `${e.name}: ${e.message}`,
    );
  }
  return out;
}

/**
 * What the page can reach by talking to the extension's bridge directly,
 * bypassing the API: each request type -> the error type it got.
 * @param {string[]} types
 */
async function raw(types) {
  const answers = {};
  await Promise.all(
    types.map(
      (type, i) =>
        new Promise((resolve) => {
          const id = `raw${i}`;
          const on = (e) => {
            if (e.source !== window || e.data?.__tabagent !== 'ext->page' || e.data.msg?.id !== id) return;
            if (!e.data.msg.done && e.data.msg.response_type !== 'Error') return;
            removeEventListener('message', on);
            answers[type] = e.data.msg.error?.type ?? `answered ${e.data.msg.response_type}`;
            resolve();
          };
          addEventListener('message', on);
          postMessage({ __tabagent: 'page->ext', msg: { id, request_type: type } }, '*');
          setTimeout(() => resolve((answers[type] ??= 'no answer')), 15000);
        }),
    ),
  );
  return answers;
}

/** Which globals are tabagent's. */
function globals() {
  const mine = navigator.tabagent ?? {};
  return Object.fromEntries(
    ['LanguageModel', 'Summarizer', 'Writer', 'Rewriter', 'Translator', 'LanguageDetector'].map((n) => [n, !(n in globalThis) ? 'none' : globalThis[n] === mine[n] ? 'tabagent' : 'browser']),
  );
}
