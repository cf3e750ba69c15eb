// The service worker's relay between page clients and the one upstream
// client: id mapping, streaming, cancel translation, hang-up, local requests
// and events, and errors when tabagent is unreachable.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { TabAgentClient } from '../lib/client.js';
import { Relay } from '../lib/relay.js';
import { FakeClock, FakeTransport, flush, portPair } from './helpers/fakes.js';

/** @param {FakeTransport[]} upstreamTransports */
function setup(upstreamTransports = [new FakeTransport('native')]) {
  const clock = new FakeClock();
  const upstream = new TabAgentClient({ transports: upstreamTransports, timers: clock, random: () => 0 });
  const relay = new Relay(upstream);
  /** A page: its own client whose transport is a port into the relay. */
  const page = () => {
    /** @type {import('./helpers/fakes.js').FakePort[]} */
    const ends = [];
    const client = new TabAgentClient({
      transports: [
        {
          name: 'relay',
          probe: { type: 'ClientStatus' },
          connect() {
            const [pageEnd, workerEnd] = portPair();
            relay.attach(workerEnd);
            ends.push(pageEnd);
            return pageEnd;
          },
        },
      ],
      timers: clock,
      random: () => 0,
    });
    return { client, ends };
  };
  return { upstream, relay, page, clock, native: upstreamTransports[0] };
}

test('page ids are mapped to fresh upstream ids and back; two pages do not collide', async () => {
  const { page, native } = setup();
  const p1 = page();
  const p2 = page();
  const r1 = p1.client.request('ModelInfo', { model: 'a' }, { id: 7 });
  const r2 = p2.client.request('ModelInfo', { model: 'b' }, { id: 7 });
  await flush();
  await flush();
  const sent = native.port.sentOf('ModelInfo');
  assert.equal(sent.length, 2);
  assert.notEqual(sent[0].id, sent[1].id, 'same page id, different upstream ids');
  for (const m of sent) native.port.deliver({ id: m.id, response_type: 'ModelInfo', model: m.model, done: true });
  assert.equal((await r1).model, 'a');
  assert.equal((await r2).model, 'b');
  assert.equal((await r1).id, 7, 'the page sees its own id');
});

test('a page stream gets every chunk; cancel is translated to the upstream id', async () => {
  const { page, native } = setup();
  const { client } = page();
  await client.connect();
  const s = client.stream('Chat', { messages: [{ role: 'user', content: 'hi' }] });
  const out = /** @type {any[]} */ ([]);
  const run = (async () => {
    for await (const m of s) out.push(m);
  })();
  await flush();
  await flush();
  const up = native.port.sentOf('Chat')[0];
  assert.ok(up, 'the chat reached the server');
  assert.equal(up.stream, true);
  native.port.deliver({ id: up.id, response_type: 'ChatChunk', delta: 'x', done: false });
  await flush();
  const cancelled = client.cancel(s.id);
  await flush();
  await flush();
  const stop = native.port.sentOf('StopGeneration')[0];
  assert.equal(stop.target_id, up.id, 'target_id names the upstream request');
  native.port.deliver({ id: stop.id, response_type: 'StopGeneration', done: true });
  native.port.deliver({ id: up.id, response_type: 'ChatComplete', text: 'x', finish_reason: 'cancelled', done: true });
  await cancelled;
  await run;
  assert.deepEqual(
    out.map((m) => [m.id, m.response_type]),
    [
      [s.id, 'ChatChunk'],
      [s.id, 'ChatComplete'],
    ],
  );
});

test('a page that hangs up stops its generations upstream', async () => {
  const { page, native, relay } = setup();
  const { client, ends } = page();
  await client.connect();
  client.request('Generate', { prompt: 'p' }).catch(() => {});
  await flush();
  await flush();
  const up = native.port.sentOf('Generate')[0];
  assert.equal(relay.size, 1);
  ends[0].disconnect();
  await flush();
  assert.equal(relay.size, 0);
  assert.deepEqual(
    native.port.sentOf('StopGeneration').map((m) => m.target_id),
    [up.id],
  );
});

test('ClientStatus is answered by the worker, naming the upstream transport', async () => {
  const { page, native, upstream } = setup([new FakeTransport('native', { mode: 'missing' }), new FakeTransport('webrtc')]);
  const { client } = page();
  await upstream.connect();
  const reply = await client.request('ClientStatus');
  assert.equal(reply.status.transport, 'webrtc');
  assert.equal(reply.status.state, 'connected');
  assert.equal(native.ports[0].sentOf('ClientStatus').length, 0, 'never sent to the server');
});

test('client.status events reach subscribed pages; server events are relayed', async () => {
  const { page, native, upstream } = setup();
  const { client } = page();
  const seen = /** @type {any[]} */ ([]);
  await client.subscribe(['client.status', 'model.loaded'], (e) => seen.push(e));
  await flush();
  const sub = native.port.sentOf('Subscribe');
  assert.deepEqual(sub.at(-1).events, ['model.loaded'], 'only server events go upstream');
  native.port.deliver({ response_type: 'Event', event: 'model.loaded', model: 'g' });
  await upstream.reconnect();
  await flush();
  const names = seen.map((e) => `${e.event}${e.status ? ':' + e.status.state : ''}`);
  assert.ok(names.includes('model.loaded'));
  assert.ok(names.includes('client.status:connected'), names.join(','));
});

test('server events reach each subscribed page once, under that page\'s Subscribe id', async () => {
  const { page, native } = setup();
  const one = page();
  const two = page();
  const seen = /** @type {Record<string, any[]>} */ ({ one: [], two: [] });
  await one.client.subscribe(['ModelLoadProgress'], (e) => seen.one.push(e));
  await two.client.subscribe(['ModelLoadProgress'], (e) => seen.two.push(e));
  await flush();
  const upstreamSubs = native.port.sentOf('Subscribe');
  assert.equal(upstreamSubs.length, 1, 'the same events are asked for once');
  native.port.deliver({ id: upstreamSubs[0].id, response_type: 'Event', event: 'ModelLoadProgress', model: 'g', progress: 0.5, done: false });
  await flush();
  assert.equal(seen.one.length, 1);
  assert.equal(seen.two.length, 1);
  assert.equal(seen.one[0].id, one.ends[0].sentOf('Subscribe')[0].id);
  assert.equal(seen.one[0].progress, 0.5);
});

test('when tabagent is unreachable a page request fails with unavailable, but the page stays connected', async () => {
  const { page } = setup([new FakeTransport('native', { mode: 'missing' }), new FakeTransport('webrtc', { mode: 'throw' })]);
  const { client } = page();
  assert.equal(await client.connect(), 'relay');
  await assert.rejects(client.request('Health'), (e) => {
    assert.equal(/** @type {any} */ (e).type, 'unavailable');
    assert.match(/** @type {any} */ (e).detail, /native: .*; webrtc: webrtc cannot connect/);
    return true;
  });
  assert.equal(client.status().state, 'connected');
});
