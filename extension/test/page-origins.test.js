// Which origins may use the page API and which content scripts that needs:
// origin parsing, the user's choices against the policy, and the dynamic
// registrations (loopback from the manifest, other sites only once their
// host permission is granted, page-replace.js only where opted in).

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { decide, enabledOrigins, normalizeOrigin, originPattern, parseManagedOrigins, parsePageAccess } from '../lib/page-origins.js';
import { SCRIPT_IDS, noteAsked, plannedScripts } from '../lib/page-sites.js';

test('origins are normalized; anything but http(s) and extensions is refused', () => {
  assert.equal(normalizeOrigin('https://Example.com/some/page?q=1'), 'https://example.com');
  assert.equal(normalizeOrigin('http://127.0.0.1:8123/x'), 'http://127.0.0.1:8123');
  assert.equal(normalizeOrigin('chrome-extension://abcdefghijklmnopabcdefghijklmnop/'), 'chrome-extension://abcdefghijklmnopabcdefghijklmnop');
  for (const bad of ['file:///etc/passwd', 'javascript:alert(1)', 'chrome-extension://nope', '', 42, null, 'not a url']) assert.equal(normalizeOrigin(bad), null, String(bad));
  assert.equal(originPattern('https://example.com'), 'https://example.com/*');
  assert.equal(originPattern('http://127.0.0.1:8123'), 'http://127.0.0.1:8123/*');
});

test('the policy enables origins the user did not; the user opts in to replacing per origin', () => {
  const access = parsePageAccess({
    'https://a.example/': { enabled: true, replace: true },
    'https://b.example': { enabled: false },
    'http://127.0.0.1:9000': { enabled: true },
    'ftp://bad': { enabled: true },
    'https://c.example': 'yes',
  });
  assert.deepEqual(Object.keys(access).sort(), ['http://127.0.0.1:9000', 'https://a.example', 'https://b.example']);
  const managed = parseManagedOrigins(['https://b.example', 'https://b.example/', 7, 'nonsense']);
  assert.deepEqual(managed, ['https://b.example']);
  assert.deepEqual(decide('https://a.example', access, managed), { enabled: true, replace: true, source: 'user' });
  assert.deepEqual(decide('https://b.example', access, managed), { enabled: true, replace: false, source: 'policy' });
  assert.deepEqual(decide('https://elsewhere.example', access, managed), { enabled: false, replace: false, source: 'none' });
  assert.deepEqual(decide('https://a.example:444', access, managed).enabled, false, 'a port makes another origin');
  assert.deepEqual(parseManagedOrigins('https://b.example'), [], 'not an array');
  assert.deepEqual(enabledOrigins(access, managed).map((e) => e.origin), ['http://127.0.0.1:9000', 'https://a.example', 'https://b.example']);
});

test('content scripts: other sites once granted, loopback from the manifest, replace where opted in', async () => {
  const access = parsePageAccess({
    'https://granted.example': { enabled: true },
    'https://denied.example': { enabled: true, replace: true },
    'http://127.0.0.1:9000': { enabled: true, replace: true },
    'http://localhost:9001': { enabled: true },
  });
  const planned = await plannedScripts(access, ['https://policy.example'], async (p) => p !== 'https://denied.example/*');
  const byId = Object.fromEntries(planned.map((s) => [s.id, s]));
  assert.deepEqual(byId[SCRIPT_IDS.api].matches, ['https://granted.example/*', 'https://policy.example/*']);
  assert.deepEqual(byId[SCRIPT_IDS.api].js, ['page-tasks.js', 'page-api.js']);
  assert.equal(byId[SCRIPT_IDS.api].world, 'MAIN');
  assert.equal(byId[SCRIPT_IDS.api].runAt, 'document_start');
  assert.deepEqual(byId[SCRIPT_IDS.bridge].matches, byId[SCRIPT_IDS.api].matches);
  assert.equal(byId[SCRIPT_IDS.bridge].world, 'ISOLATED');
  assert.deepEqual(byId[SCRIPT_IDS.replace].matches, ['http://127.0.0.1:9000/*'], 'no permission, no replacement');
  assert.deepEqual(await plannedScripts({}, [], async () => true), []);
});

test('an origin that asked is remembered once', async () => {
  /** @type {Record<string, any>} */
  const store = {};
  const area = {
    get: async (/** @type {string} */ k) => ({ [k]: store[k] }),
    set: async (/** @type {Record<string, any>} */ v) => Object.assign(store, v),
  };
  const chromeApi = /** @type {any} */ ({ storage: { local: area } });
  await noteAsked(chromeApi, 'https://a.example', 10);
  await noteAsked(chromeApi, 'https://a.example', 20);
  await noteAsked(chromeApi, 'https://b.example', 30);
  assert.deepEqual(store.pageAsked, { 'https://a.example': 10, 'https://b.example': 30 });
});
