// The side panel: status line, model picker (load, unload, pull with
// progress), streamed chat rendered as sanitised markdown, stop, system
// prompt, "ask about this page" with cited excerpts, and history kept by the
// server (list, search, open, delete). All traffic goes through the page's
// TabAgentClient to the service worker, which holds the real connection.

import { ChatController } from './lib/chat.js';
import { TabAgentError } from './lib/client.js';
import { loadRenderer } from './lib/markdown.js';
import {
  RAG_TOP_K,
  buildRagSystemPrompt,
  citedIndexes,
  collectionForUrl,
  pageTextLimit,
  readActiveTab,
  truncateUtf8,
} from './lib/page-context.js';
import { createPageClient } from './lib/page-client.js';
import { EVENT_CLIENT_STATUS, LocalReq, ModelKind, Req } from './lib/protocol.js';
import {
  describeHealth,
  filterSessions,
  formatBytes,
  formatWhen,
  readHistory,
  readHits,
  readModels,
  readSessions,
} from './lib/readers.js';
import { loadSettings, saveSettings } from './lib/settings.js';

/**
 * @typedef {import('./lib/client.js').ClientStatus} ClientStatus
 * @typedef {import('./lib/readers.js').RagHit} RagHit
 * @typedef {import('./lib/readers.js').SessionEntry} SessionEntry
 */

/** @param {string} id */
const $ = (id) => /** @type {any} */ (document.getElementById(id));

const ui = {
  statusDot: $('status-dot'),
  statusText: $('status-text'),
  retry: $('retry'),
  newChat: $('new-chat'),
  historyToggle: $('history-toggle'),
  openOptions: $('open-options'),
  modelSelect: /** @type {HTMLSelectElement} */ ($('model-select')),
  modelLoad: $('model-load'),
  modelUnload: $('model-unload'),
  modelRefresh: $('model-refresh'),
  pullForm: $('pull-form'),
  pullUrl: $('pull-url'),
  pullName: $('pull-name'),
  pullSha: $('pull-sha'),
  pullStart: $('pull-start'),
  pullProgress: $('pull-progress'),
  pullText: $('pull-text'),
  history: $('history'),
  historySearch: $('history-search'),
  historyList: $('history-list'),
  messages: $('messages'),
  empty: $('empty'),
  systemPrompt: $('system-prompt'),
  composer: $('composer'),
  input: /** @type {HTMLTextAreaElement} */ ($('input')),
  askPage: $('ask-page'),
  stop: $('stop'),
  send: $('send'),
  notice: $('notice'),
};

const client = createPageClient();
const chat = new ChatController(client);
const rendererReady = loadRenderer();
/** @type {SessionEntry[]} */
let sessions = [];
/** collection -> fingerprint of the text last indexed there */
const indexed = new Map();
/** @type {ClientStatus | null} */
let upstream = null;
let busy = false;

// ---- status line --------------------------------------------------------

/** @param {ClientStatus} status @param {string} [health] */
function showStatus(status, health) {
  upstream = status;
  ui.statusDot.dataset.state = status.state;
  let text;
  if (status.state === 'connected') {
    text = `${status.transport} · ${health ?? describeHealth(status.health)}`;
  } else if (status.state === 'backoff') {
    text = `reconnecting in ${Math.round((status.retryInMs ?? 0) / 1000)} s`;
  } else if (status.state === 'connecting') {
    text = 'connecting…';
  } else {
    text = status.lastError ? `offline: ${status.lastError}` : 'not connected';
  }
  ui.statusText.textContent = text;
  ui.statusText.title = status.lastError ?? text;
  ui.retry.hidden = status.state === 'connected' || status.state === 'connecting';
}

/** Ask the server for its health (connecting upstream if needed), then show where it came from. */
async function refreshStatus() {
  let health;
  try {
    health = describeHealth(await client.request(Req.Health, {}, { timeoutMs: 20_000 }));
  } catch (e) {
    ui.statusDot.dataset.state = 'error';
  }
  try {
    const reply = await client.request(LocalReq.ClientStatus, {}, { timeoutMs: 5_000 });
    showStatus(reply.status, health);
  } catch (e) {
    ui.statusDot.dataset.state = 'error';
    ui.statusText.textContent = `extension error: ${errorText(e)}`;
    ui.retry.hidden = false;
  }
}

async function retry() {
  ui.statusText.textContent = 'connecting…';
  ui.statusDot.dataset.state = 'connecting';
  try {
    await client.request(LocalReq.Reconnect, {}, { timeoutMs: 30_000 });
  } catch {
    // shown by refreshStatus
  }
  await refreshStatus();
  await refreshModels();
}

// ---- models -------------------------------------------------------------

async function refreshModels() {
  let models;
  try {
    models = readModels(await client.request(Req.ListModels));
  } catch (e) {
    notice(`models: ${errorText(e)}`);
    return;
  }
  const { model: saved } = await chrome.storage.local.get('model');
  const previous = ui.modelSelect.value || saved;
  ui.modelSelect.replaceChildren();
  const chatModels = models.filter((m) => m.kind === ModelKind.Chat);
  const others = models.filter((m) => m.kind !== ModelKind.Chat);
  if (chatModels.length === 0) ui.modelSelect.append(new Option('(no chat model — pull one below)', ''));
  for (const m of chatModels) {
    const label = `${m.loaded ? '● ' : ''}${m.id}${m.sizeBytes ? ` (${formatBytes(m.sizeBytes)})` : ''}`;
    ui.modelSelect.append(new Option(label, m.id));
  }
  if (others.length > 0) {
    const group = document.createElement('optgroup');
    group.label = 'embedding / rerank';
    for (const m of others) {
      const o = new Option(`${m.loaded ? '● ' : ''}${m.id} (${m.kind})`, m.id);
      o.disabled = true;
      group.append(o);
    }
    ui.modelSelect.append(group);
  }
  const pick = chatModels.find((m) => m.id === previous) ?? chatModels.find((m) => m.loaded) ?? chatModels[0];
  if (pick) ui.modelSelect.value = pick.id;
}

/** @param {'LoadModel' | 'UnloadModel'} type */
async function loadOrUnload(type) {
  const model = ui.modelSelect.value;
  if (!model) return;
  const verb = type === Req.LoadModel ? 'Loading' : 'Unloading';
  notice(`${verb} ${model}…`);
  ui.modelLoad.disabled = ui.modelUnload.disabled = true;
  try {
    await client.request(type, { model }, { timeoutMs: 10 * 60_000 });
    notice(`${model}: ${type === Req.LoadModel ? 'loaded' : 'unloaded'}`);
  } catch (e) {
    notice(`${model}: ${errorText(e)}`);
  } finally {
    ui.modelLoad.disabled = ui.modelUnload.disabled = false;
  }
  await refreshModels();
  await refreshStatus();
}

/** @param {SubmitEvent} ev */
async function pull(ev) {
  ev.preventDefault();
  const url = ui.pullUrl.value.trim();
  if (!url) return;
  const fields = {
    url,
    ...(ui.pullName.value.trim() ? { model: ui.pullName.value.trim() } : {}),
    ...(ui.pullSha.value.trim() ? { sha256: ui.pullSha.value.trim().toLowerCase() } : {}),
  };
  ui.pullStart.disabled = true;
  ui.pullProgress.hidden = false;
  ui.pullProgress.removeAttribute('value'); // indeterminate until sizes arrive
  ui.pullText.textContent = 'starting…';
  try {
    for await (const msg of client.stream(Req.PullModel, fields, { timeoutMs: 120_000 })) {
      const done = Number(msg.downloaded_bytes ?? msg.downloaded ?? 0);
      const total = Number(msg.total_bytes ?? msg.total ?? 0);
      if (msg.done) {
        ui.pullText.textContent = `done${msg.model ? `: ${msg.model}` : ''}`;
        ui.pullProgress.value = 1;
      } else if (total > 0) {
        ui.pullProgress.value = done / total;
        ui.pullText.textContent = `${formatBytes(done)} / ${formatBytes(total)}`;
      } else if (done > 0) {
        ui.pullText.textContent = formatBytes(done);
      }
    }
    await refreshModels();
  } catch (e) {
    ui.pullText.textContent = errorText(e);
    ui.pullProgress.hidden = true;
  } finally {
    ui.pullStart.disabled = false;
  }
}

// ---- messages -----------------------------------------------------------

/**
 * @param {'user' | 'assistant' | 'error'} role
 * @param {string} text
 * @param {{tag?: string, who?: string}} [opts]
 */
function addMessage(role, text, opts = {}) {
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

function scrollToEnd() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function clearMessages() {
  ui.messages.replaceChildren(ui.empty);
  ui.empty.hidden = false;
}

/**
 * List the excerpts a page answer used; the ones it cites come first-class.
 * @param {HTMLElement} article
 * @param {RagHit[]} hits
 * @param {number[]} cited
 */
function showSources(article, hits, cited) {
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

/** @param {boolean} on */
function setBusy(on) {
  busy = on;
  ui.send.disabled = on;
  ui.askPage.disabled = on;
  ui.stop.disabled = !on;
}

/**
 * Send one turn and stream its reply into a new message.
 * @param {string} input
 * @param {{system?: string, tag?: string, sources?: RagHit[]}} [opts]
 */
async function sendTurn(input, opts = {}) {
  const renderer = await rendererReady;
  addMessage('user', input, { tag: opts.tag });
  const model = ui.modelSelect.value || undefined;
  const { article, body } = addMessage('assistant', '', { who: model ?? 'tabagent' });
  body.classList.add('pending');
  let finished = false;
  let frame = 0;
  let latest = '';
  const draw = () => {
    frame = 0;
    if (finished) return;
    renderer.render(body, latest, false);
    scrollToEnd();
  };
  try {
    const result = await chat.send({
      input,
      system: opts.system ?? (ui.systemPrompt.value.trim() || undefined),
      model,
      onDelta: (_delta, text) => {
        latest = text;
        if (!frame) frame = requestAnimationFrame(draw);
      },
    });
    finished = true;
    body.classList.remove('pending');
    renderer.render(body, result.text || '*(empty reply)*', true);
    const foot = document.createElement('div');
    foot.className = 'foot';
    const tokens = result.usage?.completion_tokens;
    const why = result.finishReason === 'stop' ? '' : result.finishReason === 'length' ? 'stopped at the token limit' : result.finishReason;
    foot.textContent = [why, tokens ? `${tokens} tokens` : ''].filter(Boolean).join(' · ');
    if (foot.textContent) article.append(foot);
    if (opts.sources) showSources(article, opts.sources, citedIndexes(result.text, opts.sources.length));
  } catch (e) {
    finished = true;
    body.classList.remove('pending');
    article.classList.add('error');
    body.classList.add('plain');
    body.textContent = [latest, errorText(e)].filter(Boolean).join('\n\n');
  } finally {
    scrollToEnd();
    if (!ui.history.hidden) refreshHistory();
  }
}

/** @param {SubmitEvent | null} ev */
async function onSend(ev) {
  ev?.preventDefault();
  const input = ui.input.value.trim();
  if (!input || busy) return;
  ui.input.value = '';
  setBusy(true);
  try {
    await sendTurn(input);
  } finally {
    setBusy(false);
    ui.input.focus();
  }
}

async function askAboutPage() {
  if (busy) return;
  const question = ui.input.value.trim() || 'Summarise this page.';
  setBusy(true);
  try {
    notice('Reading the page…');
    const page = await readActiveTab(chrome);
    const { text, truncated } = truncateUtf8(page.text, pageTextLimit(upstream?.transport ?? null));
    if (!text) throw new Error('this page has no readable text');
    const collection = collectionForUrl(page.url);
    const fingerprint = `${text.length}:${text.slice(0, 64)}:${text.slice(-64)}`;
    if (indexed.get(collection) !== fingerprint) {
      notice(`Indexing ${page.title || page.url}${truncated ? ' (truncated)' : ''}…`);
      await client.request(Req.ClearCollection, { collection }).catch(() => {
        // a new collection has nothing to clear
      });
      await client.request(Req.AddDocument, { collection, text, url: page.url, title: page.title }, { timeoutMs: 5 * 60_000 });
      indexed.set(collection, fingerprint);
    }
    notice('Searching the page…');
    const hits = readHits(await client.request(Req.RagQuery, { collection, query: question, top_k: RAG_TOP_K }));
    notice('');
    ui.input.value = '';
    const system = buildRagSystemPrompt({ basePrompt: ui.systemPrompt.value, title: page.title, url: page.url, hits });
    const where = page.selection ? 'the selection on' : '';
    await sendTurn(question, { system, sources: hits, tag: `about ${where} ${page.title || page.url}`.replace(/\s+/g, ' ') });
  } catch (e) {
    notice('');
    addMessage('error', errorText(e));
  } finally {
    setBusy(false);
  }
}

// ---- history ------------------------------------------------------------

async function refreshHistory() {
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

function renderHistory() {
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
  if (busy) return;
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

function newChat() {
  if (busy) return;
  chat.reset();
  clearMessages();
  if (!ui.history.hidden) renderHistory();
  ui.input.focus();
}

function toggleHistory() {
  ui.history.hidden = !ui.history.hidden;
  ui.historyToggle.setAttribute('aria-expanded', String(!ui.history.hidden));
  if (!ui.history.hidden) {
    ui.historySearch.focus();
    refreshHistory();
  }
}

// ---- helpers ------------------------------------------------------------

/** @param {string} text */
function notice(text) {
  ui.notice.textContent = text;
}

/** @param {unknown} e */
function errorText(e) {
  if (e instanceof TabAgentError) {
    if (e.type === 'unavailable') {
      return `tabagent is not reachable (${e.detail}). Install the native host (see the extension's README) or start the server and check its URL in Settings.`;
    }
    return e.message;
  }
  return e instanceof Error ? e.message : String(e);
}

/**
 * @param {() => void} fn
 * @param {number} ms
 */
function debounce(fn, ms) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let t;
  return () => {
    clearTimeout(t);
    t = setTimeout(fn, ms);
  };
}

// ---- wiring -------------------------------------------------------------

ui.composer.addEventListener('submit', onSend);
ui.input.addEventListener('keydown', (/** @type {KeyboardEvent} */ ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    onSend(null);
  } else if (ev.key === 'Escape' && busy) {
    chat.stop().catch(() => {});
  }
});
ui.stop.addEventListener('click', () => chat.stop().catch((e) => notice(`stop: ${errorText(e)}`)));
ui.askPage.addEventListener('click', askAboutPage);
ui.newChat.addEventListener('click', newChat);
ui.historyToggle.addEventListener('click', toggleHistory);
ui.historySearch.addEventListener('input', renderHistory);
ui.openOptions.addEventListener('click', () => chrome.runtime.openOptionsPage());
ui.retry.addEventListener('click', retry);
ui.modelRefresh.addEventListener('click', refreshModels);
ui.modelLoad.addEventListener('click', () => loadOrUnload(Req.LoadModel));
ui.modelUnload.addEventListener('click', () => loadOrUnload(Req.UnloadModel));
ui.modelSelect.addEventListener('change', () => chrome.storage.local.set({ model: ui.modelSelect.value }));
ui.pullForm.addEventListener('submit', pull);
ui.systemPrompt.addEventListener(
  'input',
  debounce(() => saveSettings(chrome.storage.local, { systemPrompt: ui.systemPrompt.value }), 400),
);

async function start() {
  setBusy(false);
  const settings = await loadSettings(chrome.storage.local);
  ui.systemPrompt.value = settings.systemPrompt;
  if (settings.systemPrompt) $('system').open = true;
  client
    .subscribe([EVENT_CLIENT_STATUS], (ev) => {
      const wasConnected = upstream?.state === 'connected';
      showStatus(ev.status);
      if (ev.status.state === 'connected' && !wasConnected) refreshModels();
    })
    .catch(() => {});
  await refreshStatus();
  await refreshModels();
  const renderer = await rendererReady;
  if (!renderer.rich) notice('Markdown is off: run `npm run build` in extension/ to copy the libraries.');
}

start();
// keep the status fresh (and the service worker awake) while the panel is open
setInterval(() => {
  if (document.visibilityState === 'visible' && !busy) refreshStatus();
}, 25_000);
