// Unit tests of TabAgentClient over fake ports for both transports: id
// framing, streaming, cancel, timeouts, fallback order, reconnect with
// backoff and subscriptions. Time is a FakeClock, so nothing sleeps.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { TabAgentClient, TabAgentError } from '../lib/client.js';
import { FakeClock, FakeTransport, flush } from './helpers/fakes.js';

/**
 * @param {FakeTransport[]} transports
 * @param {Partial<import('../lib/client.js').ClientOptions>} [opts]
 */
function setup(transports, opts = {}) {
  const clock = new FakeClock();
  const client = new TabAgentClient({
    transports,
    timers: clock,
    random: () => 0,
    backoff: { initialMs: 500, maxMs: 4000, factor: 2, jitter: 0.5 },
    ...opts,
  });
  return { client, clock };
}

/**
 * Start collecting a stream now, so chunks delivered later are consumed.
 * @param {AsyncIterable<any>} s
 */
function collecting(s) {
  const out = /** @type {any[]} */ ([]);
  const done = (async () => {
    for await (const m of s) out.push(m);
    return out;
  })();
  return { out, done };
}

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

test('auto: a missing native host falls back to WebRTC', async () => {
  const native = new FakeTransport('native', { mode: 'missing' });
  const webrtc = new FakeTransport('webrtc');
  const { client } = setup([native, webrtc]);
  const health = await client.request('Health');
  assert.equal(health.status, 'ok');
  assert.equal(native.connects, 1);
  assert.equal(webrtc.connects, 1);
  assert.equal(client.status().transport, 'webrtc');
  assert.equal(webrtc.port.sentOf('Health').length, 2, 'probe, then the request itself');
});

test('auto: native is tried first and used when its host answers', async () => {
  const native = new FakeTransport('native');
  const webrtc = new FakeTransport('webrtc');
  const { client } = setup([native, webrtc]);
  assert.equal(await client.connect(), 'native');
  assert.equal(webrtc.connects, 0);
  assert.equal(client.status().health?.status, 'ok');
});

test('auto: a native host that never answers is given up after the probe timeout', async () => {
  const native = new FakeTransport('native', { mode: 'silent' });
  const webrtc = new FakeTransport('webrtc');
  const { client, clock } = setup([native, webrtc], { probeTimeoutMs: 2000 });
  const connected = client.connect();
  await clock.advance(1999);
  assert.equal(webrtc.connects, 0);
  await clock.advance(1);
  assert.equal(await connected, 'webrtc');
  assert.ok(native.port.disconnectedByClient, 'the silent port is closed');
});

test('a forced transport is the only one tried, and failure lists why', async () => {
  const native = new FakeTransport('native', { mode: 'missing' });
  const webrtc = new FakeTransport('webrtc');
  const { client } = setup([native, webrtc], { preference: 'native' });
  await assert.rejects(client.request('Health'), (e) => {
    assert.equal(/** @type {any} */ (e).type, 'unavailable');
    assert.match(/** @type {any} */ (e).detail, /native: Specified native messaging host not found/);
    return true;
  });
  assert.equal(webrtc.connects, 0);

  const native2 = new FakeTransport('native');
  const webrtc2 = new FakeTransport('webrtc');
  const forced = setup([native2, webrtc2], { preference: 'webrtc' }).client;
  assert.equal(await forced.connect(), 'webrtc');
  assert.equal(native2.connects, 0);
});

test('changing the preference drops a connection that is no longer allowed', async () => {
  const native = new FakeTransport('native');
  const webrtc = new FakeTransport('webrtc');
  const { client } = setup([native, webrtc]);
  await client.connect();
  assert.equal(client.status().transport, 'native');
  client.setPreference('webrtc');
  assert.ok(native.port.disconnectedByClient);
  await client.request('Health');
  assert.equal(client.status().transport, 'webrtc');
});

test('a dropped connection fails pending requests; the next request reconnects at once', async () => {
  const native = new FakeTransport('native');
  const { client } = setup([native]);
  await client.connect();
  const r = client.request('SystemInfo');
  await flush();
  native.port.peerDisconnect(new Error('host exited'));
  await assert.rejects(r, (e) => {
    assert.equal(/** @type {any} */ (e).type, 'disconnected');
    assert.match(/** @type {any} */ (e).detail, /host exited/);
    return true;
  });
  assert.equal(client.status().state, 'idle', 'no subscriptions: no background reconnect');
  assert.equal(client.status().lastError, 'host exited');
  const h = await client.request('Health');
  assert.equal(h.status, 'ok');
  assert.equal(native.connects, 2);
});

test('with subscriptions, a lost connection reconnects with exponential backoff and resubscribes', async () => {
  const native = new FakeTransport('native');
  const { client, clock } = setup([native]);
  const events = /** @type {any[]} */ ([]);
  await client.subscribe(['model.loaded'], (e) => events.push(e));
  assert.deepEqual(native.port.sentOf('Subscribe')[0].events, ['model.loaded']);

  native.script = ['missing', 'throw', 'missing', 'ok', 'ok'];
  native.port.peerDisconnect();
  assert.equal(client.status().state, 'backoff');
  assert.equal(client.status().retryInMs, 500);

  // attempt 1 at +500 ms (fails), attempt 2 at +1000 more, attempt 3 at +2000 more, attempt 4 at +4000 (cap)
  await clock.advance(499);
  assert.equal(native.connects, 1);
  await clock.advance(1);
  assert.equal(native.connects, 2);
  assert.equal(client.status().retryInMs, 1000);
  await clock.advance(999);
  assert.equal(native.connects, 2);
  await clock.advance(1);
  assert.equal(native.connects, 3);
  assert.equal(client.status().retryInMs, 2000);
  await clock.advance(2000);
  assert.equal(native.connects, 4);
  assert.equal(client.status().retryInMs, 4000);
  await clock.advance(4000);
  assert.equal(native.connects, 5);
  assert.equal(client.status().state, 'connected');
  assert.deepEqual(native.port.sentOf('Subscribe')[0]?.events, ['model.loaded'], 'subscription sent again');

  native.port.deliver({ response_type: 'Event', event: 'model.loaded', model: 'g' });
  assert.equal(events.length, 1);

  // success resets the backoff: the next loss waits 500 ms again
  native.port.peerDisconnect();
  assert.equal(client.status().retryInMs, 500);
  client.close();
  assert.deepEqual(clock.pendingDelays(), [], 'close cancels the retry');
});

test('backoff jitter takes up to its fraction off the delay', async () => {
  const native = new FakeTransport('native');
  const { client } = setup([native], { random: () => 1 });
  await client.subscribe(['x'], () => {});
  native.script = ['missing'];
  native.port.peerDisconnect();
  assert.equal(client.status().retryInMs, 250, 'jitter 0.5 with random()=1 halves 500');
  client.close();
});

test('an explicit connect during backoff tries at once', async () => {
  const native = new FakeTransport('native');
  const { client, clock } = setup([native]);
  await client.subscribe(['x'], () => {});
  native.port.peerDisconnect();
  assert.equal(client.status().state, 'backoff');
  await client.connect();
  assert.equal(native.connects, 2);
  assert.equal(client.status().state, 'connected');
  assert.deepEqual(clock.pendingDelays(), [], 'the backoff timer is gone');
});

test('subscribe asks for the union of events, dispatches by name, and unsubscribe narrows it locally', async () => {
  const native = new FakeTransport('native');
  const { client } = setup([native]);
  const a = /** @type {string[]} */ ([]);
  const b = /** @type {string[]} */ ([]);
  const unA = await client.subscribe(['model.loaded', 'model.unloaded'], (e) => a.push(e.event));
  const unB = await client.subscribe(['download.progress'], (e) => b.push(e.event));
  const port = native.port;
  const subs = port.sentOf('Subscribe');
  assert.deepEqual(subs.at(-1).events, ['download.progress', 'model.loaded', 'model.unloaded']);
  const id = subs.at(-1).id;

  port.deliver({ id, response_type: 'Event', event: 'model.loaded', done: false });
  port.deliver({ id, response_type: 'Event', event: 'download.progress', done: false });
  port.deliver({ id, response_type: 'Event', event: 'other', done: false });
  assert.deepEqual(a, ['model.loaded']);
  assert.deepEqual(b, ['download.progress']);

  // the server cannot narrow a subscription: nothing is sent, the client drops what nobody wants
  const before = port.sentOf('Subscribe').length;
  unA();
  await flush();
  assert.equal(port.sentOf('Subscribe').length, before);
  port.deliver({ id, response_type: 'Event', event: 'model.loaded', done: false });
  assert.deepEqual(a, ['model.loaded'], 'no more events after unsubscribe');

  // asking again for what the server already tells sends nothing either
  await client.subscribe(['model.loaded'], () => {});
  assert.equal(port.sentOf('Subscribe').length, before);

  // '*' is every event: an empty list for the server
  const all = /** @type {string[]} */ ([]);
  await client.subscribe(['*'], (e) => all.push(e.event));
  assert.deepEqual(port.sentOf('Subscribe').at(-1).events, []);
  const allId = port.sentOf('Subscribe').at(-1).id;
  port.deliver({ id: allId, response_type: 'Event', event: 'other', done: false });
  assert.deepEqual(all, ['other']);
  unB();
  await client.subscribe(['x'], () => {});
  assert.equal(port.sentOf('Subscribe').length, before + 1, 'everything is told already');
});

test('the real server shape: Subscribed (done false) settles subscribe; events come under its id, stale ones are ignored', async () => {
  const native = new FakeTransport('native', {
    handlers: {
      // like tabagent: the subscription stays open, and LowMemory follows at once when memory is low
      Subscribe: (msg, port) => {
        port.deliver({ id: msg.id, response_type: 'Subscribed', events: msg.events, done: false });
        port.deliver({ id: msg.id, response_type: 'Event', event: 'LowMemory', available_bytes: 1, total_bytes: 8, done: false });
      },
    },
  });
  const { client, clock } = setup([native]);
  const got = /** @type {string[]} */ ([]);
  await client.subscribe(['LowMemory', 'ModelLoaded'], (e) => got.push(`${e.event}:${e.id}`));
  const first = native.port.sentOf('Subscribe')[0].id;
  await flush();
  assert.deepEqual(got, [`LowMemory:${first}`]);

  // a wider subscription replaces the first; the server still pushes under the old id too
  await client.subscribe(['ModelUnloaded'], (e) => got.push(`${e.event}:${e.id}`));
  const second = native.port.sentOf('Subscribe')[1].id;
  assert.deepEqual(native.port.sentOf('Subscribe')[1].events, ['LowMemory', 'ModelLoaded', 'ModelUnloaded']);
  native.port.deliver({ id: first, response_type: 'Event', event: 'ModelLoaded', model: 'g', done: false });
  native.port.deliver({ id: second, response_type: 'Event', event: 'ModelLoaded', model: 'g', done: false });
  native.port.deliver({ id: 999, response_type: 'Event', event: 'ModelLoaded', model: 'g', done: false });
  assert.deepEqual(got.slice(2), [`ModelLoaded:${second}`], 'each event once, from the current subscription');

  // nothing stays pending: no timeout fires later
  await clock.advance(120_000);
  assert.equal(client.status().state, 'connected');
  native.port.deliver({ id: second, response_type: 'Event', event: 'ModelUnloaded', model: 'g', reason: 'idle', done: false });
  assert.equal(got.at(-1), `ModelUnloaded:${second}`);
});

test('a refused Subscribe rejects and leaves no subscription behind', async () => {
  const native = new FakeTransport('native', {
    handlers: {
      Subscribe: (msg, port) =>
        port.deliver({ id: msg.id, response_type: 'Error', error: { type: 'bad_request', title: 'unknown event' }, done: true }),
    },
  });
  const { client } = setup([native]);
  const got = /** @type {any[]} */ ([]);
  await assert.rejects(client.subscribe(['nope'], (e) => got.push(e)), /unknown event/);
  native.port.deliver({ response_type: 'Event', event: 'nope' });
  assert.deepEqual(got, []);
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
