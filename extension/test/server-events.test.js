// The side panel's view of server push events: load progress, loaded,
// unloaded with reasons, pull progress and low memory, turned into the text
// of the status area.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  PANEL_EVENTS,
  PULL_STALE_MS,
  applyEvent,
  describeActivity,
  dismissLowMemory,
  emptyActivity,
  expirePulls,
  settleLoad,
} from '../lib/server-events.js';

/** An event as the server pushes it. @param {string} event @param {Record<string, any>} [fields] */
const ev = (event, fields = {}) => ({ id: 7, response_type: 'Event', event, done: false, ...fields });

/**
 * Fold events in order.
 * @param {any[]} events
 * @param {{now?: number, chatModel?: string}} [ctx]
 */
function fold(events, ctx = {}) {
  return events.reduce((s, e) => applyEvent(s, e, { now: ctx.now ?? 0, chatModel: ctx.chatModel }), emptyActivity());
}

test('the panel subscribes to every event the server documents', () => {
  assert.deepEqual([...PANEL_EVENTS].sort(), ['LowMemory', 'ModelLoadProgress', 'ModelLoaded', 'ModelUnloaded', 'PullProgress']);
});

test('nothing going on: no text, no progress, no warning', () => {
  assert.deepEqual(describeActivity(emptyActivity()), { text: '', progress: null, warning: '' });
});

test('a load shows its progress and clears when the model is loaded', () => {
  const loading = fold([ev('ModelLoadProgress', { model: 'gemma', progress: 0 }), ev('ModelLoadProgress', { model: 'gemma', progress: 0.45 })]);
  assert.deepEqual(describeActivity(loading), { text: 'Loading gemma… 45%', progress: 0.45, warning: '' });
  const loaded = applyEvent(loading, ev('ModelLoaded', { model: 'gemma' }), { now: 0 });
  assert.equal(describeActivity(loaded).text, '');
  assert.equal(describeActivity(loading).text, 'Loading gemma… 45%', 'the old state is untouched');
});

test('progress outside 0..1 is clamped; an event without a model is ignored', () => {
  assert.equal(describeActivity(fold([ev('ModelLoadProgress', { model: 'm', progress: 1.7 })])).text, 'Loading m… 100%');
  const s = emptyActivity();
  assert.equal(applyEvent(s, ev('ModelLoadProgress', { progress: 0.5 }), { now: 0 }), s);
  assert.equal(applyEvent(s, ev('SomethingNew'), { now: 0 }), s);
});

test('two loads at once are both listed, without a single progress bar', () => {
  const s = fold([ev('ModelLoadProgress', { model: 'a', progress: 0.1 }), ev('ModelLoadProgress', { model: 'b', progress: 0.5 })]);
  assert.deepEqual(describeActivity(s), { text: 'Loading a… 10% · Loading b… 50%', progress: null, warning: '' });
});

test('a failed load (no ModelLoaded) is cleared when its request ends', () => {
  const s = fold([ev('ModelLoadProgress', { model: 'big', progress: 0.2 })]);
  assert.equal(describeActivity(settleLoad(s, 'big')).text, '');
  assert.equal(settleLoad(s, 'other'), s);
});

test('the chat model unloaded for idleness or memory is noted until it loads again', () => {
  const idle = fold([ev('ModelUnloaded', { model: 'gemma', reason: 'idle' })], { chatModel: 'gemma' });
  assert.match(describeActivity(idle).text, /^gemma was unloaded after sitting idle/);
  const memory = fold([ev('ModelUnloaded', { model: 'gemma', reason: 'memory' })], { chatModel: 'gemma' });
  assert.match(describeActivity(memory).text, /^gemma was unloaded to free memory/);
  const again = applyEvent(memory, ev('ModelLoadProgress', { model: 'gemma', progress: 0 }), { now: 0 });
  assert.equal(describeActivity(again).text, 'Loading gemma… 0%');
  const back = applyEvent(again, ev('ModelLoaded', { model: 'gemma' }), { now: 0 });
  assert.equal(describeActivity(back).text, '', 'the note is gone once it is back');
});

test('unloads the user asked for, or of other models, are not noted', () => {
  assert.equal(describeActivity(fold([ev('ModelUnloaded', { model: 'gemma', reason: 'requested' })], { chatModel: 'gemma' })).text, '');
  assert.equal(describeActivity(fold([ev('ModelUnloaded', { model: 'embed', reason: 'idle' })], { chatModel: 'gemma' })).text, '');
});

test('an unload while loading stops the loading line', () => {
  const s = fold([ev('ModelLoadProgress', { model: 'gemma', progress: 0.5 }), ev('ModelUnloaded', { model: 'gemma', reason: 'replaced' })], { chatModel: 'gemma' });
  assert.equal(describeActivity(s).text, 'gemma was unloaded: a pull replaced its file');
});

test('pull progress shows bytes and percent, and ends when the file is complete', () => {
  const MB = 1024 * 1024;
  const s = fold([ev('PullProgress', { model: 'qwen', downloaded_bytes: 30 * MB, total_bytes: 120 * MB })]);
  assert.deepEqual(describeActivity(s), { text: 'Pulling qwen… 30 MB / 120 MB (25%)', progress: 0.25, warning: '' });
  const done = applyEvent(s, ev('PullProgress', { model: 'qwen', downloaded_bytes: 120 * MB, total_bytes: 120 * MB }), { now: 1 });
  assert.equal(describeActivity(done).text, '');
});

test('a pull of unknown size shows bytes only; a silent pull expires', () => {
  const s = fold([ev('PullProgress', { model: 'x', downloaded_bytes: 2048, total_bytes: null })], { now: 1000 });
  assert.deepEqual(describeActivity(s), { text: 'Pulling x… 2.0 KB', progress: null, warning: '' });
  assert.equal(expirePulls(s, 1000 + PULL_STALE_MS - 1), s);
  assert.equal(describeActivity(expirePulls(s, 1000 + PULL_STALE_MS)).text, '');
});

test('a load and a pull together share the line', () => {
  const s = fold([ev('ModelLoadProgress', { model: 'a', progress: 0.5 }), ev('PullProgress', { model: 'b', downloaded_bytes: 1, total_bytes: 4 })]);
  assert.equal(describeActivity(s).text, 'Loading a… 50% · Pulling b… 1 B / 4 B (25%)');
  assert.equal(describeActivity(s).progress, null);
});

test('low memory gives a warning until dismissed, whatever else goes on', () => {
  const GB = 1024 ** 3;
  const s = fold([ev('LowMemory', { available_bytes: 300 * 1024 * 1024, total_bytes: 8 * GB }), ev('ModelLoadProgress', { model: 'a', progress: 0.2 })]);
  const view = describeActivity(s);
  assert.equal(view.text, 'Loading a… 20%');
  assert.match(view.warning, /^Low memory: 300 MB of 8\.0 GB free\./);
  assert.equal(describeActivity(dismissLowMemory(s)).warning, '');
});
