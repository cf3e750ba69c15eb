// Tolerant readers and the pure parts of "ask about this page".

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { describeHealth, filterSessions, formatBytes, readHistory, readHits, readModels, readSessions, readTime } from '../lib/readers.js';
import { buildRagSystemPrompt, citedIndexes, collectionForUrl, pageTextLimit, truncateUtf8 } from '../lib/page-context.js';
import { parseSettings, normalizeServerUrl } from '../lib/settings.js';

test('readModels accepts the documented shape and tolerates variants', () => {
  const models = readModels({
    response_type: 'ModelList',
    models: [
      { id: 'gemma', format: 'gguf', kind: 'chat', size_bytes: 253113024, loaded: true },
      { name: 'minilm', kind: 'embedding' },
      { format: 'gguf' },
    ],
  });
  assert.deepEqual(models, [
    { id: 'gemma', kind: 'chat', format: 'gguf', sizeBytes: 253113024, loaded: true },
    { id: 'minilm', kind: 'embedding', format: '', sizeBytes: 0, loaded: false },
  ]);
  assert.deepEqual(readModels({}), []);
});

test('readSessions sorts newest first and filterSessions matches every word', () => {
  const s = readSessions({
    sessions: [
      { session_id: 'a', title: 'Rust lifetimes', updated_at: '2024-01-01T00:00:00Z', message_count: 4 },
      { id: 'b', preview: 'Cooking pasta', updated_at: 1735689600 },
    ],
  });
  assert.deepEqual(
    s.map((x) => x.id),
    ['b', 'a'],
  );
  assert.equal(s[1].count, 4);
  assert.deepEqual(
    filterSessions(s, 'RUST life').map((x) => x.id),
    ['a'],
  );
  assert.equal(filterSessions(s, '  ').length, 2);
});

test('readHistory, readHits and readTime', () => {
  assert.deepEqual(
    readHistory({ messages: [{ role: 'user', content: 'q' }, { role: 'assistant', text: 'a' }] }),
    [
      { role: 'user', content: 'q' },
      { role: 'assistant', content: 'a' },
    ],
  );
  assert.deepEqual(
    readHistory({ messages: [{ role: 'assistant', content: '2' }, { role: 'user', content: '1' }] }, 'desc').map((m) => m.content),
    ['1', '2'],
  );
  assert.deepEqual(
    readHistory({
      messages: [
        { role: 'assistant', content: 'second', created_at: '2024-01-01T00:00:02Z' },
        { role: 'user', content: 'first', created_at: '2024-01-01T00:00:01Z' },
      ],
    }).map((m) => m.content),
    ['first', 'second'],
    'timestamps win over the order received',
  );
  const hits = readHits({ hits: [{ text: 'chunk', score: 0.8, document_id: 'd1', url: 'u', title: 't', start: 0, end: 5 }, { text: '' }] });
  assert.deepEqual(hits, [{ text: 'chunk', score: 0.8, documentId: 'd1', url: 'u', title: 't', start: 0, end: 5 }]);
  assert.equal(readTime(1700000000), 1700000000000);
  assert.equal(readTime(1700000000000), 1700000000000);
  assert.equal(readTime('nope'), null);
});

test('describeHealth and formatBytes', () => {
  assert.equal(describeHealth({ status: 'ok', version: '0.1.0' }), 'ok · v0.1.0');
  assert.equal(describeHealth(null), 'unknown');
  assert.equal(formatBytes(253113024), '241 MB');
  assert.equal(formatBytes(1536), '1.5 KB');
});

test('truncateUtf8 never splits a character', () => {
  const text = 'aé€😀'; // 1 + 2 + 3 + 4 bytes
  assert.deepEqual(truncateUtf8(text, 100), { text, truncated: false });
  assert.deepEqual(truncateUtf8(text, 6), { text: 'aé€', truncated: true });
  assert.deepEqual(truncateUtf8(text, 5), { text: 'aé', truncated: true });
  assert.deepEqual(truncateUtf8(text, 9), { text: 'aé€', truncated: true });
  assert.ok(pageTextLimit('webrtc') < 262144);
  assert.ok(pageTextLimit('native') > 262144);
});

test('collectionForUrl is stable, short and ignores the fragment', () => {
  const a = collectionForUrl('https://example.com/a?x=1#top');
  assert.equal(a, collectionForUrl('https://example.com/a?x=1'));
  assert.notEqual(a, collectionForUrl('https://example.com/b'));
  assert.match(a, /^page-[0-9a-f]{8}$/);
});

test('the RAG prompt numbers the excerpts, and citations are read back', () => {
  const hits = [
    { text: 'Alpha fact.', score: 1, documentId: 'd', url: '', title: '', start: 0, end: 1 },
    { text: 'Beta fact.', score: 0.5, documentId: 'd', url: '', title: '', start: 2, end: 3 },
  ];
  const p = buildRagSystemPrompt({ basePrompt: 'Be kind.', title: 'T', url: 'https://x', hits });
  assert.ok(p.startsWith('Be kind.'));
  assert.match(p, /\[1\] Alpha fact\.\n\n\[2\] Beta fact\./);
  assert.match(p, /"T" \(https:\/\/x\)/);
  assert.deepEqual(citedIndexes('Alpha [1]. Both [1, 2]. Bogus [7].', 2), [1, 2]);
  assert.deepEqual(citedIndexes('nothing cited', 2), []);
});

test('settings fall back to defaults on bad input', () => {
  assert.deepEqual(parseSettings({ transport: 'carrier-pigeon', serverUrl: 'ftp://x', apiKey: 5 }), {
    transport: 'auto',
    serverUrl: 'http://127.0.0.1:8080',
    apiKey: '',
    systemPrompt: '',
    pageModel: '',
    keepLoaded: false,
  });
  assert.equal(parseSettings({ keepLoaded: true }).keepLoaded, true);
  assert.equal(parseSettings({ keepLoaded: 'yes' }).keepLoaded, false);
  assert.equal(normalizeServerUrl(' http://localhost:9000/ '), 'http://localhost:9000');
  assert.equal(normalizeServerUrl('http://127.0.0.1:8080/base/'), 'http://127.0.0.1:8080/base');
  assert.equal(normalizeServerUrl('javascript:alert(1)'), null);
});

test('chunk readers split text, reasoning and tool-call pieces', async () => {
  const { chunkText, chunkReasoning, chunkToolCalls } = await import('../lib/protocol.js');
  const chunk = {
    response_type: 'ChatChunk', delta: 'ok', reasoning: 'hmm',
    tool_calls: [{ index: 0, id: 'call_1', name: 'open_tab', arguments: '{"url"' }],
  };
  assert.equal(chunkText(chunk), 'ok');
  assert.equal(chunkReasoning(chunk), 'hmm');
  assert.deepEqual(chunkToolCalls(chunk)[0].name, 'open_tab');
  assert.equal(chunkReasoning({ delta: 'x' }), '');
  assert.deepEqual(chunkToolCalls({ delta: 'x' }), []);
});
