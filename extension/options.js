// Options page: edits the settings the service worker reacts to
// (chrome.storage.local), tests the connection, shows the extension id
// with the command that registers the native host for it, and the sites
// allowed to use the page API (options-sites.js).

import { createPageClient } from './lib/page-client.js';
import { LocalReq, Req } from './lib/protocol.js';
import { describeHealth } from './lib/readers.js';
import { loadSettings, normalizeServerUrl, saveSettings } from './lib/settings.js';
import { initSites } from './options-sites.js';
import { TEMPLATES_KEY } from './lib/actions.js';

/** @param {string} id */
const $ = (id) => /** @type {any} */ (document.getElementById(id));

const form = /** @type {HTMLFormElement} */ ($('form'));
const serverUrl = $('server-url');
const apiKey = $('api-key');
const saved = $('saved');
const result = $('result');
const client = createPageClient();

/** @returns {HTMLInputElement[]} */
const radios = () => [...form.querySelectorAll('input[name="transport"]')].map((e) => /** @type {HTMLInputElement} */ (e));

async function show() {
  const s = await loadSettings(chrome.storage.local);
  for (const r of radios()) r.checked = r.value === s.transport;
  serverUrl.value = s.serverUrl;
  apiKey.value = s.apiKey;
  $('keep-loaded').checked = s.keepLoaded;
  $('ext-id').textContent = chrome.runtime.id;
  $('install-cmd').textContent = `tabagent install-host --extension-id ${chrome.runtime.id}`;
  $('allow-cmd').textContent = `tabagent allow-extension ${chrome.runtime.id}`;
  $('templates').value = (await chrome.storage.local.get(TEMPLATES_KEY))[TEMPLATES_KEY] ?? '';
}

/** @param {SubmitEvent} ev */
async function save(ev) {
  ev.preventDefault();
  const url = normalizeServerUrl(serverUrl.value);
  if (!url) {
    saved.textContent = 'the server URL must be an http(s) URL';
    return;
  }
  const transport = radios().find((r) => r.checked)?.value ?? 'auto';
  await saveSettings(chrome.storage.local, {
    transport: /** @type {any} */ (transport),
    serverUrl: url,
    apiKey: apiKey.value.trim(),
    keepLoaded: $('keep-loaded').checked,
  });
  await chrome.storage.local.set({ [TEMPLATES_KEY]: $('templates').value });
  serverUrl.value = url;
  saved.textContent = 'saved';
  setTimeout(() => (saved.textContent = ''), 2000);
}

async function test() {
  result.hidden = false;
  result.textContent = 'connecting…';
  try {
    await client.request(LocalReq.Reconnect, {}, { timeoutMs: 30_000 });
    const health = await client.request(Req.Health);
    const { status } = await client.request(LocalReq.ClientStatus);
    result.textContent = `connected over ${status.transport}: ${describeHealth(health)}\n\n${JSON.stringify(health, null, 2)}`;
  } catch (e) {
    result.textContent = `failed: ${e instanceof Error ? e.message : String(e)}`;
  }
}

form.addEventListener('submit', save);
$('test').addEventListener('click', test);
$('show-key').addEventListener('change', (/** @type {Event} */ ev) => {
  apiKey.type = /** @type {HTMLInputElement} */ (ev.target).checked ? 'text' : 'password';
});
show();
initSites();
