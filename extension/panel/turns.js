// Regenerate and edit-and-resend. Every user message gets an "edit" link and
// the last answer a "regenerate" one. Both rewind the chat to a user turn
// (lib/chat.js: the server deletes that message and all later ones, so its
// history stays what the user sees), drop those messages from the list, and
// send the turn again, as it was (regenerate) or as edited.

import { chat, state } from './context.js';
import { sendTurn, setBusy } from './conversation.js';
import { errorText, notice, ui } from './ui.js';

/** @typedef {{system?: string, tag?: string, sources?: import('../lib/readers.js').RagHit[]}} TurnOpts */

/** @type {WeakMap<Element, TurnOpts>} user message -> the options its turn was sent with */
export const turnOptions = new WeakMap();

/** @returns {HTMLElement[]} */
function articles() {
  return [...ui.messages.querySelectorAll('article.msg')];
}

/** @returns {HTMLElement[]} */
function userArticles() {
  return articles().filter((a) => a.classList.contains('user'));
}

/**
 * @param {HTMLElement} article
 * @param {string} label
 * @param {string} title
 * @param {() => void} action
 */
function addControl(article, label, title, action) {
  let controls = article.querySelector('.turn-controls');
  if (!controls) {
    controls = document.createElement('div');
    controls.className = 'turn-controls';
    article.append(controls);
  }
  const button = document.createElement('button');
  button.type = 'button';
  button.className = `link ${label}`;
  button.textContent = label;
  button.title = title;
  button.addEventListener('click', action);
  controls.append(button);
}

/** Put the controls where they belong now (after a turn, or opening a chat). */
export function markTurns() {
  const all = articles();
  for (const a of all) a.querySelector('.turn-controls')?.remove();
  const users = userArticles();
  for (const a of users) addControl(a, 'edit', 'Edit this message and send it again (the later messages are replaced)', () => edit(a));
  const last = all.at(-1);
  if (users.length > 0 && last && !last.classList.contains('user')) {
    addControl(last, 'regenerate', 'Answer the last message again (this answer is replaced)', regenerate);
  }
}

async function regenerate() {
  const last = userArticles().at(-1);
  if (!last || state.busy) return;
  await resend(last, last.querySelector('.body')?.textContent ?? '');
}

/**
 * Rewind to `article`'s turn and send `input` in its place.
 * @param {HTMLElement} article
 * @param {string} input
 */
async function resend(article, input) {
  if (state.busy || !input.trim()) return;
  const index = userArticles().indexOf(article);
  setBusy(true);
  try {
    await chat.rewind(index);
    while (article.nextElementSibling) article.nextElementSibling.remove();
    article.remove();
    await sendTurn(input, turnOptions.get(article) ?? {});
  } catch (e) {
    notice(errorText(e));
  } finally {
    setBusy(false);
  }
}

/** @param {HTMLElement} article */
function edit(article) {
  const body = /** @type {HTMLElement | null} */ (article.querySelector('.body'));
  if (state.busy || !body || article.querySelector('.edit-box')) return;
  const box = document.createElement('div');
  box.className = 'edit-box';
  const area = document.createElement('textarea');
  area.rows = 3;
  area.value = body.textContent ?? '';
  const row = document.createElement('div');
  row.className = 'row';
  const spacer = document.createElement('span');
  spacer.className = 'spacer';
  const cancel = document.createElement('button');
  cancel.type = 'button';
  cancel.textContent = 'Cancel';
  const send = document.createElement('button');
  send.type = 'submit';
  send.className = 'resend';
  send.textContent = 'Send';
  row.append(spacer, cancel, send);
  box.append(area, row);
  body.hidden = true;
  article.append(box);
  area.focus();
  const close = () => {
    box.remove();
    body.hidden = false;
  };
  cancel.addEventListener('click', close);
  const go = () => {
    const text = area.value.trim();
    if (!text) return;
    close();
    resend(article, text);
  };
  send.addEventListener('click', go);
  area.addEventListener('keydown', (/** @type {KeyboardEvent} */ ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      go();
    } else if (ev.key === 'Escape') close();
  });
}
