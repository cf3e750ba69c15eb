// One turn of the conversation: send the input and stream the reply into a
// new message (rendered as markdown as it arrives) with its speed line and
// context-usage meter, the busy state of the composer, and "ask about this
// page" (index the page's text, search it, and answer with cited excerpts).

import {
  RAG_TOP_K,
  buildRagSystemPrompt,
  citedIndexes,
  collectionForUrl,
  pageTextLimit,
  readActiveTab,
  truncateUtf8,
} from '../lib/page-context.js';
import { Req } from '../lib/protocol.js';
import { readHits } from '../lib/readers.js';
import { speedLine } from '../lib/speed.js';
import { settleActivity } from './activity.js';
import { chat, client, rendererReady, state } from './context.js';
import { showContextMeter } from './chat-settings.js';
import { refreshHistory } from './history.js';
import { chosenCollections, showCitations } from './knowledge.js';
import { addMessage, scrollToEnd, showSources } from './messages.js';
import { markTurns, turnOptions } from './turns.js';
import { errorText, notice, ui } from './ui.js';

/** @typedef {import('../lib/readers.js').RagHit} RagHit */

/** collection -> fingerprint of the text last indexed there */
const indexed = new Map();

/** @param {boolean} on */
export function setBusy(on) {
  state.busy = on;
  ui.send.disabled = on;
  ui.askPage.disabled = on;
  ui.stop.disabled = !on;
}

/**
 * Send one turn and stream its reply into a new message.
 * @param {string} input
 * @param {{system?: string, tag?: string, sources?: RagHit[]}} [opts]
 */
export async function sendTurn(input, opts = {}) {
  const renderer = await rendererReady;
  turnOptions.set(addMessage('user', input, { tag: opts.tag }).article, opts);
  const model = ui.modelSelect.value || undefined;
  if (model && chat.settings.model !== model) await chat.setSettings({ model });
  const { article, body } = addMessage('assistant', '', { who: model ?? 'tabagent' });
  body.classList.add('pending');
  let finished = false;
  let frame = 0;
  let latest = '';
  const started = performance.now();
  /** @type {number | null} */
  let first = null;
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
      ...(opts.sources ? {} : { collections: chosenCollections() }),
      onDelta: (_delta, text) => {
        first ??= performance.now();
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
    const speed = speedLine({ start: started, first, end: performance.now(), tokens });
    foot.textContent = [why, speed].filter(Boolean).join(' · ');
    const copy = document.createElement('button');
    copy.type = 'button';
    copy.className = 'link copy';
    copy.textContent = 'copy';
    copy.title = 'Copy the answer (markdown)';
    copy.addEventListener('click', () => navigator.clipboard.writeText(result.text).then(() => (copy.textContent = 'copied'), () => (copy.textContent = 'copy failed')));
    foot.append(' ', copy);
    article.append(foot);
    if (model) void showContextMeter(article, model, result.usage);
    if (opts.sources) showSources(article, opts.sources, citedIndexes(result.text, opts.sources.length));
    if (result.citations) showCitations(article, result.citations);
  } catch (e) {
    finished = true;
    body.classList.remove('pending');
    article.classList.add('error');
    body.classList.add('plain');
    body.textContent = [latest, errorText(e)].filter(Boolean).join('\n\n');
  } finally {
    settleActivity(model); // the first message auto-loads the model; a failed load sends no event
    markTurns();
    scrollToEnd();
    if (!ui.history.hidden) refreshHistory();
  }
}

/** @param {SubmitEvent | null} ev */
export async function onSend(ev) {
  ev?.preventDefault();
  const input = ui.input.value.trim();
  if (!input || state.busy) return;
  ui.input.value = '';
  setBusy(true);
  try {
    await sendTurn(input);
  } finally {
    setBusy(false);
    ui.input.focus();
  }
}

export async function askAboutPage() {
  if (state.busy) return;
  const question = ui.input.value.trim() || 'Summarise this page.';
  setBusy(true);
  try {
    notice('Reading the page…');
    const page = await readActiveTab(chrome);
    const { text, truncated } = truncateUtf8(page.text, pageTextLimit(state.upstream?.transport ?? null));
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
