// The options page's "Web pages" section: which sites may use the page API
// (navigator.tabagent.LanguageModel), which replace the browser's own
// LanguageModel, which the policy enables, which asked and were refused;
// enabling a site that is not loopback asks Chrome for its host permission
// (optional_host_permissions), and a site enabled without one is reported.

import {
  MANAGED_ORIGINS_KEY,
  PAGE_ACCESS_KEY,
  PAGE_ASKED_KEY,
  enabledOrigins,
  isLoopback,
  normalizeOrigin,
  originPattern,
  parsePageAccess,
} from './lib/page-origins.js';
import { loadSites } from './lib/page-sites.js';

/** @param {string} id */
const $ = (id) => /** @type {any} */ (document.getElementById(id));

/** @param {string} tag @param {Record<string, any>} [props] @param {(Node | string)[]} [children] */
function el(tag, props = {}, children = []) {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
}

async function saveAccess(/** @type {import('./lib/page-origins.js').PageAccess} */ access) {
  await chrome.storage.local.set({ [PAGE_ACCESS_KEY]: access });
}

/** Enable an origin: ask for its host permission first (needs the click's user gesture). @param {string} origin */
async function enable(origin) {
  if (!origin.startsWith('chrome-extension://') && !isLoopback(origin)) {
    const granted = await chrome.permissions.request({ origins: [originPattern(origin)] });
    if (!granted) return `${origin}: permission not granted`;
  }
  const { access } = await loadSites(chrome);
  access[origin] = { enabled: true, replace: access[origin]?.replace ?? false };
  await saveAccess(access);
  const asked = /** @type {Record<string, number>} */ ((await chrome.storage.local.get(PAGE_ASKED_KEY))[PAGE_ASKED_KEY] ?? {});
  delete asked[origin];
  await chrome.storage.local.set({ [PAGE_ASKED_KEY]: asked });
  return '';
}

/** Revoke an origin and give its host permission back. @param {string} origin */
async function revoke(origin) {
  const { access } = await loadSites(chrome);
  delete access[origin];
  await saveAccess(access);
  if (!origin.startsWith('chrome-extension://') && !isLoopback(origin)) await chrome.permissions.remove({ origins: [originPattern(origin)] }).catch(() => false);
}

async function render() {
  const { access, managed } = await loadSites(chrome);
  const list = $('sites');
  list.replaceChildren();
  for (const { origin, decision } of enabledOrigins(access, managed)) {
    const needsPermission = !origin.startsWith('chrome-extension://') && !isLoopback(origin);
    const granted = !needsPermission || (await chrome.permissions.contains({ origins: [originPattern(origin)] }));
    const replace = el('input', { type: 'checkbox', checked: decision.replace, title: 'tabagent answers for LanguageModel, Summarizer & co. even where the browser has its own' });
    replace.addEventListener('change', async () => {
      const a = parsePageAccess((await chrome.storage.local.get(PAGE_ACCESS_KEY))[PAGE_ACCESS_KEY]);
      a[origin] = { enabled: a[origin]?.enabled ?? decision.source === 'user', replace: replace.checked };
      await saveAccess(a);
    });
    const row = el('li', {}, [
      el('code', { textContent: origin }),
      ' ',
      el('label', {}, [replace, ' replace the browser\'s AI globals']),
      decision.source === 'policy' ? el('span', { className: 'muted', textContent: ' (enabled by policy)' }) : '',
      granted ? '' : el('span', { className: 'warning', textContent: ' no host permission: the page API is not injected there' }),
    ]);
    if (decision.source === 'user') {
      const off = el('button', { type: 'button', textContent: 'Revoke' });
      off.addEventListener('click', () => revoke(origin).then(render));
      row.append(' ', off);
    }
    list.append(row);
  }
  if (list.children.length === 0) list.append(el('li', { className: 'muted', textContent: 'no site yet' }));

  const asked = (await chrome.storage.local.get(PAGE_ASKED_KEY))[PAGE_ASKED_KEY] ?? {};
  const askedList = $('sites-asked');
  askedList.replaceChildren();
  for (const origin of Object.keys(asked)) {
    if (access[origin]?.enabled || managed.includes(origin)) continue;
    const allow = el('button', { type: 'button', textContent: 'Allow' });
    allow.addEventListener('click', () => enable(origin).then((why) => ($('sites-note').textContent = why)).then(render));
    askedList.append(el('li', {}, [el('code', { textContent: origin }), ' ', allow]));
  }
  $('sites-asked-box').hidden = askedList.children.length === 0;
}

export function initSites() {
  $('site-form').addEventListener('submit', async (/** @type {SubmitEvent} */ ev) => {
    ev.preventDefault();
    ev.stopPropagation();
    const origin = normalizeOrigin($('site-origin').value);
    $('sites-note').textContent = origin ? '' : 'an origin is https://example.com, http://127.0.0.1:8000 or chrome-extension://<id>';
    if (!origin) return;
    $('sites-note').textContent = await enable(origin);
    $('site-origin').value = '';
    render();
  });
  chrome.storage.onChanged.addListener((changes, area) => {
    if (area === 'managed' || PAGE_ACCESS_KEY in changes || PAGE_ASKED_KEY in changes || MANAGED_ORIGINS_KEY in changes) render();
  });
  render();
}
