// The side panel's knowledge base and backup section: upload files into a
// collection with send and indexing progress (IndexProgress events), the
// collections with their documents (delete either), the collections this
// chat answers from (kept per chat in chrome.storage.local), the citations
// under a grounded answer, and export / backup / restore buttons. It builds
// its own DOM inside #knowledge-body; the logic is lib/knowledge.js.

import {
  ACCEPTED_FILES,
  CollectionChoice,
  INDEX_PROGRESS,
  chunkSizeFor,
  citationLabel,
  describeProgress,
  receiveFile,
  restoreBackup,
  uploadDocument,
} from '../lib/knowledge.js';
import { Req } from '../lib/protocol.js';
import { chat, client, state } from './context.js';
import { errorText, notice } from './ui.js';

const STORAGE_KEY = 'chatCollections';

/** @param {string} tag @param {Record<string, any>} [props] @param {(Node | string)[]} [children] */
function el(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

const body = /** @type {HTMLElement | null} */ (document.getElementById('knowledge-body'));
let choice = new CollectionChoice();
/** @type {{name: string, documents: number, chunks: number, model?: string | null}[]} */
let collections = [];

/** The collections the current chat answers from. */
export function chosenCollections() {
  if (chat.sessionId) choice.adopt(chat.sessionId);
  return choice.get(chat.sessionId);
}

/**
 * The citations under a grounded answer: cited ones first-class, each with
 * its document, page and passage.
 * @param {HTMLElement} article
 * @param {any[]} citations
 */
export function showCitations(article, citations) {
  const cited = citations.filter((c) => c.cited);
  const details = el('details', { className: 'sources', open: cited.length > 0 });
  const label = cited.length ? `Sources: ${cited.map((c) => `[${c.index}]`).join(' ')}` : `${citations.length} passages searched (none cited)`;
  details.append(el('summary', { textContent: label }));
  const list = el('ol');
  for (const c of citations) {
    const text = String(c.text ?? '');
    list.append(
      el('li', { className: c.cited ? 'cited' : '' }, [
        `${citationLabel(c)}: `,
        el('span', { className: 'excerpt', textContent: text.length > 300 ? `${text.slice(0, 300)}…` : text }),
      ]),
    );
  }
  details.append(list);
  article.append(details);
}

// ---- the section ---------------------------------------------------------

const collectionInput = el('input', { type: 'text', placeholder: 'collection', value: 'documents', required: true });
collectionInput.setAttribute('list', 'knowledge-collections');
const names = el('datalist', { id: 'knowledge-collections' });
const fileInput = el('input', { type: 'file', multiple: true, accept: ACCEPTED_FILES });
const uploadButton = el('button', { type: 'submit', textContent: 'Upload' });
const uploads = el('ul', { className: 'knowledge-uploads' });
const list = el('ul', { className: 'knowledge-collections' });
const restoreInput = el('input', { type: 'file', accept: '.json,application/json', hidden: true });

/** upload id -> its row */
const rows = new Map();

/** @param {string} text */
function uploadRow(text) {
  const progress = el('progress', { max: 1, value: 0 });
  const label = el('span', { className: 'muted', textContent: text });
  const row = el('li', {}, [progress, ' ', label]);
  uploads.append(row);
  return { row, progress, label };
}

async function refreshCollections() {
  try {
    const reply = await client.request(Req.ListCollections);
    collections = Array.isArray(reply.collections) ? reply.collections : [];
  } catch (e) {
    list.replaceChildren(el('li', { className: 'muted', textContent: errorText(e) }));
    return;
  }
  choice.prune(collections.map((c) => c.name));
  names.replaceChildren(...collections.map((c) => el('option', { value: c.name })));
  renderCollections();
}

function renderCollections() {
  const chosen = new Set(chosenCollections());
  if (!collections.length) {
    list.replaceChildren(el('li', { className: 'muted', textContent: 'No collections yet: upload a PDF, Markdown, text or HTML file.' }));
    return;
  }
  list.replaceChildren(
    ...collections
      .filter((c) => !c.name.startsWith('page-')) // "ask about this page" keeps one per page
      .map((c) => {
        const use = el('input', { type: 'checkbox', checked: chosen.has(c.name), title: 'Answer this chat from it' });
        use.addEventListener('change', () => {
          const next = new Set(chosenCollections());
          if (use.checked) next.add(c.name);
          else next.delete(c.name);
          choice.set(chat.sessionId, [...next]);
          chrome.storage.local.set({ [STORAGE_KEY]: choice.toJSON() });
        });
        const docs = el('ul', { hidden: true });
        const show = el('button', { type: 'button', className: 'link', textContent: `${c.documents} docs` });
        show.addEventListener('click', () => toggleDocuments(c.name, docs));
        const drop = el('button', { type: 'button', className: 'link', textContent: 'delete', title: `Delete ${c.name} and its documents` });
        drop.addEventListener('click', async () => {
          if (!confirm(`Delete the collection “${c.name}” and its ${c.documents} documents?`)) return;
          await client.request(Req.ClearCollection, { collection: c.name }).catch((e) => notice(errorText(e)));
          refreshCollections();
        });
        return el('li', {}, [el('label', {}, [use, ` ${c.name} `]), el('span', { className: 'muted', textContent: `(${c.chunks} chunks) ` }), show, ' ', drop, docs]);
      }),
  );
}

/** @param {string} collection @param {HTMLElement} docs */
async function toggleDocuments(collection, docs) {
  docs.hidden = !docs.hidden;
  if (docs.hidden) return;
  try {
    const reply = await client.request(Req.ListDocuments, { collection });
    docs.replaceChildren(
      ...(reply.documents ?? []).map((/** @type {any} */ d) => {
        const drop = el('button', { type: 'button', className: 'link', textContent: 'delete' });
        drop.addEventListener('click', async () => {
          await client.request(Req.DeleteDocument, { collection, document_id: d.document_id }).catch((e) => notice(errorText(e)));
          refreshCollections();
        });
        const pages = d.metadata?.pages ? `, ${d.metadata.pages} pages` : '';
        return el('li', {}, [`${d.title ?? d.url ?? d.document_id} (${d.chunks} chunks${pages}) `, drop]);
      }),
    );
  } catch (e) {
    docs.replaceChildren(el('li', { className: 'muted', textContent: errorText(e) }));
  }
}

/** @param {SubmitEvent} ev */
async function onUpload(ev) {
  ev.preventDefault();
  const collection = collectionInput.value.trim();
  const files = [...(fileInput.files ?? [])];
  if (!collection || !files.length) return;
  uploadButton.disabled = true;
  try {
    for (const file of files) {
      const { row, progress, label } = uploadRow(`${file.name}: sending…`);
      try {
        const started = await uploadDocument(client, file, {
          collection,
          chunkSize: chunkSizeFor(state.upstream?.transport),
          onProgress: (p) => {
            progress.value = p.sent / p.total;
            label.textContent = `${file.name}: sent ${Math.round((100 * p.sent) / p.total)}%`;
          },
        });
        progress.removeAttribute('value'); // indexing: indeterminate until the first event
        label.textContent = `${file.name}: waiting to index…`;
        rows.set(String(started.upload_id), { row, progress, label });
      } catch (e) {
        label.textContent = `${file.name}: ${errorText(e)}`;
      }
    }
  } finally {
    uploadButton.disabled = false;
    fileInput.value = '';
  }
}

/** @param {any} ev */
function onIndexProgress(ev) {
  const row = rows.get(String(ev.upload_id));
  if (!row) return;
  row.label.textContent = describeProgress(ev);
  if (ev.state === 'embedding' && ev.chunks) row.progress.value = ev.chunk / ev.chunks;
  if (ev.state === 'done' || ev.state === 'failed') {
    row.progress.value = ev.state === 'done' ? 1 : 0;
    rows.delete(String(ev.upload_id));
    refreshCollections();
  }
}

/** @param {{bytes: Uint8Array, filename: string, contentType: string}} file */
function download(file) {
  const url = URL.createObjectURL(new Blob([/** @type {BlobPart} */ (file.bytes)], { type: file.contentType }));
  const a = el('a', { href: url, download: file.filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** @param {'markdown' | 'json'} format */
async function exportChat(format) {
  if (!chat.sessionId) return notice('Nothing to export yet: this chat has no messages.');
  try {
    download(await receiveFile(client, Req.ExportSession, { session_id: chat.sessionId, format }));
  } catch (e) {
    notice(`export: ${errorText(e)}`);
  }
}

async function backup() {
  try {
    const file = await receiveFile(client, Req.Backup);
    download(file);
    notice(`Backed up ${file.complete.sessions} chats, ${file.complete.messages} messages, ${file.complete.collections} collections.`);
  } catch (e) {
    notice(`backup: ${errorText(e)}`);
  }
}

async function restore() {
  const file = restoreInput.files?.[0];
  restoreInput.value = '';
  if (!file) return;
  if (!confirm(`Restore ${file.name}? Chats and documents in it replace the ones with the same id or URL; everything else stays.`)) return;
  try {
    const done = await restoreBackup(client, file, { chunkSize: chunkSizeFor(state.upstream?.transport) });
    const documents = done.documents ? `, ${done.documents} documents` : '';
    notice(`Restored ${done.sessions} chats (${done.messages} messages)${documents}${done.settings ? ' and the settings' : ''}.`);
    refreshCollections();
  } catch (e) {
    notice(`restore: ${errorText(e)} (nothing was changed)`);
  }
}

/** @param {string} text @param {() => void} onClick */
const button = (text, onClick) => {
  const b = el('button', { type: 'button', textContent: text });
  b.addEventListener('click', onClick);
  return b;
};

async function start() {
  if (!body) return;
  const form = el('form', { className: 'row' }, [collectionInput, names, fileInput, uploadButton]);
  form.addEventListener('submit', onUpload);
  restoreInput.addEventListener('change', restore);
  const backupRow = el('div', { className: 'row' }, [
    button('Export chat (.md)', () => exportChat('markdown')),
    button('Export chat (.json)', () => exportChat('json')),
    button('Back up all', backup),
    button('Restore…', () => restoreInput.click()),
    restoreInput,
  ]);
  body.append(form, uploads, el('p', { className: 'muted', textContent: 'Collections (checked: this chat answers from them, with citations)' }), list, backupRow);
  const saved = await chrome.storage.local.get(STORAGE_KEY);
  choice = new CollectionChoice(/** @type {Record<string, string[]>} */ (saved[STORAGE_KEY] ?? {}));
  client.subscribe([INDEX_PROGRESS], onIndexProgress).catch(() => {});
  document.getElementById('knowledge')?.addEventListener('toggle', () => refreshCollections());
  document.getElementById('new-chat')?.addEventListener('click', () => setTimeout(renderCollections));
}

start();
