// The server's activity under the status line: a model loading ("Loading
// gemma… 45%"), pulls under way, a remark when the chat model was unloaded,
// and a low-memory warning. It subscribes to the server's push events once;
// the page client sends the subscription again after any reconnect. The
// logic lives in lib/server-events.js; this file only keeps the state and
// draws it.

import { ServerEvent } from '../lib/protocol.js';
import {
  PANEL_EVENTS,
  PULL_STALE_MS,
  applyEvent,
  describeActivity,
  dismissLowMemory,
  emptyActivity,
  expirePulls,
  settleLoad,
} from '../lib/server-events.js';
import { client } from './context.js';
import { ui } from './ui.js';

/** @typedef {import('../lib/server-events.js').Activity} Activity */

/** @type {Activity} */
let activity = emptyActivity();
/** @type {ReturnType<typeof setTimeout> | undefined} */
let expiry;

/** @param {Activity} next */
function show(next) {
  activity = next;
  const view = describeActivity(activity);
  ui.activity.hidden = view.text === '';
  ui.activityText.textContent = view.text;
  ui.activityText.title = view.text;
  ui.activityProgress.hidden = view.progress === null;
  if (view.progress !== null) ui.activityProgress.value = view.progress;
  ui.memoryWarning.hidden = view.warning === '';
  ui.memoryText.textContent = view.warning;
}

/**
 * Subscribe to the server's events. `onModelsChanged` runs when a model was
 * loaded or unloaded (so the picker's ● marks follow).
 * @param {{onModelsChanged: () => void}} hooks
 */
export function watchServer({ onModelsChanged }) {
  ui.memoryDismiss.addEventListener('click', () => show(dismissLowMemory(activity)));
  return client
    .subscribe([...PANEL_EVENTS], (msg) => {
      show(applyEvent(activity, msg, { now: Date.now(), chatModel: ui.modelSelect.value }));
      if (msg.event === ServerEvent.ModelLoaded || msg.event === ServerEvent.ModelUnloaded) onModelsChanged();
      if (msg.event === ServerEvent.PullProgress) {
        // the server sends no end of a pull: forget one that went quiet
        clearTimeout(expiry);
        expiry = setTimeout(() => show(expirePulls(activity, Date.now())), PULL_STALE_MS + 100);
      }
    })
    .catch(() => {
      // refused: the panel works without it (an older server)
    });
}

/**
 * A request that may have loaded `model` has ended; a failed load sends no
 * event, so stop showing it as loading.
 * @param {string | undefined} model
 */
export function settleActivity(model) {
  if (model) show(settleLoad(activity, model));
}

/** The connection was lost: what was under way is unknown now (the server tells again on reconnect). */
export function resetActivity() {
  show(emptyActivity());
}
