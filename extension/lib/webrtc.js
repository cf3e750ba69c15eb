// WebRTC as the offscreen document does it: dial the tabagent server
// (create one ordered data channel, gather ICE, POST the offer, apply the
// answer, wait for the channel to open) and bridge that channel to a
// chrome.runtime port so the service worker sees the same envelopes as over
// native messaging. RTCPeerConnection and fetch are injected, so node tests
// run it against fakes.

import { DATA_CHANNEL_LABEL, RTC_CONTROL_KEY, WEBRTC_ICE_PATH, WEBRTC_OFFER_PATH } from './protocol.js';

/**
 * @typedef {import('./client.js').PortLike} PortLike
 *
 * @typedef {object} DialOptions
 * @property {string} serverUrl
 * @property {string} [apiKey]
 * @property {typeof fetch} [fetchFn]
 * @property {new (config?: RTCConfiguration) => RTCPeerConnection} [PeerConnection]
 * @property {number} [gatherTimeoutMs]  post the offer with what was gathered by then (default 3 s)
 * @property {number} [openTimeoutMs]    give up if the channel is not open by then (default 10 s)
 */

/**
 * @param {string} serverUrl
 * @param {string} path
 */
export function endpoint(serverUrl, path) {
  return serverUrl.replace(/\/+$/, '') + path;
}

/** @param {string | undefined} apiKey */
function headers(apiKey) {
  /** @type {Record<string, string>} */
  const h = { 'content-type': 'application/json' };
  if (apiKey) h.authorization = `Bearer ${apiKey}`;
  return h;
}

/**
 * Read an error body (problem JSON or text) for a message.
 * @param {Response} res
 */
async function describeFailure(res) {
  let detail = '';
  try {
    const text = await res.text();
    try {
      const j = JSON.parse(text);
      detail = j.detail ?? j.title ?? j.error?.message ?? j.error?.detail ?? j.error?.title ?? text;
    } catch {
      detail = text;
    }
  } catch {
    // no body
  }
  if (res.status === 401) {
    // no key, or an old one: only the user can fix that (or the native host)
    return 'signaling failed: HTTP 401: the server wants its API key; run `tabagent token` and paste what it prints on the options page';
  }
  return `signaling failed: HTTP ${res.status}${detail ? `: ${String(detail).slice(0, 200)}` : ''}`;
}

/**
 * @param {RTCPeerConnection} pc
 * @param {number} timeoutMs
 */
function gatheringComplete(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve(undefined);
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const timer = setTimeout(done, timeoutMs); // late candidates are trickled instead
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/**
 * @param {RTCDataChannel} channel
 * @param {RTCPeerConnection} pc
 * @param {number} timeoutMs
 */
function channelOpen(channel, pc, timeoutMs) {
  if (channel.readyState === 'open') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      channel.removeEventListener('open', onOpen);
      channel.removeEventListener('close', onClose);
      pc.removeEventListener('connectionstatechange', onState);
    };
    const onOpen = () => {
      cleanup();
      resolve(undefined);
    };
    const onClose = () => {
      cleanup();
      reject(new Error('data channel closed before it opened'));
    };
    const onState = () => {
      if (pc.connectionState === 'failed') {
        cleanup();
        reject(new Error('ICE/DTLS connection failed'));
      }
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`data channel not open after ${timeoutMs} ms`));
    }, timeoutMs);
    channel.addEventListener('open', onOpen);
    channel.addEventListener('close', onClose);
    pc.addEventListener('connectionstatechange', onState);
  });
}

/**
 * Connect to the server and resolve once the data channel is open.
 * @param {DialOptions} options
 * @returns {Promise<{pc: RTCPeerConnection, channel: RTCDataChannel, sessionId: string | undefined}>}
 */
export async function dial(options) {
  const fetchFn = options.fetchFn ?? fetch;
  const PeerConnection = options.PeerConnection ?? RTCPeerConnection;
  // no STUN/TURN: the server is on this machine, host candidates suffice
  const pc = new PeerConnection({ iceServers: [] });
  const channel = pc.createDataChannel(DATA_CHANNEL_LABEL, { ordered: true });
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc, options.gatherTimeoutMs ?? 3_000);
    const offer = pc.localDescription;
    if (!offer) throw new Error('no local description');
    const res = await fetchFn(endpoint(options.serverUrl, WEBRTC_OFFER_PATH), {
      method: 'POST',
      headers: headers(options.apiKey),
      body: JSON.stringify({ sdp: offer.sdp }),
    });
    if (!res.ok) throw new Error(await describeFailure(res));
    const answer = await res.json();
    if (typeof answer?.sdp !== 'string') throw new Error('signaling failed: the answer has no sdp');
    /** @type {string | undefined} */
    const sessionId = answer.session_id ?? answer.sessionId;
    pc.addEventListener('icecandidate', (/** @type {RTCPeerConnectionIceEvent} */ ev) => {
      if (!ev.candidate || !ev.candidate.candidate || sessionId === undefined) return;
      fetchFn(endpoint(options.serverUrl, WEBRTC_ICE_PATH), {
        method: 'POST',
        headers: headers(options.apiKey),
        body: JSON.stringify({ session_id: sessionId, candidate: ev.candidate.candidate }),
      }).catch(() => {
        // a late candidate is a bonus; the gathered ones were in the offer
      });
    });
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    await channelOpen(channel, pc, options.openTimeoutMs ?? 10_000);
    return { pc, channel, sessionId };
  } catch (e) {
    pc.close();
    throw e;
  }
}

/**
 * Decode one data channel message into an envelope (text or binary JSON).
 * Returns undefined for anything that is not a JSON object.
 * @param {unknown} data
 */
export function decodeMessage(data) {
  let text;
  if (typeof data === 'string') text = data;
  else if (data instanceof ArrayBuffer) text = new TextDecoder().decode(data);
  else if (ArrayBuffer.isView(data)) text = new TextDecoder().decode(data);
  else return undefined;
  try {
    const v = JSON.parse(text);
    return typeof v === 'object' && v !== null ? v : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Pass envelopes both ways between an open data channel and a runtime port
 * until either side closes; then close the other, telling the port why.
 * @param {RTCDataChannel} channel
 * @param {RTCPeerConnection} pc
 * @param {PortLike} port
 */
export function bridge(channel, pc, port) {
  let closed = false;
  /**
   * @param {string} reason
   * @param {boolean} tellPort
   */
  const close = (reason, tellPort) => {
    if (closed) return;
    closed = true;
    if (tellPort) {
      try {
        port.postMessage({ [RTC_CONTROL_KEY]: 'closed', reason });
        port.disconnect();
      } catch {
        // the worker is gone already
      }
    }
    try {
      channel.close();
    } catch {
      // already closed
    }
    pc.close();
  };
  channel.addEventListener('message', (/** @type {MessageEvent} */ ev) => {
    const msg = decodeMessage(ev.data);
    if (msg === undefined || closed) return;
    try {
      port.postMessage(msg);
    } catch {
      close('service worker port closed', false);
    }
  });
  channel.addEventListener('close', () => close('data channel closed', true));
  pc.addEventListener('connectionstatechange', () => {
    if (pc.connectionState === 'failed' || pc.connectionState === 'closed') {
      close(`peer connection ${pc.connectionState}`, true);
    }
  });
  port.onMessage.addListener((msg) => {
    if (closed) return;
    if (channel.readyState !== 'open') {
      close('data channel is not open', true);
      return;
    }
    try {
      channel.send(JSON.stringify(msg));
    } catch (e) {
      close(`send failed: ${/** @type {Error} */ (e).message}`, true);
    }
  });
  port.onDisconnect.addListener(() => close('service worker hung up', false));
  return { close: (/** @type {string} */ reason) => close(reason, true) };
}
