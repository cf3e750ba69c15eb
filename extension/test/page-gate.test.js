// The service worker's gate for web pages: an origin that is not enabled
// gets NotAllowed and nothing goes upstream; only the Prompt API's requests
// pass, with their fields cut down; history, documents and models are out
// of reach; chats are capped per origin; the badge follows activity; a
// page's hang-up stops its generation.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { TabAgentClient } from '../lib/client.js';
import { PageGate, cleanChat } from '../lib/page-gate.js';
import { FakeClock, FakeTransport, flush, portPair } from './helpers/fakes.js';

const ENABLED = 'https://ok.example';

const MODELS = {
  ListModels: (/** @type {any} */ m, /** @type {any} */ port) =>
    port.deliver({
      id: m.id,
      response_type: 'ModelList',
      models: [
        { id: 'embed', kind: 'embedding', loaded: true },
        { id: 'gemma', kind: 'chat', loaded: false },
        { id: 'tiny', kind: 'chat', loaded: true },
      ],
      done: true,
    }),
};

function setup(options = {}) {
  const clock = new FakeClock();
  const native = new FakeTransport('native', { handlers: MODELS });
  const upstream = new TabAgentClient({ transports: [native], timers: clock, random: () => 0 });
  /** @type {[number, boolean][]} */
  const badge = [];
  /** @type {string[]} */
  const refused = [];
  const gate = new PageGate(upstream, {
    access: async (origin) => ({ enabled: origin === ENABLED, replace: false, source: origin === ENABLED ? 'user' : 'none' }),
    pageModel: async () => '',
    onRefused: (o) => refused.push(o),
    onActivity: (tab, active) => badge.push([tab, active]),
    ...options,
  });
  /** @param {string} origin @param {number} [tab] */
  const page = (origin, tab = 1) => {
    const [pageEnd, workerEnd] = portPair();
    gate.attach(workerEnd, origin, tab);
    /** @type {any[]} */
    const got = [];
    pageEnd.onMessage.addListener((m) => got.push(m));
    return { port: pageEnd, got, send: (/** @type {any} */ m) => pageEnd.postMessage(m) };
  };
  const settle = async () => {
    for (let i = 0; i < 10; i++) await flush();
  };
  return { gate, native, page, badge, refused, settle };
}

test('an origin that is not enabled is refused and the server sees nothing', async () => {
  const { native, page, refused, settle } = setup();
  const p = page('https://evil.example');
  p.send({ id: 1, request_type: 'Chat', messages: [{ role: 'user', content: 'hi' }] });
  p.send({ id: 2, request_type: 'Availability' });
  await settle();
  assert.deepEqual(p.got.map((m) => [m.id, m.response_type, m.error?.type]), [
    [1, 'Error', 'not_allowed'],
    [2, 'Error', 'not_allowed'],
  ]);
  assert.match(p.got[0].error.title, /not enabled for https:\/\/evil\.example/);
  assert.equal(native.ports.length, 0, 'no connection upstream at all');
  assert.deepEqual(refused, ['https://evil.example', 'https://evil.example']);
});

test('history, documents, models and everything else are out of reach', async () => {
  const { native, page, settle } = setup();
  const p = page(ENABLED);
  const types = ['ListSessions', 'ChatHistory', 'RagQuery', 'AddDocument', 'ListCollections', 'LoadModel', 'PullModel', 'DeleteModel', 'ListModels', 'SetParams', 'Subscribe', 'ClientStatus', 'Reconnect', 'Generate', 'Responses'];
  types.forEach((t, i) => p.send({ id: i, request_type: t }));
  await settle();
  assert.equal(p.got.length, types.length);
  for (const m of p.got) assert.equal(m.error?.type, 'not_allowed', JSON.stringify(m));
  const upstreamTypes = native.ports.flatMap((port) => port.sent.map((m) => m.request_type));
  assert.deepEqual([...new Set(upstreamTypes)].filter((t) => t !== 'Health' && t !== 'ListModels'), [], `upstream saw ${upstreamTypes}`);
});

test('a Chat goes upstream with the page model and only the Prompt API fields; replies come back under the page id', async () => {
  const { native, page, badge, settle } = setup();
  const p = page(ENABLED, 7);
  p.send({
    id: 'p1',
    request_type: 'Chat',
    messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hi' }],
    temperature: 0.5,
    top_k: 3,
    json_schema: { type: 'object' },
    model: 'other',
    session_id: 's',
    tools: [{ type: 'function', function: { name: 'x' } }],
    max_tokens: 100000,
  });
  await settle();
  const [sent] = native.port.sentOf('Chat');
  const { id, ...fields } = sent;
  assert.deepEqual(fields, {
    request_type: 'Chat',
    messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hi' }],
    stream: true,
    model: 'tiny',
    temperature: 0.5,
    top_k: 3,
    json_schema: { type: 'object' },
  });
  assert.deepEqual(badge, [[7, true]]);
  native.port.deliver({ id, response_type: 'ChatChunk', delta: 'he', done: false });
  native.port.deliver({ id, response_type: 'ChatComplete', text: 'hello', done: true });
  await settle();
  assert.deepEqual(p.got.map((m) => [m.id, m.response_type]), [['p1', 'ChatChunk'], ['p1', 'ChatComplete']]);
  assert.deepEqual(badge, [[7, true], [7, false]]);
});

test('chats are capped per origin; the cap frees when one ends', async () => {
  const { native, page, gate, settle } = setup({ maxConcurrent: 2 });
  const a = page(ENABLED, 1);
  const b = page(ENABLED, 2);
  const chat = (/** @type {any} */ p, /** @type {string} */ id) => p.send({ id, request_type: 'Chat', messages: [{ role: 'user', content: id }] });
  chat(a, 'a1');
  chat(b, 'b1');
  await settle();
  chat(a, 'a2');
  await settle();
  assert.equal(gate.running(ENABLED), 2);
  assert.equal(a.got.find((m) => m.id === 'a2')?.error?.type, 'busy');
  const first = native.port.sentOf('Chat')[0];
  native.port.deliver({ id: first.id, response_type: 'ChatComplete', text: '', done: true });
  await settle();
  assert.equal(gate.running(ENABLED), 1);
  chat(a, 'a3');
  await settle();
  assert.equal(native.port.sentOf('Chat').length, 3);
});

test('a page that hangs up stops its generation; a StopGeneration names the upstream id', async () => {
  const { native, page, gate, badge, settle } = setup();
  const p = page(ENABLED, 3);
  p.send({ id: 'c', request_type: 'Chat', messages: [{ role: 'user', content: 'long' }] });
  await settle();
  const upstreamId = native.port.sentOf('Chat')[0].id;
  p.send({ id: 's', request_type: 'StopGeneration', target_id: 'c' });
  await settle();
  assert.equal(native.port.sentOf('StopGeneration')[0].target_id, upstreamId);
  p.port.disconnect();
  await settle();
  assert.equal(gate.running(ENABLED), 0);
  assert.deepEqual(badge.at(-1), [3, false]);
});

test('Tokenize answers only a count; Availability, Params and Load are answered by the gate', async () => {
  const { native, page, settle } = setup();
  native.handlers.GetParams = (/** @type {any} */ m, /** @type {any} */ port) => port.deliver({ id: m.id, response_type: 'Params', temperature: 0.7, top_k: 20, max_tokens: 64, done: true });
  native.handlers.LoadModel = (/** @type {any} */ m, /** @type {any} */ port) => port.deliver({ id: m.id, response_type: 'ModelLoaded', model: m.model, context_size: 4096, path: '/secret', done: true });
  const p = page(ENABLED);
  p.send({ id: 1, request_type: 'Availability' });
  p.send({ id: 2, request_type: 'Params' });
  p.send({ id: 3, request_type: 'Load' });
  p.send({ id: 4, request_type: 'Tokenize', content: 'one two' });
  await settle();
  const tok = native.port.sentOf('Tokenize')[0];
  assert.deepEqual({ content: tok.content, model: tok.model }, { content: 'one two', model: 'tiny' });
  native.port.deliver({ id: tok.id, response_type: 'Tokens', tokens: [5, 6, 7], done: true });
  await settle();
  const by = (/** @type {number} */ id) => p.got.filter((m) => m.id === id);
  assert.equal(by(1)[0].availability, 'available');
  assert.deepEqual(by(2)[0], { id: 2, response_type: 'Params', defaultTopK: 20, maxTopK: 128, defaultTemperature: 0.7, maxTemperature: 2, done: true });
  assert.deepEqual(by(3).map((m) => m.response_type === 'LoadProgress' ? m.loaded : m.contextWindow), [0, 1, 4096]);
  assert.ok(!JSON.stringify(by(3)).includes('/secret'));
  assert.deepEqual(by(4), [{ id: 4, response_type: 'TokenCount', count: 3, done: true }]);
  assert.equal(native.port.sentOf('LoadModel')[0].model, 'tiny');
});

test('cleanChat refuses anything but text messages of the three roles', () => {
  assert.equal(cleanChat({ messages: [] }, ''), null);
  assert.equal(cleanChat({ messages: [{ role: 'tool', content: 'x' }] }, ''), null);
  assert.equal(cleanChat({ messages: [{ role: 'user', content: [{ type: 'image' }] }] }, ''), null);
  assert.deepEqual(cleanChat({ messages: [{ role: 'user', content: 'x', name: 'n' }], temperature: 9, top_k: 0.5 }, ''), { messages: [{ role: 'user', content: 'x' }], stream: true });
});
