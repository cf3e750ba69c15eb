// The page API as a page sees it (page-tasks.js + page-api.js run in a vm
// context standing in for a page's main world), against a scripted
// extension answering the window messages: the Prompt API's members and
// aliases, create with monitor and initialPrompts, prompt and
// promptStreaming keeping the conversation, responseConstraint as a JSON
// schema, AbortSignal, clone, destroy, NotSupportedError for audio and
// images, NotAllowedError from the gate, and the globals rule.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const scripts = ['page-tasks.js', 'page-api.js'].map((f) => readFileSync(join(root, f), 'utf8'));
const replaceScript = readFileSync(join(root, 'page-replace.js'), 'utf8');

/**
 * A page with the API installed. `extension(msg, reply)` answers requests.
 * @param {(msg: any, reply: (m: any) => void) => void} extension
 * @param {{builtin?: boolean, replace?: 'before' | 'after'}} [opts]
 */
function pageWith(extension, opts = {}) {
  /** @type {((e: any) => void)[]} */
  const listeners = [];
  /** @type {any[]} */
  const sent = [];
  const builtin = class LanguageModel {};
  /** @type {Record<string, any>} */
  const ctx = {
    EventTarget, Event, DOMException, ReadableStream, TypeError, Promise, queueMicrotask, setTimeout,
    navigator: {},
    addEventListener: (/** @type {string} */ type, /** @type {any} */ fn) => type === 'message' && listeners.push(fn),
    postMessage: (/** @type {any} */ data) => {
      const self = vm.runInContext('globalThis', context);
      const echo = structuredClone(data);
      queueMicrotask(() => listeners.forEach((l) => l({ source: self, data: echo })));
      if (data.__tabagent === 'page->ext') {
        sent.push(data.msg);
        extension(structuredClone(data.msg), (m) => {
          const out = { __tabagent: 'ext->page', msg: m };
          queueMicrotask(() => listeners.forEach((l) => l({ source: self, data: structuredClone(out) })));
        });
      }
    },
  };
  if (opts.builtin) ctx.LanguageModel = builtin;
  const context = vm.createContext(ctx);
  if (opts.replace === 'before') vm.runInContext(replaceScript, context);
  for (const s of scripts) vm.runInContext(s, context);
  if (opts.replace === 'after') vm.runInContext(replaceScript, context);
  const g = vm.runInContext('globalThis', context);
  return { g, LM: g.navigator.tabagent.LanguageModel, api: g.navigator.tabagent, sent, builtin };
}

/** A scripted extension: a model with a 1024-token window; replies by words. */
function fakeExtension(overrides = {}) {
  /** @type {Record<string, (msg: any, reply: (m: any) => void) => void>} */
  const h = {
    Availability: (m, reply) => reply({ id: m.id, response_type: 'Availability', availability: 'available', done: true }),
    Params: (m, reply) => reply({ id: m.id, response_type: 'Params', defaultTopK: 40, maxTopK: 128, defaultTemperature: 0.8, maxTemperature: 2, done: true }),
    Load: (m, reply) => {
      reply({ id: m.id, response_type: 'LoadProgress', loaded: 0, done: false });
      reply({ id: m.id, response_type: 'LoadProgress', loaded: 1, done: false });
      reply({ id: m.id, response_type: 'Loaded', contextWindow: 1024, done: true });
    },
    Tokenize: (m, reply) => reply({ id: m.id, response_type: 'TokenCount', count: m.content.split(/\s+/).filter(Boolean).length, done: true }),
    Chat: (m, reply) => {
      const last = m.messages.at(-1).content;
      const text = m.json_schema ? '{"ok":true}' : `echo ${last} (${m.messages.length})`;
      for (const piece of text.match(/.{1,4}/g) ?? []) reply({ id: m.id, response_type: 'ChatChunk', delta: piece, done: false });
      reply({ id: m.id, response_type: 'ChatComplete', text, usage: { prompt_tokens: 10 * m.messages.length, completion_tokens: 5 }, done: true });
    },
    StopGeneration: (m, reply) => reply({ id: m.id, response_type: 'Stopped', done: true }),
    ...overrides,
  };
  return (/** @type {any} */ msg, /** @type {(m: any) => void} */ reply) => h[msg.request_type]?.(msg, reply);
}

/** Objects from the page's realm as plain host objects. @param {unknown} x */
const plain = (x) => JSON.parse(JSON.stringify(x));

/** @param {ReadableStream<string>} stream */
async function readAll(stream) {
  const parts = [];
  for await (const p of /** @type {any} */ (stream)) parts.push(p);
  return parts;
}

test('the IDL members of LanguageModel, with the older names as aliases', async () => {
  const { LM, api } = pageWith(fakeExtension());
  for (const name of ['create', 'availability', 'params']) assert.equal(typeof LM[name], 'function', name);
  const proto = LM.prototype;
  for (const name of ['prompt', 'promptStreaming', 'append', 'measureContextUsage', 'measureInputUsage', 'clone', 'destroy']) assert.equal(typeof proto[name], 'function', name);
  for (const name of ['contextUsage', 'contextWindow', 'inputUsage', 'inputQuota', 'topK', 'temperature', 'oncontextoverflow', 'onquotaoverflow']) {
    assert.ok(Object.getOwnPropertyDescriptor(proto, name)?.get, `${name} is an attribute`);
  }
  assert.ok(proto instanceof EventTarget);
  assert.throws(() => new LM(), TypeError);
  assert.deepEqual(Object.keys(api).sort(), ['LanguageDetector', 'LanguageModel', 'Rewriter', 'Summarizer', 'Translator', 'Writer']);
  assert.equal(await LM.availability(), 'available');
  assert.equal(await LM.availability({ expectedInputs: [{ type: 'audio' }] }), 'unavailable');
  assert.deepEqual(plain(await LM.params()), { defaultTopK: 40, maxTopK: 128, defaultTemperature: 0.8, maxTemperature: 2 });
});

test('create: monitor sees downloadprogress, initialPrompts count toward contextUsage; prompt keeps the conversation', async () => {
  const { LM, sent } = pageWith(fakeExtension());
  /** @type {number[]} */
  const progress = [];
  const s = await LM.create({
    initialPrompts: [{ role: 'system', content: 'be very brief' }],
    temperature: 0.2,
    topK: 5,
    monitor: (/** @type {EventTarget} */ m) => m.addEventListener('downloadprogress', (/** @type {any} */ e) => progress.push(e.loaded)),
  });
  assert.deepEqual(progress, [0, 1]);
  assert.equal(s.contextWindow, 1024);
  assert.equal(s.inputQuota, 1024);
  assert.equal(s.contextUsage, 3);
  assert.equal(s.inputUsage, 3);
  assert.equal(s.temperature, 0.2);
  assert.equal(s.topK, 5);
  assert.equal(await s.prompt('hi'), 'echo hi (2)');
  assert.equal(await s.prompt([{ role: 'user', content: [{ type: 'text', value: 'again' }] }]), 'echo again (4)');
  assert.equal(s.contextUsage, 45);
  const chat = sent.filter((m) => m.request_type === 'Chat').at(-1);
  assert.deepEqual(plain(chat.messages.map((/** @type {any} */ m) => m.role)), ['system', 'user', 'assistant', 'user']);
  assert.equal(chat.temperature, 0.2);
  assert.equal(chat.top_k, 5);
  assert.equal(await s.measureContextUsage('three more words'), 3);
  assert.equal(await s.measureInputUsage('two words'), 2);
});

test('promptStreaming is a ReadableStream of text pieces; append and clone', async () => {
  const { LM } = pageWith(fakeExtension());
  const s = await LM.create();
  const stream = s.promptStreaming('stream me');
  assert.ok(stream instanceof ReadableStream);
  const parts = await readAll(stream);
  assert.ok(parts.length >= 3);
  assert.equal(parts.join(''), 'echo stream me (1)');
  await s.append('context to remember');
  const twin = await s.clone();
  assert.equal(await twin.prompt('x'), 'echo x (4)', 'the clone has the conversation so far');
  assert.equal(await s.prompt('y'), 'echo y (4)', 'and the original did not see the clone\'s turn');
});

test('responseConstraint travels as a JSON schema; a RegExp is not supported', async () => {
  const { LM, sent } = pageWith(fakeExtension());
  const s = await LM.create();
  const schema = { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] };
  assert.deepEqual(JSON.parse(await s.prompt('json please', { responseConstraint: schema })), { ok: true });
  assert.deepEqual(sent.filter((m) => m.request_type === 'Chat').at(-1).json_schema, schema);
  await assert.rejects(s.prompt('x', { responseConstraint: /a+/ }), (/** @type {any} */ e) => e.name === 'NotSupportedError');
});

test('an AbortSignal stops a stream and a prompt: StopGeneration names the request', async () => {
  /** @type {any} */
  let held = null;
  const { LM, sent } = pageWith(fakeExtension({ Chat: (/** @type {any} */ m, /** @type {any} */ reply) => { held = m; reply({ id: m.id, response_type: 'ChatChunk', delta: 'first', done: false }); } }));
  const s = await LM.create();
  const ctl = new AbortController();
  const reader = s.promptStreaming('go on forever', { signal: ctl.signal }).getReader();
  assert.equal((await reader.read()).value, 'first');
  ctl.abort();
  await assert.rejects(reader.read(), (/** @type {any} */ e) => e.name === 'AbortError');
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(sent.filter((m) => m.request_type === 'StopGeneration').map((m) => m.target_id), [held.id]);
  const ctl2 = new AbortController();
  const p = s.prompt('again', { signal: ctl2.signal });
  ctl2.abort(new DOMException('enough', 'AbortError'));
  await assert.rejects(p, (/** @type {any} */ e) => e.message === 'enough');
  const pre = new AbortController();
  pre.abort();
  await assert.rejects(LM.create({ signal: pre.signal }), (/** @type {any} */ e) => e.name === 'AbortError');
});

test('audio and images are NotSupportedError; a refused origin is NotAllowedError; destroy ends the session', async () => {
  const { LM } = pageWith(fakeExtension());
  await assert.rejects(LM.create({ expectedInputs: [{ type: 'image' }] }), (/** @type {any} */ e) => e.name === 'NotSupportedError');
  const s = await LM.create();
  await assert.rejects(s.prompt([{ role: 'user', content: [{ type: 'audio', value: {} }] }]), (/** @type {any} */ e) => e.name === 'NotSupportedError');
  await assert.rejects(s.prompt([{ role: 'system', content: 'late' }]), (/** @type {any} */ e) => e.name === 'NotSupportedError');
  s.destroy();
  await assert.rejects(s.prompt('x'), (/** @type {any} */ e) => e.name === 'InvalidStateError');
  const refuse = (/** @type {any} */ m, /** @type {any} */ reply) => reply({ id: m.id, response_type: 'Error', error: { type: 'not_allowed', title: 'tabagent is not enabled for https://x' }, done: true });
  const denied = pageWith(refuse);
  await assert.rejects(denied.LM.create(), (/** @type {any} */ e) => e.name === 'NotAllowedError' && /not enabled/.test(e.message));
});

test('the globals: defined where the browser has none, the browser\'s kept unless the origin opted in', () => {
  const none = pageWith(fakeExtension());
  assert.equal(none.g.LanguageModel, none.LM);
  assert.equal(none.g.Summarizer, none.api.Summarizer);
  const kept = pageWith(fakeExtension(), { builtin: true });
  assert.equal(kept.g.LanguageModel, kept.builtin);
  assert.equal(kept.g.Writer, kept.api.Writer, 'only the ones the browser lacks');
  for (const when of /** @type {const} */ (['before', 'after'])) {
    const replaced = pageWith(fakeExtension(), { builtin: true, replace: when });
    assert.equal(replaced.g.LanguageModel, replaced.LM, `replace script ${when}`);
  }
});

test('Summarizer, Translator and LanguageDetector are prompt templates over fresh clones', async () => {
  const { api, sent } = pageWith(
    fakeExtension({
      Chat: (/** @type {any} */ m, /** @type {any} */ reply) => {
        const text = m.json_schema ? '{"language":"FR","confidence":0.9}' : `${m.messages[0].content.slice(0, 20)}|${m.messages.length}`;
        reply({ id: m.id, response_type: 'ChatComplete', text, usage: {}, done: true });
      },
    }),
  );
  const sum = await api.Summarizer.create({ type: 'tldr', length: 'short' });
  assert.equal(sum.type, 'tldr');
  assert.equal(await sum.summarize('a long text'), 'You summarize text. |2');
  assert.equal(await sum.summarize('another'), 'You summarize text. |2', 'calls do not pile up');
  assert.equal((await readAll(sum.summarizeStreaming('x'))).join(''), 'You summarize text. |2');
  const tr = await api.Translator.create({ sourceLanguage: 'en', targetLanguage: 'fr' });
  await tr.translate('hello');
  assert.match(sent.filter((m) => m.request_type === 'Chat').at(-1).messages[0].content, /from en to fr/);
  const det = await api.LanguageDetector.create();
  const [best] = await det.detect('bonjour');
  assert.deepEqual(plain(best), { detectedLanguage: 'fr', confidence: 0.9 });
});
