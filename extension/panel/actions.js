// Runs the action the service worker left for the side panel (a context
// menu prompt on the selection, or the keyboard command's "this page"):
// when the panel opens, and whenever a new one arrives while it is open.
// The answer streams into the conversation like any other turn.

import { PENDING_ACTION_KEY } from '../lib/actions.js';
import { askAboutPage, onSend } from './conversation.js';
import { state } from './context.js';
import { ui } from './ui.js';

/** Actions older than this are stale (the panel was not opened for them). */
const MAX_AGE_MS = 60_000;

async function runPending() {
  if (state.busy) return; // the current turn ends first; the action waits in storage
  /** @type {any} */
  const stored = (await chrome.storage.session.get(PENDING_ACTION_KEY))[PENDING_ACTION_KEY];
  if (!stored || typeof stored !== 'object') return;
  await chrome.storage.session.remove(PENDING_ACTION_KEY);
  if (Date.now() - Number(stored.at) > MAX_AGE_MS) return;
  if (stored.kind === 'page') {
    await askAboutPage();
  } else if (typeof stored.prompt === 'string' && stored.prompt) {
    ui.input.value = stored.prompt;
    await onSend(null);
  }
}

/** Start watching for actions. */
export function watchActions() {
  chrome.storage.session.onChanged.addListener((changes) => {
    if (changes[PENDING_ACTION_KEY]?.newValue) runPending();
  });
  return runPending();
}
