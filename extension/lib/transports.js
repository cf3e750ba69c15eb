// The Chrome side of the transports TabAgentClient takes: native messaging
// (a chrome.runtime.connectNative port), WebRTC (a runtime port opened by the
// offscreen document once its data channel is up), and the relay a page uses
// to reach the service worker. Each returns a port shaped like
// chrome.runtime.Port, which is all the client needs. `chromeApi` is passed in
// rather than read from the global so this module also loads under node.

import {
  NATIVE_HOST,
  NATIVE_MAX_MESSAGE_BYTES,
  OFFSCREEN_TARGET,
  RELAY_PORT_NAME,
  RTC_CONTROL_KEY,
  RTC_PORT_PREFIX,
  WEBRTC_MAX_MESSAGE_BYTES,
} from './protocol.js';

/**
 * @typedef {import('./client.js').Transport} Transport
 * @typedef {import('./client.js').PortLike} PortLike
 */

/**
 * Native messaging to `com.tabagent.host`. When the host is not installed,
 * Chrome still returns a port and then disconnects it with lastError
 * "Specified native messaging host not found."; the client's Health probe
 * turns that into a fallback.
 * @param {typeof chrome} chromeApi
 * @param {string} [host]
 * @returns {Transport}
 */
export function nativeTransport(chromeApi, host = NATIVE_HOST) {
  return {
    name: 'native',
    maxMessageBytes: NATIVE_MAX_MESSAGE_BYTES,
    connect: () => chromeApi.runtime.connectNative(host),
    // read inside onDisconnect, which is the only time Chrome sets it
    lastError: () => chromeApi.runtime.lastError?.message,
  };
}

/**
 * The server's API key, from the native host: it hands the key over native
 * messaging only (Chrome lets only this extension start it), so WebRTC
 * signaling needs no step from the user when the host is installed.
 * Undefined when there is no host (a browser-only install types the key on
 * the options page).
 * @param {typeof chrome} chromeApi
 * @param {string} [host]
 * @returns {Promise<string | undefined>}
 */
export async function keyFromHost(chromeApi, host = NATIVE_HOST) {
  try {
    const reply = await chromeApi.runtime.sendNativeMessage(host, { id: 'api-key', request_type: 'GetApiKey' });
    return typeof reply?.api_key === 'string' && reply.api_key !== '' ? reply.api_key : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A page's way to the service worker's relay.
 * @param {typeof chrome} chromeApi
 * @returns {Transport}
 */
export function relayTransport(chromeApi) {
  return {
    name: 'relay',
    connect: () => chromeApi.runtime.connect({ name: RELAY_PORT_NAME }),
    lastError: () => chromeApi.runtime.lastError?.message,
    // answered by the worker itself, so the page connects even when tabagent is down
    probe: { type: 'ClientStatus' },
  };
}

/**
 * Hands runtime ports opened by the offscreen document to whoever dialed.
 * The service worker registers one onConnect listener at top level and
 * offers every port to the broker.
 */
export class RtcPortBroker {
  /** @type {Map<string, (port: chrome.runtime.Port) => void>} */ #waiting = new Map();

  /**
   * @param {string} dialId
   * @param {number} timeoutMs
   * @returns {{port: Promise<chrome.runtime.Port>, cancel: () => void}}
   */
  expect(dialId, timeoutMs) {
    /** @type {() => void} */
    let cancel = () => {};
    const port = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(dialId);
        reject(new Error('the offscreen document did not open a data channel port in time'));
      }, timeoutMs);
      this.#waiting.set(dialId, (p) => {
        clearTimeout(timer);
        this.#waiting.delete(dialId);
        resolve(p);
      });
      cancel = () => {
        clearTimeout(timer);
        this.#waiting.delete(dialId);
      };
    });
    return { port, cancel };
  }

  /**
   * @param {chrome.runtime.Port} port
   * @returns {boolean} whether the port was an RTC port (taken, or refused when nobody waits)
   */
  offer(port) {
    if (!port.name.startsWith(RTC_PORT_PREFIX)) return false;
    const take = this.#waiting.get(port.name.slice(RTC_PORT_PREFIX.length));
    if (take) take(port);
    else port.disconnect();
    return true;
  }
}

/** @type {Promise<void> | null} the createDocument call in flight, if any */
let creating = null;

/**
 * Make sure the offscreen document (which may hold RTCPeerConnection) exists.
 * @param {typeof chrome} chromeApi
 */
export async function ensureOffscreenDocument(chromeApi) {
  const path = 'offscreen.html';
  const url = chromeApi.runtime.getURL(path);
  const contexts = await chromeApi.runtime.getContexts({
    contextTypes: [chromeApi.runtime.ContextType.OFFSCREEN_DOCUMENT],
    documentUrls: [url],
  });
  if (contexts.length > 0) return;
  if (!creating) {
    creating = chromeApi.offscreen
      .createDocument({
        url: path,
        reasons: [chromeApi.offscreen.Reason.WEB_RTC],
        justification: 'RTCPeerConnection to the local tabagent server is not available in a service worker',
      })
      .catch((e) => {
        // another caller won the race: one offscreen document per extension
        if (!/single offscreen|only a single/i.test(String(e?.message))) throw e;
      })
      .finally(() => {
        creating = null;
      });
  }
  await creating;
}

/**
 * WebRTC through the offscreen document. `connect` asks it to dial the
 * server (signaling over HTTP, then one ordered data channel) and resolves
 * with the runtime port it opens for that channel. Messages on the port are
 * envelopes; the offscreen document tells why a channel closed with one
 * control message before it disconnects.
 * @param {{chromeApi: typeof chrome, broker: RtcPortBroker, settings: () => Promise<{serverUrl: string, apiKey: string}>, dialTimeoutMs?: number}} opts
 * @returns {Transport}
 */
export function webrtcTransport({ chromeApi, broker, settings, dialTimeoutMs = 15_000 }) {
  /** @type {string | undefined} */
  let lastError;
  return {
    name: 'webrtc',
    maxMessageBytes: WEBRTC_MAX_MESSAGE_BYTES,
    probeTimeoutMs: 5_000,
    lastError: () => lastError,
    async connect() {
      lastError = undefined;
      await ensureOffscreenDocument(chromeApi);
      const { serverUrl, apiKey } = await settings();
      const dialId = crypto.randomUUID();
      const waiter = broker.expect(dialId, dialTimeoutMs);
      /** @type {{ok?: boolean, error?: string} | undefined} */
      let reply;
      try {
        reply = await sendToOffscreen(chromeApi, { target: OFFSCREEN_TARGET, op: 'dial', dialId, serverUrl, apiKey });
      } catch (e) {
        waiter.cancel();
        throw e;
      }
      if (!reply?.ok) {
        waiter.cancel();
        throw new Error(reply?.error ?? 'the offscreen document did not answer');
      }
      const port = await waiter.port;
      return wrapRtcPort(port, (reason) => {
        lastError = reason;
      });
    },
  };
}

/**
 * sendMessage, retried briefly while a fresh offscreen document registers its listener.
 * @param {typeof chrome} chromeApi
 * @param {any} message
 * @returns {Promise<any>}
 */
async function sendToOffscreen(chromeApi, message) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await chromeApi.runtime.sendMessage(message);
    } catch (e) {
      if (attempt >= 5 || !/Receiving end does not exist/i.test(String(/** @type {any} */ (e)?.message))) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/**
 * Strip the offscreen document's control messages from an RTC port.
 * @param {PortLike} port
 * @param {(reason: string) => void} onCloseReason
 * @returns {PortLike}
 */
export function wrapRtcPort(port, onCloseReason) {
  return {
    postMessage: (m) => port.postMessage(m),
    disconnect: () => port.disconnect(),
    onMessage: {
      addListener: (fn) =>
        port.onMessage.addListener((m) => {
          if (m && typeof m === 'object' && RTC_CONTROL_KEY in m) {
            if (m[RTC_CONTROL_KEY] === 'closed') onCloseReason(String(m.reason ?? 'data channel closed'));
            return;
          }
          fn(m);
        }),
    },
    onDisconnect: port.onDisconnect,
  };
}
