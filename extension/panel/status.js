// The status line: which transport the service worker reaches tabagent over
// and the server's health, or why it is offline; the retry button's state.

import { LocalReq, Req } from '../lib/protocol.js';
import { describeHealth } from '../lib/readers.js';
import { client, state } from './context.js';
import { errorText, ui } from './ui.js';

/** @typedef {import('../lib/client.js').ClientStatus} ClientStatus */

/** @param {ClientStatus} status @param {string} [health] */
export function showStatus(status, health) {
  state.upstream = status;
  ui.statusDot.dataset.state = status.state;
  let text;
  if (status.state === 'connected') {
    text = `${status.transport} · ${health ?? describeHealth(status.health)}`;
  } else if (status.state === 'backoff') {
    text = `reconnecting in ${Math.round((status.retryInMs ?? 0) / 1000)} s`;
  } else if (status.state === 'connecting') {
    text = 'connecting…';
  } else {
    text = status.lastError ? `offline: ${status.lastError}` : 'not connected';
  }
  ui.statusText.textContent = text;
  ui.statusText.title = status.lastError ?? text;
  ui.retry.hidden = status.state === 'connected' || status.state === 'connecting';
}

/** Ask the server for its health (connecting upstream if needed), then show where it came from. */
export async function refreshStatus() {
  let health;
  try {
    health = describeHealth(await client.request(Req.Health, {}, { timeoutMs: 20_000 }));
  } catch (e) {
    ui.statusDot.dataset.state = 'error';
  }
  try {
    const reply = await client.request(LocalReq.ClientStatus, {}, { timeoutMs: 5_000 });
    showStatus(reply.status, health);
  } catch (e) {
    ui.statusDot.dataset.state = 'error';
    ui.statusText.textContent = `extension error: ${errorText(e)}`;
    ui.retry.hidden = false;
  }
}
