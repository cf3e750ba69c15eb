// User settings kept in chrome.storage.local (not sync: the API key stays
// on this machine): which transport to use, the server URL for WebRTC
// signaling, the API key, the side panel's system prompt, and whether the
// chat model is kept loaded (LoadModel's `keep_loaded`). Reading is
// tolerant: anything missing or malformed falls back to its default.

import { DEFAULT_SERVER_URL } from './protocol.js';

/** @typedef {'auto' | 'native' | 'webrtc'} TransportPreference */

/**
 * @typedef {object} Settings
 * @property {TransportPreference} transport
 * @property {string} serverUrl
 * @property {string} apiKey
 * @property {string} systemPrompt
 * @property {string} pageModel  the chat model web pages get through the page API ('' = the server's default)
 * @property {boolean} keepLoaded  the side panel's chat model stays loaded however long it is idle
 */

/** @type {Readonly<Settings>} */
export const DEFAULT_SETTINGS = Object.freeze({
  transport: 'auto',
  serverUrl: DEFAULT_SERVER_URL,
  apiKey: '',
  systemPrompt: '',
  pageModel: '',
  keepLoaded: false,
});

/** Storage keys the service worker reacts to (a change reconnects). */
export const CONNECTION_KEYS = ['transport', 'serverUrl', 'apiKey'];

/** Flag (in chrome.storage.local) that also enables test-hook.html; see README. */
export const TEST_HOOK_FLAG = 'enableTestHook';

/** @type {readonly TransportPreference[]} */
export const TRANSPORTS = ['auto', 'native', 'webrtc'];

/**
 * Normalise a server URL: trimmed, http(s) only, no trailing slash.
 * Returns null when it is not a usable URL.
 * @param {unknown} value
 */
export function normalizeServerUrl(value) {
  if (typeof value !== 'string') return null;
  const trimmed = value.trim();
  if (trimmed === '') return null;
  let url;
  try {
    url = new URL(trimmed);
  } catch {
    return null;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  return (url.origin + url.pathname).replace(/\/+$/, '');
}

/**
 * @param {Record<string, unknown>} raw what storage returned
 * @returns {Settings}
 */
export function parseSettings(raw) {
  const r = raw ?? {};
  const transport = TRANSPORTS.includes(/** @type {any} */ (r.transport))
    ? /** @type {TransportPreference} */ (r.transport)
    : DEFAULT_SETTINGS.transport;
  return {
    transport,
    serverUrl: normalizeServerUrl(r.serverUrl) ?? DEFAULT_SETTINGS.serverUrl,
    apiKey: typeof r.apiKey === 'string' ? r.apiKey.trim() : '',
    systemPrompt: typeof r.systemPrompt === 'string' ? r.systemPrompt : '',
    pageModel: typeof r.pageModel === 'string' ? r.pageModel.trim() : '',
    keepLoaded: r.keepLoaded === true,
  };
}

/**
 * @param {chrome.storage.StorageArea} area
 * @returns {Promise<Settings>}
 */
export async function loadSettings(area) {
  const raw = await area.get(Object.keys(DEFAULT_SETTINGS));
  return parseSettings(raw);
}

/**
 * @param {chrome.storage.StorageArea} area
 * @param {Partial<Settings>} patch
 */
export async function saveSettings(area, patch) {
  await area.set(patch);
}
