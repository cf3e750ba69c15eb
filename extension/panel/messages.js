// The message list: adding a user, assistant or error message, the sources
// under a page answer, clearing, and keeping the newest message in view.

import { ui } from './ui.js';

/** @typedef {import('../lib/readers.js').RagHit} RagHit */

/**
 * @param {'user' | 'assistant' | 'error'} role
 * @param {string} text
 * @param {{tag?: string, who?: string}} [opts]
 */
export function addMessage(role, text, opts = {}) {
  ui.empty.hidden = true;
  const article = document.createElement('article');
  article.className = `msg ${role}`;
  const meta = document.createElement('div');
  meta.className = 'meta';
  meta.textContent = opts.who ?? (role === 'user' ? 'You' : role === 'error' ? 'Error' : 'tabagent');
  const body = document.createElement('div');
  body.className = 'body';
  if (role === 'user' || role === 'error') {
    body.classList.add('plain');
    body.textContent = text;
  }
  article.append(meta);
  if (opts.tag) {
    const tag = document.createElement('span');
    tag.className = 'tag';
    tag.textContent = opts.tag;
    article.append(tag);
  }
  article.append(body);
  ui.messages.append(article);
  scrollToEnd();
  return { article, body };
}

export function scrollToEnd() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

export function clearMessages() {
  ui.messages.replaceChildren(ui.empty);
  ui.empty.hidden = false;
}

/**
 * List the excerpts a page answer used; the ones it cites come first-class.
 * @param {HTMLElement} article
 * @param {RagHit[]} hits
 * @param {number[]} cited
 */
export function showSources(article, hits, cited) {
  const details = document.createElement('details');
  details.className = 'sources';
  details.open = cited.length > 0;
  const summary = document.createElement('summary');
  summary.textContent = cited.length > 0 ? `Sources: ${cited.map((i) => `[${i}]`).join(' ')}` : `${hits.length} excerpts searched (none cited)`;
  const list = document.createElement('ol');
  hits.forEach((h, i) => {
    const li = document.createElement('li');
    if (cited.includes(i + 1)) li.className = 'cited';
    const score = h.score === null ? '' : ` (score ${h.score.toFixed(2)})`;
    li.append(`${h.title || 'page'}${score}: `);
    const excerpt = document.createElement('span');
    excerpt.className = 'excerpt';
    excerpt.textContent = h.text.length > 300 ? `${h.text.slice(0, 300)}…` : h.text;
    li.append(excerpt);
    list.append(li);
  });
  details.append(summary, list);
  article.append(details);
}
