// The service worker's side of actions on what the user selects: the
// context menu (built-in actions and the user's templates, on a selection
// or on the page) and the keyboard command. A click opens the side panel
// for that tab (it must happen in the click's user gesture, so first) and
// leaves the prompt as the pending action of the tab's window, which that
// window's panel runs (panel/actions.js).

import { ASK_PAGE_COMMAND, BUILTIN_ACTIONS, TEMPLATES_KEY, actionPrompt, parseTemplates, pendingActionKey } from './actions.js';

const PARENT = 'tabagent';

/** @typedef {{id?: number, windowId?: number, title?: string, url?: string}} Tab */

/** @param {typeof chrome} chromeApi */
async function templates(chromeApi) {
  return parseTemplates((await chromeApi.storage.local.get(TEMPLATES_KEY))[TEMPLATES_KEY]);
}

/**
 * (Re)build the context menu.
 * @param {typeof chrome} chromeApi
 */
export async function buildMenus(chromeApi) {
  await chromeApi.contextMenus.removeAll();
  /** @type {[any, ...any[]]} the selection's menu, and the page's (then the action is about the page) */
  const contexts = ['selection', 'page'];
  chromeApi.contextMenus.create({ id: PARENT, title: 'tabagent', contexts });
  for (const a of [...BUILTIN_ACTIONS, ...(await templates(chromeApi))]) {
    chromeApi.contextMenus.create({ id: a.id, parentId: PARENT, title: a.title, contexts });
  }
}

/**
 * A menu click: open the panel, then leave it the prompt.
 * @param {typeof chrome} chromeApi
 * @param {{menuItemId: string | number, selectionText?: string}} info
 * @param {Tab | undefined} tab
 */
export async function runMenuAction(chromeApi, info, tab) {
  const opened = openPanel(chromeApi, tab);
  const action = actionPrompt(String(info.menuItemId), await templates(chromeApi), { selection: info.selectionText, pageTitle: tab?.title, url: tab?.url });
  if (!action) return null;
  const pending = { kind: 'prompt', prompt: action.prompt, title: action.title, at: Date.now() };
  await leave(chromeApi, tab, pending);
  await opened;
  return pending;
}

/**
 * The keyboard command: open the panel and ask about the page.
 * @param {typeof chrome} chromeApi
 * @param {string} command
 * @param {Tab | undefined} tab
 */
export async function runCommand(chromeApi, command, tab) {
  if (command !== ASK_PAGE_COMMAND) return;
  const opened = openPanel(chromeApi, tab);
  await leave(chromeApi, tab, { kind: 'page', at: Date.now() });
  await opened;
}

/**
 * Store the action for the panel of the tab's window (the last focused
 * window when the event names no tab).
 * @param {typeof chrome} chromeApi @param {Tab | undefined} tab @param {object} pending
 */
async function leave(chromeApi, tab, pending) {
  const windowId = tab?.windowId ?? (await chromeApi.windows.getLastFocused()).id;
  if (windowId === undefined) return;
  await chromeApi.storage.session.set({ [pendingActionKey(windowId)]: pending });
}

/** @param {typeof chrome} chromeApi @param {Tab | undefined} tab */
function openPanel(chromeApi, tab) {
  if (tab?.id === undefined) return Promise.resolve();
  return chromeApi.sidePanel.open({ tabId: tab.id }).catch((e) => console.warn('tabagent: could not open the side panel', e));
}
