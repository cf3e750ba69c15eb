// Chat history kept by the server: the list, the search box (the server's
// full-text search over every message, `SearchHistory`, with the matching
// passages under each chat), opening a past chat into the message list
// (with its own model and parameters), deleting one, starting a new chat,
// and showing or hiding the history panel.

import { Req } from '../lib/protocol.js';
import { formatWhen, highlightParts, readHistory, readHistorySearch, readSessions } from '../lib/readers.js';
import { showChatSettings } from './chat-settings.js';
import { chat, client, rendererReady, state } from './context.js';
import { markTurns } from './turns.js';
import { addMessage, clearMessages } from './messages.js';
import { debounce, errorText, notice, ui } from './ui.js';

/**
 * @typedef {import('../lib/readers.js').SessionEntry} SessionEntry
 * @typedef {import('../lib/readers.js').SearchHit} SearchHit
 */

/** @type {SessionEntry[]} the list when nothing is searched */
let sessions = [];
/** the query whose results are shown ('' = the plain list) */
let shownQuery = '';
/** answers to older queries arriving late are dropped */
let searchSeq = 0;

export async function refreshHistory() {
  const query = ui.historySearch.value.trim();
  if (query) return search(query);
  shownQuery = '';
  try {
    sessions = readSessions(await client.request(Req.ListSessions));
  } catch (e) {
    ui.historyList.replaceChildren(listNote(`history: ${errorText(e)}`));
    return;
  }
  renderHistory();
}

/** The search box changed: search as the user types (debounced). */
export const onHistorySearch = debounce(() => refreshHistory(), 250);

/** @param {string} query */
async function search(query) {
  const seq = ++searchSeq;
  let hits;
  try {
    hits = readHistorySearch(await client.request(Req.SearchHistory, { query, limit: 50 }));
  } catch (e) {
    if (seq === searchSeq) ui.historyList.replaceChildren(listNote(`search: ${errorText(e)}`));
    return;
  }
  if (seq !== searchSeq) return;
  shownQuery = query;
  ui.historyList.replaceChildren();
  if (hits.length === 0) ui.historyList.append(listNote('no chat matches'));
  for (const hit of hits) {
    const li = entry(hit);
    li.classList.add('hit');
    for (const m of hit.matches) {
      const line = document.createElement('span');
      line.className = 'snippet muted';
      line.title = m.snippet;
      line.append(`${m.role === 'user' ? 'You' : 'tabagent'}: `);
      for (const part of highlightParts(m.snippet, query)) {
        if (!part.match) line.append(part.text);
        else {
          const mark = document.createElement('mark');
          mark.textContent = part.text;
          line.append(mark);
        }
      }
      line.addEventListener('click', () => openSession(hit.id));
      li.append(line);
    }
    ui.historyList.append(li);
  }
}

/** @param {string} text */
function listNote(text) {
  const li = document.createElement('li');
  li.className = 'muted';
  li.textContent = text;
  return li;
}

/** @param {SessionEntry} s */
function entry(s) {
  const li = document.createElement('li');
  if (s.id === chat.sessionId) li.classList.add('current');
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
  return li;
}

export function renderHistory() {
  if (shownQuery) return refreshHistory();
  ui.historyList.replaceChildren();
  if (sessions.length === 0) ui.historyList.append(listNote('no chats yet'));
  for (const s of sessions) ui.historyList.append(entry(s));
}

/** @param {string} sessionId */
async function openSession(sessionId) {
  if (state.busy) return;
  try {
    const reply = await client.request(Req.ChatHistory, { session_id: sessionId, limit: 1000 });
    const messages = readHistory(reply);
    const renderer = await rendererReady;
    chat.open(sessionId, messages, reply.settings);
    showChatSettings();
    clearMessages();
    for (const m of messages) {
      if (m.role === 'system') continue;
      if (m.role === 'user') addMessage('user', m.content);
      else renderer.render(addMessage('assistant', '').body, m.content, true);
    }
    markTurns();
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
