// The speed line under an answer.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { speedLine } from '../lib/speed.js';

test('time to first token, rate after it, and the count', () => {
  assert.equal(speedLine({ start: 1000, first: 1420, end: 3420, tokens: 41 }), 'first token 0.42 s · 20.0 tok/s · 41 tokens');
  assert.equal(speedLine({ start: 0, first: null, end: 10, tokens: 0 }), '');
  assert.equal(speedLine({ start: 0, first: 5, end: 5, tokens: 1 }), 'first token 0.01 s · 1 tokens');
});
