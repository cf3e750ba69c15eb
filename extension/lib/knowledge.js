// The knowledge base and backups, DOM-free: upload a file in numbered parts
// (UploadStart, UploadChunk..., then UploadFinish for a document or Restore
// for a backup), follow its indexing through IndexProgress events, receive a
// file the server sends in parts (Backup, ExportSession: FilePart chunks,
// then FileComplete with the sha256 of the whole), and describe progress and
// citations for the panel. Every transport carries the same envelopes; only
// the chunk size differs (a data channel message is at most 256 KiB).

import { Req, WEBRTC_MAX_MESSAGE_BYTES } from './protocol.js';

/** The server event that follows an uploaded document's indexing. */
export const INDEX_PROGRESS = 'IndexProgress';

/** Largest file the server takes. */
export const MAX_UPLOAD_BYTES = 50 * 1024 * 1024;

/** File kinds the server extracts text from, by extension. */
export const ACCEPTED_FILES = '.pdf,.md,.markdown,.txt,.text,.csv,.log,.html,.htm,application/pdf,text/markdown,text/plain,text/html';

/**
 * Bytes of file per UploadChunk for an upstream transport: 512 KiB over
 * native messaging, and over WebRTC what fits a data channel message once
 * in base64 (4/3 larger) with its envelope.
 * @param {string | null | undefined} transport
 */
export function chunkSizeFor(transport) {
  if (transport === 'webrtc') return Math.floor(((WEBRTC_MAX_MESSAGE_BYTES - 8 * 1024) * 3) / 4 / 4096) * 4096;
  return 512 * 1024;
}

/**
 * Base64 of bytes (standard alphabet, padded), without a stack-deep spread.
 * @param {Uint8Array} bytes
 */
export function toBase64(bytes) {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** @param {string} text */
export function fromBase64(text) {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** @param {Uint8Array} bytes */
export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', /** @type {BufferSource} */ (bytes)));
  return [...digest].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * @typedef {{request: (type: string, fields?: Record<string, any>, options?: {timeoutMs?: number}) => Promise<any>,
 *            stream: (type: string, fields?: Record<string, any>, options?: {timeoutMs?: number}) => AsyncIterable<any>}} KbClient
 * @typedef {{name: string, size: number, type?: string, arrayBuffer: () => Promise<ArrayBuffer>}} FileLike
 * @typedef {{sent: number, total: number}} SendProgress
 */

/**
 * Send a file in parts; resolves with the upload id once every part is
 * stored. `purpose` 'document' needs `collection`.
 * @param {KbClient} client
 * @param {FileLike} file
 * @param {{purpose?: 'document' | 'restore', collection?: string, chunkSize?: number, onProgress?: (p: SendProgress) => void}} opts
 */
export async function sendFile(client, file, opts) {
  if (file.size === 0) throw new Error(`${file.name} is empty`);
  if (file.size > MAX_UPLOAD_BYTES) throw new Error(`${file.name} is larger than 50 MiB`);
  const bytes = new Uint8Array(await file.arrayBuffer());
  const chunkSize = opts.chunkSize ?? 512 * 1024;
  const started = await client.request(Req.UploadStart, {
    purpose: opts.purpose ?? 'document',
    ...(opts.collection ? { collection: opts.collection } : {}),
    filename: file.name,
    ...(file.type ? { content_type: file.type } : {}),
    size: bytes.length,
    chunk_size: chunkSize,
    sha256: await sha256Hex(bytes),
  });
  const uploadId = String(started.upload_id);
  const chunks = Math.ceil(bytes.length / chunkSize);
  try {
    for (let index = 0; index < chunks; index++) {
      const part = bytes.subarray(index * chunkSize, (index + 1) * chunkSize);
      await client.request(Req.UploadChunk, { upload_id: uploadId, index, data: toBase64(part) }, { timeoutMs: 60_000 });
      opts.onProgress?.({ sent: Math.min((index + 1) * chunkSize, bytes.length), total: bytes.length });
    }
  } catch (e) {
    await client.request(Req.UploadCancel, { upload_id: uploadId }).catch(() => {});
    throw e;
  }
  return uploadId;
}

/**
 * Upload a document into a collection and start its indexing; resolves
 * with IndexingStarted (its `upload_id` matches the IndexProgress events).
 * @param {KbClient} client
 * @param {FileLike} file
 * @param {{collection: string, chunkSize?: number, onProgress?: (p: SendProgress) => void}} opts
 */
export async function uploadDocument(client, file, opts) {
  const uploadId = await sendFile(client, file, { ...opts, purpose: 'document' });
  return client.request(Req.UploadFinish, { upload_id: uploadId });
}

/**
 * Upload a backup file and restore it; resolves with Restored.
 * @param {KbClient} client
 * @param {FileLike} file
 * @param {{chunkSize?: number, onProgress?: (p: SendProgress) => void}} [opts]
 */
export async function restoreBackup(client, file, opts = {}) {
  const uploadId = await sendFile(client, file, { ...opts, purpose: 'restore' });
  return client.request(Req.Restore, { upload_id: uploadId }, { timeoutMs: 5 * 60_000 });
}

/**
 * Receive a file the server sends in parts (Backup, ExportSession), checked
 * against the sha256 its last reply names.
 * @param {KbClient} client
 * @param {string} type
 * @param {Record<string, any>} [fields]
 * @returns {Promise<{bytes: Uint8Array, filename: string, contentType: string, complete: any}>}
 */
export async function receiveFile(client, type, fields = {}) {
  /** @type {Uint8Array[]} */
  const parts = [];
  let complete = null;
  for await (const msg of client.stream(type, fields, { timeoutMs: 60_000 })) {
    if (msg.response_type === 'FilePart') {
      if (msg.index !== parts.length) throw new Error(`part ${msg.index} came out of order`);
      parts.push(fromBase64(msg.data));
    } else if (msg.done) {
      complete = msg;
    }
  }
  if (!complete || complete.response_type !== 'FileComplete') throw new Error('the file did not arrive whole');
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  if (bytes.length !== complete.bytes || (await sha256Hex(bytes)) !== complete.sha256) {
    throw new Error('the file arrived damaged (size or sha256 differ)');
  }
  return { bytes, filename: complete.filename, contentType: complete.content_type, complete };
}

/**
 * One line for an IndexProgress event.
 * @param {{filename: string, state: string, chunk?: number, chunks?: number, error?: {detail?: string}}} ev
 */
export function describeProgress(ev) {
  switch (ev.state) {
    case 'extracting':
      return `${ev.filename}: reading the text…`;
    case 'embedding':
      return `${ev.filename}: chunk ${ev.chunk ?? 0} of ${ev.chunks ?? '?'}`;
    case 'done':
      return `${ev.filename}: indexed (${ev.chunks ?? 0} chunks)`;
    case 'failed':
      return `${ev.filename}: failed — ${ev.error?.detail ?? 'unknown error'}`;
    default:
      return `${ev.filename}: ${ev.state}`;
  }
}

/**
 * The label of a citation: `[n] title, p. N`.
 * @param {{index: number, title?: string | null, url?: string | null, page?: number, page_end?: number}} c
 */
export function citationLabel(c) {
  const source = c.title || c.url || 'document';
  const pages = c.page && c.page_end && c.page_end > c.page ? `, pp. ${c.page}–${c.page_end}` : c.page ? `, p. ${c.page}` : '';
  return `[${c.index}] ${source}${pages}`;
}

/**
 * Collections chosen per chat, kept in storage by session id; the chat
 * not started yet is under ''.
 */
export class CollectionChoice {
  /** @type {Map<string, string[]>} */ #chosen = new Map();

  /** @param {Record<string, string[]>} [saved] */
  constructor(saved = {}) {
    for (const [k, v] of Object.entries(saved)) if (Array.isArray(v)) this.#chosen.set(k, v.map(String));
  }

  /** @param {string | null} session */
  get(session) {
    return this.#chosen.get(session ?? '') ?? [];
  }

  /**
   * @param {string | null} session
   * @param {string[]} collections
   */
  set(session, collections) {
    const unique = [...new Set(collections)].slice(0, 16);
    if (unique.length) this.#chosen.set(session ?? '', unique);
    else this.#chosen.delete(session ?? '');
  }

  /** A new chat got its id: it keeps what was chosen before its first turn. */
  /** @param {string} session */
  adopt(session) {
    const pending = this.#chosen.get('');
    if (pending && !this.#chosen.has(session)) this.#chosen.set(session, pending);
  }

  /** Drop collections that no longer exist. @param {string[]} existing */
  prune(existing) {
    const keep = new Set(existing);
    for (const [k, v] of this.#chosen) this.set(k, v.filter((c) => keep.has(c)));
  }

  toJSON() {
    return Object.fromEntries(this.#chosen);
  }
}
