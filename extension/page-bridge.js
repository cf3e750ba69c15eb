// The page API's courier, in the extension's isolated world of a web page
// (document_start): carries page-api.js's requests (window messages marked
// `page->ext`) to the service worker on a `tabagent-page` port, and the
// replies back as `ext->page` messages. It adds nothing and decides
// nothing: the worker's gate checks the origin Chrome reports for the port.
// If the port closes, requests still waiting are failed.
(() => {
  const MARK = '__tabagent';
  /** @type {chrome.runtime.Port | null} */
  let port = null;
  /** @type {Set<string>} */
  const waiting = new Set();
  /** @param {any} msg */
  const toPage = (msg) => window.postMessage({ [MARK]: 'ext->page', msg }, '*');

  function connect() {
    const p = chrome.runtime.connect({ name: 'tabagent-page' });
    p.onMessage.addListener((msg) => {
      if (msg?.done === true || msg?.response_type === 'Error') waiting.delete(String(msg.id));
      toPage(msg);
    });
    p.onDisconnect.addListener(() => {
      port = null;
      for (const id of waiting) toPage({ id, response_type: 'Error', error: { type: 'closed', title: 'tabagent went away' }, done: true });
      waiting.clear();
    });
    return p;
  }

  window.addEventListener('message', (e) => {
    if (e.source !== window || typeof e.data !== 'object' || e.data === null || e.data[MARK] !== 'page->ext') return;
    const msg = e.data.msg;
    if (typeof msg !== 'object' || msg === null || msg.id === undefined) return;
    try {
      port ??= connect();
      waiting.add(String(msg.id));
      port.postMessage(msg);
    } catch {
      // the extension was reloaded: this page's scripts are orphaned
      toPage({ id: msg.id, response_type: 'Error', error: { type: 'closed', title: 'tabagent was updated; reload the page' }, done: true });
    }
  });
})();
