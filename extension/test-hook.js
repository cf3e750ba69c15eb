// A page an end-to-end test can drive: `window.tabagentTest` wraps a page
// TabAgentClient (the same path the side panel uses: page -> service worker
// -> native messaging or WebRTC) and returns plain JSON, so a CDP/Playwright
// `evaluate` can call it. Enabled only with `?test=1` in the URL or
// `enableTestHook: true` in chrome.storage.local; when ready it sets
// <html data-tabagent-test="ready">.
//
//   await tabagentTest.request('Health')            -> {ok, reply} | {ok: false, error}
//   await tabagentTest.stream('Chat', {messages})   -> {ok, chunks, final, text} | {ok: false, error, chunks}
//   await tabagentTest.status()                     -> ClientStatus of the worker's connection
//   await tabagentTest.settings({transport: 'webrtc', serverUrl}) -> {ok, status} after reconnecting
//   await tabagentTest.reconnect()                  -> {ok, status}

import { TabAgentError } from './lib/client.js';
import { createPageClient } from './lib/page-client.js';
import { LocalReq, chunkText } from './lib/protocol.js';
import { TEST_HOOK_FLAG, loadSettings, saveSettings } from './lib/settings.js';

/** @param {unknown} e */
function problem(e) {
  if (e instanceof TabAgentError) return e.toProblem();
  return { type: 'internal', title: e instanceof Error ? e.message : String(e), status: 0, detail: '' };
}

async function enabled() {
  if (new URLSearchParams(location.search).get('test') === '1') return true;
  const stored = await chrome.storage.local.get(TEST_HOOK_FLAG);
  return stored[TEST_HOOK_FLAG] === true;
}

async function install() {
  if (!(await enabled())) return;
  const client = createPageClient();
  const log = /** @type {HTMLElement} */ (document.getElementById('log'));
  /** @param {string} line */
  const note = (line) => {
    log.textContent += `\n${new Date().toISOString()} ${line}`;
  };
  log.textContent = 'test hook enabled';

  const hook = {
    /**
     * @param {string} type
     * @param {Record<string, any>} [fields]
     * @param {{timeoutMs?: number}} [opts]
     */
    async request(type, fields = {}, opts = {}) {
      try {
        const reply = await client.request(type, fields, opts);
        note(`${type}: ok`);
        return { ok: true, reply };
      } catch (e) {
        note(`${type}: ${problem(e).title}`);
        return { ok: false, error: problem(e) };
      }
    },
    /**
     * @param {string} type
     * @param {Record<string, any>} [fields]
     * @param {{timeoutMs?: number}} [opts]
     */
    async stream(type, fields = {}, opts = {}) {
      /** @type {any[]} */
      const chunks = [];
      let text = '';
      try {
        for await (const msg of client.stream(type, fields, opts)) {
          if (msg.done) {
            note(`${type}: ${chunks.length} chunks`);
            return { ok: true, chunks, final: msg, text };
          }
          chunks.push(msg);
          text += chunkText(msg);
        }
        return { ok: false, chunks, text, error: { type: 'internal', title: 'stream ended without a final message' } };
      } catch (e) {
        return { ok: false, chunks, text, error: problem(e) };
      }
    },
    async status() {
      const r = await client.request(LocalReq.ClientStatus);
      return r.status;
    },
    async reconnect() {
      const r = await hook.request(LocalReq.Reconnect, {}, { timeoutMs: 60_000 });
      return r.ok ? { ok: true, status: r.reply?.status } : { ok: false, error: r.error, status: await hook.status() };
    },
    /** @param {Partial<import('./lib/settings.js').Settings>} patch */
    async settings(patch) {
      await saveSettings(chrome.storage.local, patch);
      // the worker applies storage changes asynchronously; wait until it has
      const want = await loadSettings(chrome.storage.local);
      for (let i = 0; i < 50; i++) {
        const s = await hook.status();
        if (s.preference === want.transport) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      return hook.reconnect();
    },
  };
  Object.assign(window, { tabagentTest: hook });
  document.documentElement.dataset.tabagentTest = 'ready';
}

install();
