// The page API's sites, as the service worker applies them: reads the
// user's choices and the policy (page-origins.js), and keeps the dynamic
// content scripts in step. Loopback pages get the page API from the
// manifest; every other enabled origin gets it through
// chrome.scripting.registerContentScripts once its host permission is
// granted, and origins that opted in to replacing the browser's globals
// get page-replace.js as well.

import {
  LOOPBACK_PATTERNS,
  MANAGED_ORIGINS_KEY,
  PAGE_ACCESS_KEY,
  PAGE_ASKED_KEY,
  decide,
  enabledOrigins,
  isLoopback,
  originPattern,
  parseManagedOrigins,
  parsePageAccess,
} from './page-origins.js';

/** Ids of the dynamic content scripts this module owns. */
export const SCRIPT_IDS = Object.freeze({ api: 'tabagent-page-api', bridge: 'tabagent-page-bridge', replace: 'tabagent-page-replace' });

/** The MAIN-world scripts, in the order they must run. */
export const PAGE_API_FILES = Object.freeze(['page-tasks.js', 'page-api.js']);

/**
 * The user's choices and the policy's origins.
 * @param {typeof chrome} chromeApi
 */
export async function loadSites(chromeApi) {
  const local = await chromeApi.storage.local.get(PAGE_ACCESS_KEY);
  /** @type {Record<string, unknown>} */
  let managed = {};
  try {
    managed = await chromeApi.storage.managed.get(MANAGED_ORIGINS_KEY);
  } catch {
    // no policy store on this platform
  }
  return { access: parsePageAccess(local[PAGE_ACCESS_KEY]), managed: parseManagedOrigins(managed[MANAGED_ORIGINS_KEY]) };
}

/**
 * May `origin` use the page API?
 * @param {typeof chrome} chromeApi
 * @param {string} origin
 */
export async function accessFor(chromeApi, origin) {
  const { access, managed } = await loadSites(chromeApi);
  return decide(origin, access, managed);
}

/**
 * Remember that an origin asked and was refused (the options page offers
 * to enable it). Kept to the 50 latest.
 * @param {typeof chrome} chromeApi
 * @param {string} origin
 * @param {number} now
 */
export async function noteAsked(chromeApi, origin, now) {
  const stored = (await chromeApi.storage.local.get(PAGE_ASKED_KEY))[PAGE_ASKED_KEY];
  const asked = typeof stored === 'object' && stored !== null ? { .../** @type {Record<string, number>} */ (stored) } : {};
  if (asked[origin]) return; // asked once is enough
  asked[origin] = now;
  const latest = Object.entries(asked).sort((a, b) => b[1] - a[1]).slice(0, 50);
  await chromeApi.storage.local.set({ [PAGE_ASKED_KEY]: Object.fromEntries(latest) });
}

/**
 * The content scripts the current sites need.
 * @param {import('./page-origins.js').PageAccess} access
 * @param {string[]} managed
 * @param {(pattern: string) => Promise<boolean>} granted  is the host permission held
 * @returns {Promise<chrome.scripting.RegisteredContentScript[]>}
 */
export async function plannedScripts(access, managed, granted) {
  const sites = enabledOrigins(access, managed).filter(({ origin }) => !origin.startsWith('chrome-extension://'));
  /** @type {string[]} */
  const api = [];
  /** @type {string[]} */
  const replace = [];
  for (const { origin, decision } of sites) {
    const pattern = originPattern(origin);
    const reachable = isLoopback(origin) || (await granted(pattern));
    if (!reachable) continue;
    if (!isLoopback(origin) && !api.includes(pattern)) api.push(pattern);
    if (decision.replace && !replace.includes(pattern)) replace.push(pattern);
  }
  const common = { runAt: /** @type {const} */ ('document_start'), allFrames: false, persistAcrossSessions: true };
  /** @type {chrome.scripting.RegisteredContentScript[]} */
  const out = [];
  if (api.length > 0) {
    out.push({ id: SCRIPT_IDS.api, matches: api, js: [...PAGE_API_FILES], world: 'MAIN', ...common });
    out.push({ id: SCRIPT_IDS.bridge, matches: api, js: ['page-bridge.js'], world: 'ISOLATED', ...common });
  }
  if (replace.length > 0) out.push({ id: SCRIPT_IDS.replace, matches: replace, js: ['page-replace.js'], world: 'MAIN', ...common });
  return out;
}

/**
 * Replace this module's dynamic content scripts with what the sites need now.
 * @param {typeof chrome} chromeApi
 */
export async function syncPageScripts(chromeApi) {
  const { access, managed } = await loadSites(chromeApi);
  const planned = await plannedScripts(access, managed, (pattern) => chromeApi.permissions.contains({ origins: [pattern] }));
  /** @type {string[]} */
  const ours = Object.values(SCRIPT_IDS);
  const existing = (await chromeApi.scripting.getRegisteredContentScripts()).map((s) => s.id).filter((id) => ours.includes(id));
  if (existing.length > 0) await chromeApi.scripting.unregisterContentScripts({ ids: existing });
  if (planned.length > 0) await chromeApi.scripting.registerContentScripts(planned);
  return planned;
}

export { LOOPBACK_PATTERNS };
