// Chat history kept by the server: the list (searchable), opening a past
// chat into the message list, deleting one, starting a new chat, and showing
// or hiding the history panel.

import { Req } from '../lib/protocol.js';
import { filterSessions, formatWhen, readHistory, readSessions } from '../lib/readers.js';
import { chat, client, rendererReady, state } from './context.js';
import { addMessage, clearMessages } from './messages.js';
import { errorText, notice, ui } from './ui.js';

/** @typedef {import('../lib/readers.js').SessionEntry} SessionEntry */

/** @type {SessionEntry[]} */
let sessions = [];

export async function refreshHistory() {
  try {
    sessions = readSessions(await client.request(Req.ListSessions));
  } catch (e) {
    ui.historyList.replaceChildren(listNote(`history: ${errorText(e)}`));
    return;
  }
  renderHistory();
}

/** @param {string} text */
function listNote(text) {
  const li = document.createElement('li');
  li.className = 'muted';
  li.textContent = text;
  return li;
}

export function renderHistory() {
  const shown = filterSessions(sessions, ui.historySearch.value);
  ui.historyList.replaceChildren();
  if (shown.length === 0) ui.historyList.append(listNote(sessions.length ? 'no chat matches' : 'no chats yet'));
  for (const s of shown) {
    const li = document.createElement('li');
    if (s.id === chat.sessionId) li.className = 'current';
    const title = document.createElement('span');
    title.className = 'title';
    title.textContent = s.title || 'Untitled chat';
    title.title = s.title || s.id;
    title.addEventListener('click', () => openSession(s.id));
    const when = document.createElement('span');
    when.className = 'when muted';
    when.textContent = [formatWhen(s.updatedAt), s.count ? `${s.count} msgs` : ''].filter(Boolean).join(' · ');
    const del = document.createElement('button');
    del.type = 'button';
    del.textContent = '✕';
    del.title = 'Delete this chat';
    del.addEventListener('click', () => deleteSession(s));
    li.append(title, when, del);
    ui.historyList.append(li);
  }
}

/** @param {string} sessionId */
async function openSession(sessionId) {
  if (state.busy) return;
  try {
    const messages = readHistory(await client.request(Req.ChatHistory, { session_id: sessionId, limit: 500 }));
    const renderer = await rendererReady;
    chat.open(sessionId, messages);
    clearMessages();
    for (const m of messages) {
      if (m.role === 'system') continue;
      if (m.role === 'user') addMessage('user', m.content);
      else renderer.render(addMessage('assistant', '').body, m.content, true);
    }
    renderHistory();
  } catch (e) {
    notice(`open: ${errorText(e)}`);
  }
}

/** @param {SessionEntry} s */
async function deleteSession(s) {
  if (!confirm(`Delete "${s.title || 'Untitled chat'}"? This cannot be undone.`)) return;
  try {
    await client.request(Req.DeleteSession, { session_id: s.id });
    if (s.id === chat.sessionId) newChat();
  } catch (e) {
    notice(`delete: ${errorText(e)}`);
  }
  await refreshHistory();
}

export function newChat() {
  if (state.busy) return;
  chat.reset();
  clearMessages();
  if (!ui.history.hidden) renderHistory();
  ui.input.focus();
}

export function toggleHistory() {
  ui.history.hidden = !ui.history.hidden;
  ui.historyToggle.setAttribute('aria-expanded', String(!ui.history.hidden));
  if (!ui.history.hidden) {
    ui.historySearch.focus();
    refreshHistory();
  }
}
