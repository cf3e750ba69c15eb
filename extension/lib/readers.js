// Tolerant readers for the server's replies, for the UI. Field names may
// still shift on the server; each reader accepts the names it might
// reasonably get and returns one plain shape, so the views never poke at raw
// replies. Also small formatting helpers (bytes, times).

/**
 * @typedef {import('./protocol.js').Envelope} Envelope
 * @typedef {{id: string, kind: string, format: string, sizeBytes: number, loaded: boolean}} ModelEntry
 * @typedef {{id: string, title: string, updatedAt: number | null, count: number | null}} SessionEntry
 * @typedef {{role: string, content: string}} HistoryMessage
 * @typedef {{text: string, score: number | null, documentId: string, url: string, title: string, start: number | null, end: number | null}} RagHit
 */

/** @param {unknown} v */
const str = (v) => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : '');

/** @param {unknown} v */
const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v)) ? Number(v) : null);

/**
 * @param {Envelope} reply
 * @param {string[]} keys
 * @returns {any[]}
 */
function listOf(reply, keys) {
  for (const k of keys) if (Array.isArray(reply?.[k])) return reply[k];
  return [];
}

/**
 * A timestamp as milliseconds: ISO strings, unix seconds or unix milliseconds.
 * @param {unknown} v
 * @returns {number | null}
 */
export function readTime(v) {
  const n = num(v);
  if (n !== null) return n < 1e12 ? n * 1000 : n;
  if (typeof v === 'string') {
    const t = Date.parse(v);
    return Number.isNaN(t) ? null : t;
  }
  return null;
}

/**
 * ListModels -> ModelList
 * @param {Envelope} reply
 * @returns {ModelEntry[]}
 */
export function readModels(reply) {
  return listOf(reply, ['models', 'data', 'items'])
    .map((m) => ({
      id: str(m?.id ?? m?.name ?? m?.model),
      kind: str(m?.kind) || 'chat',
      format: str(m?.format),
      sizeBytes: num(m?.size_bytes ?? m?.size) ?? 0,
      loaded: m?.loaded === true || m?.status === 'loaded',
    }))
    .filter((m) => m.id !== '');
}

/**
 * ListSessions, newest first when the server says when.
 * @param {Envelope} reply
 * @returns {SessionEntry[]}
 */
export function readSessions(reply) {
  const sessions = listOf(reply, ['sessions', 'items', 'data'])
    .map((s) => ({
      id: str(s?.session_id ?? s?.id),
      title: str(s?.title ?? s?.preview ?? s?.first_message ?? s?.summary).trim(),
      updatedAt: readTime(s?.updated_at ?? s?.last_message_at ?? s?.last_active ?? s?.created_at),
      count: num(s?.message_count ?? s?.messages_count ?? s?.count ?? s?.messages),
    }))
    .filter((s) => s.id !== '');
  if (sessions.every((s) => s.updatedAt !== null)) {
    sessions.sort((a, b) => /** @type {number} */ (b.updatedAt) - /** @type {number} */ (a.updatedAt));
  }
  return sessions;
}

/**
 * @typedef {{messageId: number | null, role: string, snippet: string}} SearchMatch
 * @typedef {SessionEntry & {matches: SearchMatch[]}} SearchHit
 */

/**
 * SearchHistory -> sessions, best match first as the server ranked them.
 * @param {Envelope} reply
 * @returns {SearchHit[]}
 */
export function readHistorySearch(reply) {
  return listOf(reply, ['sessions', 'results'])
    .map((s) => ({
      id: str(s?.session_id ?? s?.id),
      title: str(s?.title).trim(),
      updatedAt: readTime(s?.updated_at),
      count: num(s?.messages ?? s?.message_count),
      matches: (Array.isArray(s?.matches) ? s.matches : [])
        .map((/** @type {any} */ m) => ({ messageId: num(m?.message_id), role: str(m?.role), snippet: str(m?.snippet ?? m?.text) }))
        .filter((/** @type {SearchMatch} */ m) => m.snippet !== ''),
    }))
    .filter((s) => s.id !== '');
}

/**
 * Case-insensitive filter on title and id; every word must match.
 * @param {SessionEntry[]} sessions
 * @param {string} query
 */
export function filterSessions(sessions, query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  if (words.length === 0) return sessions;
  return sessions.filter((s) => {
    const hay = `${s.title}\n${s.id}`.toLowerCase();
    return words.every((w) => hay.includes(w));
  });
}

/**
 * ChatHistory -> messages in chronological order: by their timestamps when
 * every message has one, else as sent (`order` 'desc' = the server sent newest first).
 * @param {Envelope} reply
 * @param {'asc' | 'desc'} [order]
 * @returns {HistoryMessage[]}
 */
export function readHistory(reply, order = 'asc') {
  const raw = listOf(reply, ['messages', 'history', 'items']);
  const msgs = raw.map((m, i) => ({
    role: str(m?.role) || 'assistant',
    content: str(m?.content ?? m?.text),
    at: readTime(m?.created_at ?? m?.timestamp ?? m?.time),
    i,
  }));
  if (msgs.length > 0 && msgs.every((m) => m.at !== null)) {
    // timestamps decide, whatever order the server used (ties keep its order)
    msgs.sort((a, b) => /** @type {number} */ (a.at) - /** @type {number} */ (b.at) || (order === 'desc' ? b.i - a.i : a.i - b.i));
  } else if (order === 'desc') {
    msgs.reverse();
  }
  return msgs.filter((m) => m.content !== '').map(({ role, content }) => ({ role, content }));
}

/**
 * RagQuery -> hits, best first as the server sent them.
 * @param {Envelope} reply
 * @returns {RagHit[]}
 */
export function readHits(reply) {
  return listOf(reply, ['hits', 'results', 'matches'])
    .map((h) => ({
      text: str(h?.text ?? h?.content ?? h?.chunk),
      score: num(h?.score ?? h?.similarity),
      documentId: str(h?.document_id ?? h?.doc_id),
      url: str(h?.url),
      title: str(h?.title),
      start: num(h?.start),
      end: num(h?.end),
    }))
    .filter((h) => h.text !== '');
}

/**
 * The whole text of a final generation reply.
 * @param {Envelope} final
 */
export function finalText(final) {
  return str(final?.text ?? final?.output_text ?? final?.content ?? final?.message?.content);
}

/**
 * One line for the status bar from a Health reply.
 * @param {Envelope | null | undefined} reply
 */
export function describeHealth(reply) {
  if (!reply) return 'unknown';
  const parts = [str(reply.status) || 'ok'];
  const version = str(reply.version);
  if (version) parts.push(`v${version}`);
  const loaded = reply.loaded_models ?? reply.models_loaded ?? reply.models;
  if (Array.isArray(loaded) && loaded.length > 0) parts.push(loaded.map((m) => str(m?.id ?? m)).join(', '));
  return parts.join(' · ');
}

/** @param {number} n */
export function formatBytes(n) {
  if (!Number.isFinite(n) || n <= 0) return '0 B';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1024)));
  const v = n / 1024 ** i;
  return `${v >= 10 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

/**
 * @param {number | null} ms
 * @param {number} [now]
 */
export function formatWhen(ms, now = Date.now()) {
  if (ms === null) return '';
  const d = new Date(ms);
  const sameDay = new Date(now).toDateString() === d.toDateString();
  return sameDay ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : d.toLocaleDateString();
}

/**
 * A search snippet cut into plain and matching parts, for highlighting
 * without HTML: each word of `query` matches case-insensitively at the start
 * of a word (the server matches words by prefix too).
 * @param {string} text
 * @param {string} query
 * @returns {{text: string, match: boolean}[]}
 */
export function highlightParts(text, query) {
  const words = query
    .split(/[^\p{L}\p{N}]+/u)
    .filter(Boolean)
    .map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
    .sort((a, b) => b.length - a.length);
  if (words.length === 0) return text ? [{ text, match: false }] : [];
  const pattern = new RegExp(`(?<![\\p{L}\\p{N}])(?:${words.join('|')})`, 'giu');
  /** @type {{text: string, match: boolean}[]} */
  const parts = [];
  let at = 0;
  for (const m of text.matchAll(pattern)) {
    const start = /** @type {number} */ (m.index);
    if (start > at) parts.push({ text: text.slice(at, start), match: false });
    parts.push({ text: m[0], match: true });
    at = start + m[0].length;
  }
  if (at < text.length) parts.push({ text: text.slice(at), match: false });
  return parts;
}
