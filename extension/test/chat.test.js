// ChatController over a fake server: a turn as a streamed Responses request,
// the fallback to Chat + SaveMessage, and stop.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { TabAgentClient } from '../lib/client.js';
import { ChatController, isUnsupported } from '../lib/chat.js';
import { FakeTransport, flush } from './helpers/fakes.js';

/**
 * Answers generations by streaming `words`, then a final message.
 * @param {string[]} words
 */
function streamer(words) {
  return (/** @type {any} */ msg, /** @type {import('./helpers/fakes.js').FakePort} */ port) => {
    for (const w of words) port.deliver({ id: msg.id, response_type: 'ChatChunk', delta: w, done: false });
    port.deliver({
      id: msg.id,
      response_type: 'ChatComplete',
      text: words.join(''),
      finish_reason: 'stop',
      usage: { prompt_tokens: 3, completion_tokens: words.length },
      done: true,
    });
  };
}

test('a turn is a streamed Responses request in a server-side session', async () => {
  const native = new FakeTransport('native', { handlers: { Responses: streamer(['Hi', ' there']) } });
  const client = new TabAgentClient({ transports: [native] });
  const chat = new ChatController(client, { newId: () => 'sess-1' });
  const deltas = /** @type {string[]} */ ([]);
  const r = await chat.send({ input: 'hello', system: 'be brief', model: 'gemma', onDelta: (d) => deltas.push(d) });
  assert.equal(r.text, 'Hi there');
  assert.equal(r.finishReason, 'stop');
  assert.deepEqual(r.usage, { prompt_tokens: 3, completion_tokens: 2 });
  assert.deepEqual(deltas, ['Hi', ' there']);
  const sent = native.port.sentOf('Responses')[0];
  assert.equal(sent.session_id, 'sess-1');
  assert.equal(sent.input, 'hello');
  assert.equal(sent.system, 'be brief');
  assert.equal(sent.model, 'gemma');
  assert.equal(sent.stream, true);
  assert.equal(native.port.sentOf('Chat').length, 0);
  assert.equal(chat.busy, false);

  await chat.send({ input: 'again' });
  assert.equal(native.port.sentOf('Responses')[1].session_id, 'sess-1', 'the session carries on');
  assert.equal(chat.messages.length, 4);
});

test('without Responses on the server it falls back to Chat and saves both messages', async () => {
  const native = new FakeTransport('native', {
    handlers: {
      Responses: (msg, port) =>
        port.deliver({
          id: msg.id,
          response_type: 'Error',
          error: { type: 'bad_request', title: 'invalid request', status: 400, detail: 'unknown variant `Responses`' },
          done: true,
        }),
      Chat: streamer(['ok']),
      SaveMessage: (msg, port) => port.deliver({ id: msg.id, response_type: 'Saved', done: true }),
    },
  });
  const client = new TabAgentClient({ transports: [native] });
  const chat = new ChatController(client, { newId: () => 's' });
  chat.open('s', [
    { role: 'user', content: 'earlier' },
    { role: 'assistant', content: 'reply' },
  ]);
  const r = await chat.send({ input: 'now', system: 'sys' });
  assert.equal(r.text, 'ok');
  assert.equal(chat.useChat, true);
  const sent = native.port.sentOf('Chat')[0];
  assert.deepEqual(
    sent.messages.map((/** @type {any} */ m) => `${m.role}:${m.content}`),
    ['system:sys', 'user:earlier', 'assistant:reply', 'user:now'],
  );
  assert.deepEqual(
    native.port.sentOf('SaveMessage').map((m) => [m.session_id, m.role, m.content]),
    [
      ['s', 'user', 'now'],
      ['s', 'assistant', 'ok'],
    ],
  );
  await chat.send({ input: 'next' });
  assert.equal(native.port.sentOf('Responses').length, 1, 'Responses is not tried again');
});

test('other errors are not mistaken for a missing Responses', async () => {
  const native = new FakeTransport('native', {
    handlers: {
      Responses: (msg, port) =>
        port.deliver({
          id: msg.id,
          response_type: 'Error',
          error: { type: 'no_model_loaded', title: 'no model loaded', status: 409 },
          done: true,
        }),
    },
  });
  const chat = new ChatController(new TabAgentClient({ transports: [native] }));
  await assert.rejects(chat.send({ input: 'x' }), /no model loaded/);
  assert.equal(native.port.sentOf('Chat').length, 0);
  assert.equal(chat.useChat, false);
  assert.equal(isUnsupported(new Error('plain')), false);
});

test('stop cancels the reply in flight by its request id', async () => {
  const native = new FakeTransport('native', {
    handlers: {
      StopGeneration: (msg, port) => {
        port.deliver({ id: msg.id, response_type: 'StopGeneration', done: true });
        port.deliver({ id: msg.target_id, response_type: 'ChatComplete', text: 'par', finish_reason: 'cancelled', done: true });
      },
    },
  });
  const chat = new ChatController(new TabAgentClient({ transports: [native] }));
  const turn = chat.send({ input: 'long story' });
  for (let i = 0; i < 5 && !native.port?.sentOf('Responses').length; i++) await flush();
  const id = native.port.sentOf('Responses')[0].id;
  native.port.deliver({ id, response_type: 'ChatChunk', delta: 'par', done: false });
  assert.equal(chat.current, id);
  await chat.stop();
  const r = await turn;
  assert.equal(r.finishReason, 'cancelled');
  assert.equal(r.text, 'par');
  assert.equal(native.port.sentOf('StopGeneration')[0].target_id, id);
});
