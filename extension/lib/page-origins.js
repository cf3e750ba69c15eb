// Which web origins may use the page API (navigator.tabagent.LanguageModel),
// and which of them opted in to tabagent replacing the browser's own global
// `LanguageModel`. Two sources: the user's choices in chrome.storage.local
// (`pageAccess`, edited on the options page) and the administrator's
// `enabledOrigins` policy in chrome.storage.managed (see managed_schema.json).
// Pure functions over plain data, so the service worker, the options page
// and the tests share them.

/** chrome.storage.local key of the user's per-origin choices. */
export const PAGE_ACCESS_KEY = 'pageAccess';
/** chrome.storage.local key of origins that asked and were not enabled (shown on the options page). */
export const PAGE_ASKED_KEY = 'pageAsked';
/** chrome.storage.managed key of the policy's origins. */
export const MANAGED_ORIGINS_KEY = 'enabledOrigins';

/** Pages on these hosts get the content scripts from the manifest (host_permissions). */
export const LOOPBACK_PATTERNS = Object.freeze(['http://127.0.0.1/*', 'http://localhost/*']);

/**
 * One origin's entry: enabled (may use the API) and replace (the global
 * `LanguageModel` & co. are tabagent's even where the browser has its own).
 * @typedef {{enabled: boolean, replace: boolean}} OriginAccess
 * @typedef {Record<string, OriginAccess>} PageAccess
 * @typedef {{enabled: boolean, replace: boolean, source: 'user' | 'policy' | 'none'}} AccessDecision
 */

/**
 * The origin of a URL or origin string (`scheme://host[:port]`), http(s) or
 * chrome-extension only; null for anything else.
 * @param {unknown} value
 * @returns {string | null}
 */
export function normalizeOrigin(value) {
  if (typeof value !== 'string' || value.trim() === '') return null;
  let url;
  try {
    url = new URL(value.trim());
  } catch {
    return null;
  }
  if (url.protocol === 'chrome-extension:') return /^[a-p]{32}$/.test(url.host) ? `chrome-extension://${url.host}` : null;
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  return url.origin;
}

/** @param {string} origin */
export function isLoopback(origin) {
  const host = new URL(origin).hostname;
  return origin.startsWith('http://') && (host === '127.0.0.1' || host === 'localhost');
}

/**
 * The match pattern for an origin's pages (content scripts, host
 * permissions), port included; the service worker still checks the exact
 * origin of each request.
 * @param {string} origin a normalized http(s) origin
 */
export function originPattern(origin) {
  const url = new URL(origin);
  return `${url.protocol}//${url.host}/*`;
}

/**
 * The user's choices as stored; malformed entries are dropped.
 * @param {unknown} raw
 * @returns {PageAccess}
 */
export function parsePageAccess(raw) {
  /** @type {PageAccess} */
  const out = {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return out;
  for (const [key, value] of Object.entries(raw)) {
    const origin = normalizeOrigin(key);
    if (!origin || typeof value !== 'object' || value === null) continue;
    const v = /** @type {Record<string, unknown>} */ (value);
    out[origin] = { enabled: v.enabled === true, replace: v.replace === true };
  }
  return out;
}

/**
 * The policy's origins (an array of origin strings); anything else is ignored.
 * @param {unknown} raw
 * @returns {string[]}
 */
export function parseManagedOrigins(raw) {
  if (!Array.isArray(raw)) return [];
  return [...new Set(raw.map(normalizeOrigin).filter((o) => o !== null))];
}

/**
 * May `origin` use the API, and does it replace the browser's globals?
 * The user's "off" does not override the policy: an administrator's list wins.
 * @param {string} origin
 * @param {PageAccess} access
 * @param {string[]} managed
 * @returns {AccessDecision}
 */
export function decide(origin, access, managed) {
  const mine = access[origin];
  if (managed.includes(origin)) return { enabled: true, replace: mine?.replace === true, source: 'policy' };
  if (mine?.enabled) return { enabled: true, replace: mine.replace, source: 'user' };
  return { enabled: false, replace: false, source: 'none' };
}

/**
 * Every enabled http(s) origin, with its decision (for content script
 * registration and the options page).
 * @param {PageAccess} access
 * @param {string[]} managed
 * @returns {{origin: string, decision: AccessDecision}[]}
 */
export function enabledOrigins(access, managed) {
  const all = new Set([...Object.keys(access), ...managed]);
  return [...all]
    .map((origin) => ({ origin, decision: decide(origin, access, managed) }))
    .filter(({ decision }) => decision.enabled)
    .sort((a, b) => a.origin.localeCompare(b.origin));
}
