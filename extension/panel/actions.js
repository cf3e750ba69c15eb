// Runs the action the service worker left for this window's side panel (a
// context menu prompt on the selection, or the keyboard command's "this
// page"): when the panel opens, and whenever a new one arrives while it is
// open. The answer streams into the conversation like any other turn.

import { pendingActionKey } from '../lib/actions.js';
import { askAboutPage, onSend } from './conversation.js';
import { state } from './context.js';
import { ui } from './ui.js';

/** Actions older than this are stale (the panel was not opened for them). */
const MAX_AGE_MS = 60_000;

/** @param {string} key this window's pending action */
async function runPending(key) {
  if (state.busy) return; // the current turn ends first; the action waits in storage
  /** @type {any} */
  const stored = (await chrome.storage.session.get(key))[key];
  if (!stored || typeof stored !== 'object') return;
  await chrome.storage.session.remove(key);
  if (Date.now() - Number(stored.at) > MAX_AGE_MS) return;
  if (stored.kind === 'page') {
    await askAboutPage();
  } else if (typeof stored.prompt === 'string' && stored.prompt) {
    ui.input.value = stored.prompt;
    await onSend(null);
  }
}

/** Start watching for this window's actions. */
export async function watchActions() {
  const { id } = await chrome.windows.getCurrent();
  if (id === undefined) return;
  const key = pendingActionKey(id);
  chrome.storage.session.onChanged.addListener((changes) => {
    if (changes[key]?.newValue) runPending(key);
  });
  return runPending(key);
}
