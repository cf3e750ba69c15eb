// The offscreen document's only job: on a "dial" message from the service
// worker, connect to the tabagent server over WebRTC, then open a runtime
// port named after the dial and bridge it to the data channel. One port per
// connection; when either side closes, the other is closed too.

import { OFFSCREEN_TARGET, RTC_PORT_PREFIX } from './lib/protocol.js';
import { bridge, dial } from './lib/webrtc.js';

chrome.runtime.onMessage.addListener((msg, _sender, sendResponse) => {
  if (!msg || msg.target !== OFFSCREEN_TARGET) return false;
  if (msg.op !== 'dial') {
    sendResponse({ ok: false, error: `unknown op ${msg.op}` });
    return false;
  }
  handleDial(msg).then(sendResponse, (e) => sendResponse({ ok: false, error: e?.message ?? String(e) }));
  return true; // answered asynchronously
});

/**
 * @param {{dialId: string, serverUrl: string, apiKey?: string}} msg
 */
async function handleDial(msg) {
  const { pc, channel } = await dial({ serverUrl: msg.serverUrl, apiKey: msg.apiKey });
  const port = chrome.runtime.connect({ name: RTC_PORT_PREFIX + msg.dialId });
  bridge(channel, pc, port);
  return { ok: true };
}
