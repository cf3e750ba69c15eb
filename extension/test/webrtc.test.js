// The offscreen side of WebRTC against a fake RTCPeerConnection and fetch:
// signaling requests, waiting for ICE gathering, the data channel's shape,
// failures, and the bridge between the channel and a runtime port.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { bridge, decodeMessage, dial } from '../lib/webrtc.js';
import { keyFromHost, wrapRtcPort } from '../lib/transports.js';
import { FakePort, flush } from './helpers/fakes.js';

class FakeChannel extends EventTarget {
  /** @type {string[]} */ sent = [];
  readyState = 'connecting';
  /** @param {string} label @param {any} opts */
  constructor(label, opts) {
    super();
    this.label = label;
    this.opts = opts;
  }
  /** @param {string} data */
  send(data) {
    if (this.readyState !== 'open') throw new Error('InvalidStateError');
    this.sent.push(data);
  }
  open() {
    this.readyState = 'open';
    this.dispatchEvent(new Event('open'));
  }
  close() {
    if (this.readyState === 'closed') return;
    this.readyState = 'closed';
    this.dispatchEvent(new Event('close'));
  }
  /** @param {any} data */
  receive(data) {
    const ev = new Event('message');
    Object.defineProperty(ev, 'data', { value: data });
    this.dispatchEvent(ev);
  }
}

/** @type {FakePeer[]} */
let peers = [];
class FakePeer extends EventTarget {
  iceGatheringState = 'new';
  connectionState = 'new';
  /** @type {any} */ localDescription = null;
  /** @type {any} */ remoteDescription = null;
  /** @type {FakeChannel | null} */ channel = null;
  closed = false;
  /** when true, gathering never completes (tests the gather timeout) */
  static stuckGathering = false;
  /** @param {any} config */
  constructor(config) {
    super();
    this.config = config;
    peers.push(this);
  }
  /** @param {string} label @param {any} opts */
  createDataChannel(label, opts) {
    this.channel = new FakeChannel(label, opts);
    return this.channel;
  }
  async createOffer() {
    return { type: 'offer', sdp: 'v=0 offer' };
  }
  /** @param {any} d */
  async setLocalDescription(d) {
    this.localDescription = { ...d, sdp: d.sdp + ' (no candidates yet)' };
    this.iceGatheringState = 'gathering';
    if (FakePeer.stuckGathering) return;
    setImmediate(() => {
      this.localDescription = { ...d, sdp: d.sdp + ' a=candidate:1 1 udp 1 127.0.0.1 5000 typ host' };
      this.iceGatheringState = 'complete';
      this.dispatchEvent(new Event('icegatheringstatechange'));
    });
  }
  /** @param {any} d */
  async setRemoteDescription(d) {
    this.remoteDescription = d;
  }
  close() {
    this.closed = true;
    this.connectionState = 'closed';
  }
}

/**
 * @param {(url: string, init: any) => {status?: number, body: any}} handler
 */
function fakeFetch(handler) {
  /** @type {{url: string, init: any, body: any}[]} */
  const calls = [];
  /** @type {any} */
  const fn = async (/** @type {string} */ url, /** @type {any} */ init) => {
    calls.push({ url, init, body: JSON.parse(init.body) });
    const { status = 200, body } = handler(url, init);
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    return {
      ok: status >= 200 && status < 300,
      status,
      json: async () => JSON.parse(text),
      text: async () => text,
    };
  };
  return { fn, calls };
}

test('dial posts the gathered offer, applies the answer and waits for the channel', async () => {
  peers = [];
  FakePeer.stuckGathering = false;
  const { fn, calls } = fakeFetch(() => ({ body: { session_id: 's1', sdp: 'v=0 answer', type: 'answer' } }));
  const dialing = dial({
    serverUrl: 'http://127.0.0.1:8080/',
    apiKey: 'k',
    fetchFn: fn,
    PeerConnection: /** @type {any} */ (FakePeer),
  });
  // let signaling happen, then open the channel
  for (let i = 0; i < 5 && !peers[0]?.remoteDescription; i++) await flush();
  const pc = peers[0];
  assert.equal(calls.length, 1);
  assert.equal(calls[0].url, 'http://127.0.0.1:8080/v1/webrtc/offer');
  assert.equal(calls[0].init.method, 'POST');
  assert.equal(calls[0].init.headers.authorization, 'Bearer k');
  assert.match(calls[0].body.sdp, /a=candidate:/, 'the offer was posted after gathering completed');
  assert.deepEqual(pc.remoteDescription, { type: 'answer', sdp: 'v=0 answer' });
  assert.equal(pc.channel?.label, 'tabagent');
  assert.equal(pc.channel?.opts.ordered, true);
  assert.deepEqual(pc.config.iceServers, []);
  pc.channel?.open();
  const { channel, sessionId } = await dialing;
  assert.equal(channel, pc.channel);
  assert.equal(sessionId, 's1');

  // a candidate found later is trickled with the session id
  const ev = new Event('icecandidate');
  Object.defineProperty(ev, 'candidate', { value: { candidate: 'candidate:2 1 udp 1 127.0.0.1 5001 typ host' } });
  pc.dispatchEvent(ev);
  await flush();
  assert.equal(calls[1].url, 'http://127.0.0.1:8080/v1/webrtc/ice');
  assert.deepEqual(calls[1].body, { session_id: 's1', candidate: 'candidate:2 1 udp 1 127.0.0.1 5001 typ host' });
});

test('dial fails with the server problem detail and closes the peer', async () => {
  peers = [];
  FakePeer.stuckGathering = false;
  const { fn } = fakeFetch(() => ({
    status: 403,
    body: { type: 'urn:tabagent:problem:origin-not-allowed', title: 'Origin not allowed', status: 403, detail: 'origin x may not call this server' },
  }));
  await assert.rejects(
    dial({ serverUrl: 'http://127.0.0.1:8080', fetchFn: fn, PeerConnection: /** @type {any} */ (FakePeer) }),
    /HTTP 403: origin x may not call this server/,
  );
  assert.equal(peers[0].closed, true);
});

test('a 401 tells the user where the key comes from', async () => {
  peers = [];
  FakePeer.stuckGathering = false;
  const { fn } = fakeFetch(() => ({
    status: 401,
    body: { error: { message: 'this server needs its API key', type: 'invalid_request_error', code: 'invalid_api_key' } },
  }));
  await assert.rejects(
    dial({ serverUrl: 'http://127.0.0.1:8080', apiKey: 'old', fetchFn: fn, PeerConnection: /** @type {any} */ (FakePeer) }),
    /HTTP 401: the server wants its API key; run `tabagent token` and paste what it prints on the options page/,
  );
  assert.equal(peers[0].closed, true);
});

test('keyFromHost asks the native host for GetApiKey, and is undefined without a host', async () => {
  /** @type {any[]} */
  const sent = [];
  const withHost = /** @type {any} */ ({
    runtime: {
      sendNativeMessage: async (/** @type {string} */ host, /** @type {any} */ message) => {
        sent.push({ host, message });
        return { id: message.id, response_type: 'ApiKey', api_key: 'the-key', done: true };
      },
    },
  });
  assert.equal(await keyFromHost(withHost), 'the-key');
  assert.deepEqual(sent, [{ host: 'com.tabagent.host', message: { id: 'api-key', request_type: 'GetApiKey' } }]);
  const noHost = /** @type {any} */ ({
    runtime: {
      sendNativeMessage: async () => {
        throw new Error('Specified native messaging host not found.');
      },
    },
  });
  assert.equal(await keyFromHost(noHost), undefined);
  const refused = /** @type {any} */ ({
    runtime: { sendNativeMessage: async () => ({ response_type: 'Error', error: { status: 403 } }) },
  });
  assert.equal(await keyFromHost(refused), undefined);
});

test('dial gives up when the channel never opens', async () => {
  peers = [];
  FakePeer.stuckGathering = true; // also exercises the gathering timeout
  const { fn, calls } = fakeFetch(() => ({ body: { session_id: 's', sdp: 'a' } }));
  await assert.rejects(
    dial({
      serverUrl: 'http://127.0.0.1:8080',
      fetchFn: fn,
      PeerConnection: /** @type {any} */ (FakePeer),
      gatherTimeoutMs: 5,
      openTimeoutMs: 20,
    }),
    /not open after 20 ms/,
  );
  assert.equal(calls.length, 1, 'the offer went out after the gathering timeout');
  assert.equal(peers[0].closed, true);
  FakePeer.stuckGathering = false;
});

test('bridge passes envelopes both ways and tells the port why the channel closed', async () => {
  const pc = new FakePeer({});
  const channel = new FakeChannel('tabagent', {});
  channel.open();
  const port = new FakePort();
  bridge(/** @type {any} */ (channel), /** @type {any} */ (pc), port);

  port.deliver({ id: 1, request_type: 'Health' });
  assert.deepEqual(JSON.parse(channel.sent[0]), { id: 1, request_type: 'Health' });

  channel.receive('{"id":1,"response_type":"Health","done":true}');
  channel.receive(new TextEncoder().encode('{"id":2,"response_type":"X","done":true}'));
  channel.receive('not json');
  assert.deepEqual(
    port.sent.map((m) => m.id),
    [1, 2],
  );

  // what the service worker sees through wrapRtcPort
  let reason = '';
  const wrapped = wrapRtcPort(port, (r) => (reason = r));
  const seen = /** @type {any[]} */ ([]);
  wrapped.onMessage.addListener((m) => seen.push(m));
  channel.close();
  assert.ok(port.disconnectedByClient, 'the port is closed after the channel');
  assert.equal(pc.closed, true);
  const control = port.sent.at(-1);
  assert.equal(control.__tabagent_rtc, 'closed');
  port.connected = true; // replay the control message into the wrapper
  port.deliver(control);
  assert.equal(reason, 'data channel closed');
  assert.deepEqual(seen, [], 'control messages are not envelopes');
});

test('decodeMessage accepts JSON objects only', () => {
  assert.deepEqual(decodeMessage('{"a":1}'), { a: 1 });
  assert.equal(decodeMessage('[1]'.slice(0, 0)), undefined);
  assert.equal(decodeMessage('42'), undefined);
  assert.equal(decodeMessage(null), undefined);
  assert.deepEqual(decodeMessage(new TextEncoder().encode('{"b":2}').buffer), { b: 2 });
});
