// Unit tests of TabAgentClient's connection over fake ports: which transport
// it picks (native first, WebRTC as the fallback, a forced one), reconnects
// with backoff and jitter, and subscriptions that survive a reconnect. Time
// is a FakeClock, so nothing sleeps.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { setup } from './helpers/client-setup.js';
import { FakeTransport, flush } from './helpers/fakes.js';

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
