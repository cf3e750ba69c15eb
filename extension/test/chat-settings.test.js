// A chat's own settings (read, sent with each turn, kept with the session),
// rewinding for regenerate and edit-and-resend, the context meter, and the
// history search's readers.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { TabAgentClient } from '../lib/client.js';
import { ChatController } from '../lib/chat.js';
import { DEFAULT_CHAT_SETTINGS, contextMeter, readChatSettings, settingsParams } from '../lib/chat-settings.js';
import { highlightParts, readHistorySearch } from '../lib/readers.js';
import { FakeTransport, flush } from './helpers/fakes.js';

/** @param {string} text */
const answer = (text) => (/** @type {any} */ msg, /** @type {import('./helpers/fakes.js').FakePort} */ port) =>
  port.deliver({ id: msg.id, response_type: 'ChatComplete', text, finish_reason: 'stop', usage: { prompt_tokens: 10, completion_tokens: 2 }, done: true });

/** @param {any} msg @param {import('./helpers/fakes.js').FakePort} port */
const ok = (msg, port) => port.deliver({ id: msg.id, response_type: 'Ok', done: true });

test('settings are read tolerantly and only those set are sent', () => {
  assert.deepEqual(readChatSettings(null), DEFAULT_CHAT_SETTINGS);
  const s = readChatSettings({ model: ' gemma ', temperature: '0.7', top_p: 0, max_tokens: '24.4', extra: 1 });
  assert.deepEqual(s, { model: 'gemma', temperature: 0.7, top_p: null, max_tokens: 24 });
  assert.deepEqual(settingsParams(s), { temperature: 0.7, max_tokens: 24 });
  assert.equal(readChatSettings({ temperature: 9 }).temperature, null, 'out of range');
  assert.equal(readChatSettings({ max_tokens: '' }).max_tokens, null, 'blank is the default');
});

test("a chat's settings go with each turn and are kept with its session once it exists", async () => {
  const native = new FakeTransport('native', { handlers: { Responses: answer('hi'), SetSessionSettings: ok } });
  const chat = new ChatController(new TabAgentClient({ transports: [native] }), { newId: () => 's1' });
  await chat.setSettings({ model: 'gemma', max_tokens: 24 });
  assert.equal(native.port?.sentOf('SetSessionSettings').length ?? 0, 0, 'no session yet');
  await chat.send({ input: 'hello' });
  const sent = native.port.sentOf('Responses')[0];
  assert.equal(sent.model, 'gemma');
  assert.equal(sent.max_tokens, 24);
  for (let i = 0; i < 5 && native.port.sentOf('SetSessionSettings').length === 0; i++) await flush();
  assert.deepEqual(native.port.sentOf('SetSessionSettings').map((m) => [m.session_id, m.settings.max_tokens]), [['s1', 24]]);
  // a turn's own fields win over the chat's
  await chat.send({ input: 'again', params: { max_tokens: 5 } });
  assert.equal(native.port.sentOf('Responses')[1].max_tokens, 5);
  await chat.setSettings({ temperature: 0.2 });
  assert.equal(native.port.sentOf('SetSessionSettings').at(-1).settings.temperature, 0.2, 'a change is kept at once');
  const count = native.port.sentOf('SetSessionSettings').length;
  await chat.send({ input: 'third' });
  await flush();
  assert.equal(native.port.sentOf('SetSessionSettings').length, count, 'unchanged settings are not sent again');

  chat.open('s2', [{ role: 'user', content: 'x' }], { model: 'other', top_p: 0.5 });
  assert.deepEqual(chat.settings, { model: 'other', temperature: null, top_p: 0.5, max_tokens: null });
});

test('rewinding deletes the chosen user turn and the later ones, on the server and here', async () => {
  const stored = [
    { id: 7, role: 'user', content: 'one' },
    { id: 8, role: 'assistant', content: 'a' },
    { id: 9, role: 'user', content: 'two' },
    { id: 10, role: 'assistant', content: 'b' },
  ];
  const native = new FakeTransport('native', {
    handlers: {
      Responses: answer('c'),
      ChatHistory: (msg, port) => port.deliver({ id: msg.id, response_type: 'History', session_id: msg.session_id, messages: stored, done: true }),
      TruncateSession: ok,
    },
  });
  const chat = new ChatController(new TabAgentClient({ transports: [native] }));
  chat.open('s', stored);
  await chat.rewind(1);
  assert.deepEqual(native.port.sentOf('ChatHistory')[0].order, 'oldest');
  assert.deepEqual(native.port.sentOf('TruncateSession').map((m) => [m.session_id, m.from_id]), [['s', 9]]);
  assert.deepEqual(chat.messages.map((m) => m.content), ['one', 'a']);
  await chat.rewind(0);
  assert.equal(native.port.sentOf('TruncateSession')[1].from_id, 7);
  assert.deepEqual(chat.messages, []);
  await assert.rejects(chat.rewind(3), /no such turn/);
  assert.equal(native.port.sentOf('TruncateSession').length, 2, 'nothing deleted');
});

test('the context meter is usage over the context size', () => {
  assert.deepEqual(contextMeter({ prompt_tokens: 100, completion_tokens: 28 }, 2048), {
    used: 128,
    size: 2048,
    fraction: 128 / 2048,
    text: 'context 128 / 2048 tokens (6%)',
  });
  assert.equal(contextMeter({ prompt_tokens: 3 }, 8192)?.text, 'context 3 / 8192 tokens (<1%)');
  assert.equal(contextMeter({ prompt_tokens: 9000, completion_tokens: 10 }, 8192)?.fraction, 1);
  assert.equal(contextMeter(null, 2048), null);
  assert.equal(contextMeter({ prompt_tokens: 5 }, null), null);
});

test('history search results and their highlighted snippets', () => {
  const hits = readHistorySearch({
    response_type: 'HistoryResults',
    sessions: [
      { session_id: 's', title: 'Trip', messages: 4, updated_at: 1_700_000_000_000, matches: [{ message_id: 3, role: 'assistant', snippet: '…visit Kyoto early' }, { role: 'user', snippet: '' }] },
      { title: 'no id' },
    ],
  });
  assert.deepEqual(hits, [{ id: 's', title: 'Trip', updatedAt: 1_700_000_000_000, count: 4, matches: [{ messageId: 3, role: 'assistant', snippet: '…visit Kyoto early' }] }]);
  assert.deepEqual(highlightParts('Baking bread, bake it (a.c)', 'BAK a.c'), [
    { text: 'Bak', match: true },
    { text: 'ing bread, ', match: false },
    { text: 'bak', match: true },
    { text: 'e it (', match: false },
    { text: 'a', match: true },
    { text: '.', match: false },
    { text: 'c', match: true },
    { text: ')', match: false },
  ]);
  assert.deepEqual(highlightParts('abc', '?!'), [{ text: 'abc', match: false }]);
  assert.deepEqual(highlightParts('rebake', 'bake'), [{ text: 'rebake', match: false }], 'only at the start of a word');
});
