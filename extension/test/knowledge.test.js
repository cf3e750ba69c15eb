// The knowledge base and backups over a fake server: a file sent in numbered
// base64 parts with its sha256 and progress, a failed part cancelling the
// upload, a file received in parts and checked, progress lines, citation
// labels, and the collections chosen per chat.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import { TabAgentClient } from '../lib/client.js';
import {
  CollectionChoice,
  chunkSizeFor,
  citationLabel,
  describeProgress,
  fromBase64,
  receiveFile,
  restoreBackup,
  toBase64,
  uploadDocument,
} from '../lib/knowledge.js';
import { WEBRTC_MAX_MESSAGE_BYTES } from '../lib/protocol.js';
import { FakeTransport } from './helpers/fakes.js';

/** @param {Uint8Array} bytes */
const sha = (bytes) => createHash('sha256').update(bytes).digest('hex');

/** @param {number} n */
const fileOf = (n, name = 'notes.md', type = 'text/markdown') => {
  const bytes = new Uint8Array(n).map((_, i) => (i * 7) % 251);
  return { bytes, file: { name, size: n, type, arrayBuffer: async () => bytes.slice().buffer } };
};

/** A server that keeps uploads like tabagent does (sizes checked, parts by index). */
function uploadServer() {
  /** @type {Map<string, {size: number, chunk: number, parts: Map<number, Uint8Array>, sha: string, purpose: string}>} */
  const uploads = new Map();
  /** @type {any[]} */
  const finished = [];
  const handlers = {
    UploadStart: (/** @type {any} */ m, /** @type {any} */ port) => {
      const id = `u${uploads.size + 1}`;
      uploads.set(id, { size: m.size, chunk: m.chunk_size, parts: new Map(), sha: m.sha256, purpose: m.purpose });
      port.deliver({ id: m.id, response_type: 'UploadStarted', upload_id: id, chunk_size: m.chunk_size, chunks: Math.ceil(m.size / m.chunk_size), done: true });
    },
    UploadChunk: (/** @type {any} */ m, /** @type {any} */ port) => {
      const up = uploads.get(m.upload_id);
      const data = fromBase64(m.data);
      if (!up || data.length !== Math.min(up.chunk, up.size - m.index * up.chunk)) {
        port.deliver({ id: m.id, response_type: 'Error', error: { status: 422, detail: 'bad chunk' }, done: true });
        return;
      }
      up.parts.set(m.index, data);
      port.deliver({ id: m.id, response_type: 'UploadChunkStored', upload_id: m.upload_id, index: m.index, done: true });
    },
    UploadFinish: (/** @type {any} */ m, /** @type {any} */ port) => {
      finished.push(uploads.get(m.upload_id));
      port.deliver({ id: m.id, response_type: 'IndexingStarted', upload_id: m.upload_id, job_id: '0123456789abcdef', done: true });
    },
    Restore: (/** @type {any} */ m, /** @type {any} */ port) => {
      finished.push(uploads.get(m.upload_id));
      port.deliver({ id: m.id, response_type: 'Restored', sessions: 2, messages: 5, done: true });
    },
    UploadCancel: (/** @type {any} */ m, /** @type {any} */ port) => {
      uploads.delete(m.upload_id);
      port.deliver({ id: m.id, response_type: 'UploadCancelled', upload_id: m.upload_id, done: true });
    },
  };
  /** @param {any} up */
  const joined = (up) => {
    const out = new Uint8Array(up.size);
    for (const [i, p] of up.parts) out.set(p, i * up.chunk);
    return out;
  };
  return { handlers, uploads, finished, joined };
}

test('a document goes up in numbered base64 parts with its hash, and indexing starts', async () => {
  const server = uploadServer();
  const native = new FakeTransport('native', { handlers: server.handlers });
  const client = new TabAgentClient({ transports: [native] });
  const { bytes, file } = fileOf(10_000);
  /** @type {number[]} */
  const progress = [];
  const started = await uploadDocument(client, file, { collection: 'notes', chunkSize: 4096, onProgress: (p) => progress.push(p.sent) });
  assert.equal(started.response_type, 'IndexingStarted');
  assert.deepEqual(progress, [4096, 8192, 10_000]);
  const start = native.port.sentOf('UploadStart')[0];
  assert.equal(start.collection, 'notes');
  assert.equal(start.purpose, 'document');
  assert.equal(start.content_type, 'text/markdown');
  assert.equal(start.sha256, sha(bytes));
  const up = server.finished[0];
  assert.deepEqual(server.joined(up), bytes);
  assert.deepEqual(native.port.sentOf('UploadChunk').map((m) => m.index), [0, 1, 2]);
  client.close();
});

test('a refused part cancels the upload, and files that are too big never start', async () => {
  const server = uploadServer();
  server.handlers.UploadChunk = (/** @type {any} */ m, /** @type {any} */ port) =>
    port.deliver({ id: m.id, response_type: 'Error', error: { status: 507, title: 'Insufficient storage', detail: 'the disk is full' }, done: true });
  const native = new FakeTransport('native', { handlers: server.handlers });
  const client = new TabAgentClient({ transports: [native] });
  await assert.rejects(uploadDocument(client, fileOf(5000).file, { collection: 'c', chunkSize: 4096 }), /disk is full/);
  assert.equal(native.port.sentOf('UploadCancel').length, 1);
  assert.equal(server.uploads.size, 0);
  const big = { name: 'big.pdf', size: 51 * 1024 * 1024, arrayBuffer: async () => new ArrayBuffer(0) };
  await assert.rejects(uploadDocument(client, big, { collection: 'c' }), /50 MiB/);
  client.close();
});

test('a backup is restored through a restore upload', async () => {
  const server = uploadServer();
  const native = new FakeTransport('native', { handlers: server.handlers });
  const client = new TabAgentClient({ transports: [native] });
  const restored = await restoreBackup(client, fileOf(3000, 'backup.json', 'application/json').file, { chunkSize: 4096 });
  assert.equal(restored.response_type, 'Restored');
  const start = native.port.sentOf('UploadStart')[0];
  assert.equal(start.purpose, 'restore');
  assert.equal(start.collection, undefined);
  client.close();
});

test('a file sent in parts is put together and checked against its sha256', async () => {
  const bytes = new Uint8Array(1500).map((_, i) => i % 256);
  const parts = [bytes.subarray(0, 1000), bytes.subarray(1000)];
  /** @param {string} digest */
  const backup = (digest) => (/** @type {any} */ m, /** @type {any} */ port) => {
    parts.forEach((p, index) => port.deliver({ id: m.id, response_type: 'FilePart', index, data: toBase64(p), done: false }));
    port.deliver({ id: m.id, response_type: 'FileComplete', filename: 'b.json', content_type: 'application/json', parts: 2, bytes: 1500, sha256: digest, done: true });
  };
  const native = new FakeTransport('native', { handlers: { Backup: backup(sha(bytes)), ExportSession: backup('0'.repeat(64)) } });
  const client = new TabAgentClient({ transports: [native] });
  const file = await receiveFile(client, 'Backup');
  assert.deepEqual(file.bytes, bytes);
  assert.equal(file.filename, 'b.json');
  await assert.rejects(receiveFile(client, 'ExportSession', { session_id: 's' }), /damaged/);
  client.close();
});

test('chunk sizes fit each transport, and base64 round-trips large buffers', () => {
  const rtc = chunkSizeFor('webrtc');
  assert.ok(Math.ceil(rtc / 3) * 4 + 1024 < WEBRTC_MAX_MESSAGE_BYTES, `${rtc}`);
  assert.equal(chunkSizeFor('native'), 512 * 1024);
  const big = new Uint8Array(200_000).map((_, i) => (i * 13) % 256);
  assert.deepEqual(fromBase64(toBase64(big)), big);
  assert.equal(toBase64(new Uint8Array([104, 105])), Buffer.from('hi').toString('base64'));
});

test('progress lines, citation labels and collections per chat', () => {
  assert.equal(describeProgress({ filename: 'a.pdf', state: 'embedding', chunk: 3, chunks: 9 }), 'a.pdf: chunk 3 of 9');
  assert.match(describeProgress({ filename: 'a.pdf', state: 'failed', error: { detail: 'no text' } }), /failed — no text/);
  assert.equal(citationLabel({ index: 2, title: 'report.pdf', page: 4 }), '[2] report.pdf, p. 4');
  assert.equal(citationLabel({ index: 1, url: 'upload:x.md' }), '[1] upload:x.md');
  assert.equal(citationLabel({ index: 3, title: 'r.pdf', page: 1, page_end: 2 }), '[3] r.pdf, pp. 1–2');

  const choice = new CollectionChoice({ s1: ['a', 'b'] });
  assert.deepEqual(choice.get('s1'), ['a', 'b']);
  choice.set(null, ['c', 'c']);
  choice.adopt('s2');
  assert.deepEqual(choice.get('s2'), ['c']);
  choice.prune(['a', 'c']);
  assert.deepEqual(choice.get('s1'), ['a']);
  assert.deepEqual(JSON.parse(JSON.stringify(choice)), { s1: ['a'], '': ['c'], s2: ['c'] });
});
