// Unit tests of TabAgentClient over fake ports for both transports: id
// framing, streaming, cancel, timeouts, size limits, abort and close (the
// choice of transport, reconnects and subscriptions are in
// client-connection.test.js). Time is a FakeClock, so nothing sleeps.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { TabAgentError } from '../lib/client.js';
import { collecting, setup } from './helpers/client-setup.js';
import { FakeTransport, flush } from './helpers/fakes.js';

test('requests carry unique ids and replies are routed by id, even out of order', async () => {
  const native = new FakeTransport('native');
  const { client } = setup([native]);
  await client.connect();
  const port = native.port;
  const a = client.request('ListModels', {});
  const b = client.request('ModelInfo', { model: 'm', id: 'evil', request_type: 'Nope' });
  await flush();
  const [ma, mb] = [port.sentOf('ListModels')[0], port.sentOf('ModelInfo')[0]];
  assert.ok(ma && mb, 'both requests were sent');
  assert.notEqual(ma.id, mb.id);
  assert.equal(mb.model, 'm');
  assert.notEqual(mb.id, 'evil', 'fields cannot override the id');
  const ids = port.sent.map((m) => m.id);
  assert.equal(new Set(ids).size, ids.length, 'no id is reused (the Health probe included)');
  // answer b first; also echo a's id as a string (tolerated)
  port.deliver({ id: mb.id, response_type: 'ModelInfo', model: 'm', done: true });
  port.deliver({ id: String(ma.id), response_type: 'ModelList', models: [], done: true });
  assert.deepEqual((await b).response_type, 'ModelInfo');
  assert.deepEqual((await a).response_type, 'ModelList');
});

test('request resolves with the final reply and reports chunks through onChunk', async () => {
  const native = new FakeTransport('native', {
    handlers: {
      PullModel: (msg, port) => {
        port.deliver({ id: msg.id, response_type: 'PullProgress', downloaded_bytes: 1, total_bytes: 2, done: false });
        port.deliver({ id: msg.id, response_type: 'PullProgress', downloaded_bytes: 2, total_bytes: 2, done: false });
        port.deliver({ id: msg.id, response_type: 'ModelPulled', model: 'x', done: true });
      },
    },
  });
  const { client } = setup([native]);
  const chunks = /** @type {any[]} */ ([]);
  const final = await client.request('PullModel', { url: 'u' }, { onChunk: (m) => chunks.push(m.downloaded_bytes) });
  assert.equal(final.response_type, 'ModelPulled');
  assert.deepEqual(chunks, [1, 2]);
});

test('an Error reply rejects with the server problem details', async () => {
  const native = new FakeTransport('native', {
    handlers: {
      LoadModel: (msg, port) =>
        port.deliver({
          id: msg.id,
          response_type: 'Error',
          error: { type: 'model_not_found', title: 'model not found', status: 404, detail: 'no such model: q' },
          done: true,
        }),
    },
  });
  const { client } = setup([native]);
  await assert.rejects(client.request('LoadModel', { model: 'q' }), (e) => {
    assert.ok(e instanceof TabAgentError);
    assert.equal(e.type, 'model_not_found');
    assert.equal(e.status, 404);
    assert.match(e.message, /no such model: q/);
    return true;
  });
});

test('stream yields every chunk then the final message, and exposes its id', async () => {
  const native = new FakeTransport('native');
  const { client } = setup([native]);
  await client.connect();
  const s = client.stream('Chat', { messages: [{ role: 'user', content: 'hi' }] });
  const c = collecting(s);
  await flush();
  const sent = native.port.sentOf('Chat')[0];
  assert.equal(sent.id, s.id);
  assert.equal(sent.stream, true, 'Chat streams unless told otherwise');
  for (const d of ['Hel', 'lo']) native.port.deliver({ id: s.id, response_type: 'ChatChunk', delta: d, done: false });
  native.port.deliver({ id: 'other', response_type: 'ChatChunk', delta: 'NOT MINE', done: false });
  native.port.deliver({
    id: s.id,
    response_type: 'ChatComplete',
    text: 'Hello',
    finish_reason: 'stop',
    usage: { prompt_tokens: 1, completion_tokens: 2 },
    done: true,
  });
  native.port.deliver({ id: s.id, response_type: 'ChatChunk', delta: 'late', done: false });
  const out = await c.done;
  assert.deepEqual(
    out.map((m) => m.delta ?? m.text),
    ['Hel', 'lo', 'Hello'],
  );
  assert.equal(out.at(-1).done, true);
});

test('an Error in the middle of a stream throws from the iterator', async () => {
  const native = new FakeTransport('native');
  const { client } = setup([native]);
  await client.connect();
  const s = client.stream('Generate', { prompt: 'x' });
  const seen = /** @type {string[]} */ ([]);
  const run = (async () => {
    for await (const m of s) seen.push(m.delta);
  })();
  await flush();
  native.port.deliver({ id: s.id, response_type: 'ChatChunk', delta: 'a', done: false });
  native.port.deliver({ id: s.id, response_type: 'Error', error: { type: 'engine', title: 'engine failed' }, done: true });
  await assert.rejects(run, /engine failed/);
  assert.deepEqual(seen, ['a']);
});

test('cancel sends StopGeneration naming the target; the stream ends with cancelled', async () => {
  const native = new FakeTransport('native', {
    handlers: {
      StopGeneration: (msg, port) => {
        port.deliver({ id: msg.id, response_type: 'StopGeneration', stopped: true, done: true });
        port.deliver({ id: msg.target_id, response_type: 'ChatComplete', text: 'par', finish_reason: 'cancelled', done: true });
      },
    },
  });
  const { client } = setup([native]);
  await client.connect();
  const s = client.stream('Chat', { messages: [] });
  const c = collecting(s);
  await flush();
  native.port.deliver({ id: s.id, response_type: 'ChatChunk', delta: 'par', done: false });
  const ack = await client.cancel(s.id);
  assert.equal(ack.stopped, true);
  const stop = native.port.sentOf('StopGeneration');
  assert.equal(stop.length, 1);
  assert.equal(stop[0].target_id, s.id);
  assert.notEqual(stop[0].id, s.id, 'the cancel is a request of its own');
  const out = await c.done;
  assert.equal(out.at(-1).finish_reason, 'cancelled');
});

test('leaving a stream early stops the generation and ignores later chunks', async () => {
  const native = new FakeTransport('native');
  const { client } = setup([native]);
  await client.connect();
  const s = client.stream('Chat', { messages: [] });
  await flush();
  native.port.deliver({ id: s.id, response_type: 'ChatChunk', delta: 'one', done: false });
  native.port.deliver({ id: s.id, response_type: 'ChatChunk', delta: 'two', done: false });
  const seen = [];
  for await (const m of s) {
    seen.push(m.delta);
    break;
  }
  await flush();
  assert.deepEqual(seen, ['one']);
  const stop = native.port.sentOf('StopGeneration');
  assert.equal(stop.length, 1);
  assert.equal(stop[0].target_id, s.id);
  assert.deepEqual(await s.next(), { value: undefined, done: true });
});

test('a request times out, rejects with type timeout, and a late reply is ignored', async () => {
  const native = new FakeTransport('native');
  const { client, clock } = setup([native], { requestTimeoutMs: 1000 });
  await client.connect();
  /** @type {{settled: any}} */
  const box = { settled: null };
  client.request('SystemInfo').then(
    (v) => (box.settled = { v }),
    (e) => (box.settled = { e }),
  );
  await clock.advance(999);
  assert.ok(box.settled === null, 'not before the deadline');
  await clock.advance(1);
  assert.ok(box.settled?.e instanceof TabAgentError);
  assert.equal(box.settled.e.type, 'timeout');
  const id = native.port.sentOf('SystemInfo')[0].id;
  native.port.deliver({ id, response_type: 'SystemInfo', done: true }); // must not throw or resurrect
  assert.equal(native.port.sentOf('StopGeneration').length, 0, 'only generations are stopped on timeout');
  assert.equal(client.status().state, 'connected', 'a timeout does not drop the connection');
});

test('a timed-out Chat request also stops its generation', async () => {
  const native = new FakeTransport('native');
  const { client, clock } = setup([native]);
  await client.connect();
  const r = client.request('Chat', { messages: [] }, { timeoutMs: 50 });
  const check = assert.rejects(r, { type: 'timeout' });
  await clock.advance(50);
  await check;
  const id = native.port.sentOf('Chat')[0].id;
  assert.deepEqual(
    native.port.sentOf('StopGeneration').map((m) => m.target_id),
    [id],
  );
});

test('a stream timeout is an idle timeout: each chunk restarts it', async () => {
  const native = new FakeTransport('native');
  const { client, clock } = setup([native]);
  await client.connect();
  const s = client.stream('Chat', { messages: [] }, { timeoutMs: 100 });
  const seen = /** @type {string[]} */ ([]);
  /** @type {{error: any}} */
  const box = { error: null };
  const run = (async () => {
    try {
      for await (const m of s) seen.push(m.delta);
    } catch (e) {
      box.error = e;
    }
  })();
  for (let i = 0; i < 5; i++) {
    await clock.advance(90);
    native.port.deliver({ id: s.id, response_type: 'ChatChunk', delta: String(i), done: false });
  }
  await flush();
  assert.ok(box.error === null, '450 ms in total, but never 100 ms of silence');
  await clock.advance(100);
  await run;
  assert.equal(box.error?.type, 'timeout');
  assert.deepEqual(seen, ['0', '1', '2', '3', '4']);
});

test('a request larger than the transport allows is refused locally', async () => {
  const webrtc = new FakeTransport('webrtc', { maxMessageBytes: 1000 });
  const { client } = setup([webrtc]);
  await client.connect();
  await assert.rejects(client.request('AddDocument', { collection: 'c', text: 'x'.repeat(2000) }), { type: 'too_large' });
  assert.equal(webrtc.port.sentOf('AddDocument').length, 0);
  client.request('AddDocument', { collection: 'c', text: 'small' }).catch(() => {});
  await flush();
  assert.equal(webrtc.port.sentOf('AddDocument').length, 1);
});

test('an AbortSignal rejects at once and stops the generation', async () => {
  const native = new FakeTransport('native');
  const { client } = setup([native]);
  await client.connect();
  const ac = new AbortController();
  const r = client.request('Chat', { messages: [] }, { signal: ac.signal });
  await flush();
  ac.abort();
  await assert.rejects(r, { type: 'aborted' });
  assert.equal(native.port.sentOf('StopGeneration')[0]?.target_id, native.port.sentOf('Chat')[0].id);
});

test('close fails pending requests and refuses new ones', async () => {
  const native = new FakeTransport('native');
  const { client } = setup([native]);
  await client.connect();
  const r = client.request('SystemInfo');
  await flush();
  client.close();
  await assert.rejects(r, { type: 'disconnected' });
  await assert.rejects(client.request('Health'), { type: 'closed' });
  assert.ok(native.port.disconnectedByClient);
  assert.equal(client.status().state, 'closed');
});

test('status listeners see connecting, then connected with the transport', async () => {
  const native = new FakeTransport('native', { mode: 'missing' });
  const webrtc = new FakeTransport('webrtc');
  const { client } = setup([native, webrtc]);
  const seen = /** @type {string[]} */ ([]);
  client.onStatus((s) => seen.push(`${s.state}:${s.transport}`));
  await client.connect();
  assert.deepEqual(seen, ['connecting:null', 'connected:webrtc']);
});
