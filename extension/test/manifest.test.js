// The package as Chrome sees it: a valid MV3 manifest with the minimum
// permissions, every file it names present, pages that load only their own
// module scripts (MV3's CSP forbids inline and remote code), the pinned id
// derived from `key` matching the README, and a lockfile without local paths.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { extensionIdFromKey } from '../scripts/keygen.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const manifest = JSON.parse(readFileSync(join(root, 'manifest.json'), 'utf8'));

test('the manifest is MV3 with exactly the permissions the extension needs', () => {
  assert.equal(manifest.manifest_version, 3);
  assert.deepEqual([...manifest.permissions].sort(), ['activeTab', 'contextMenus', 'nativeMessaging', 'offscreen', 'scripting', 'sidePanel', 'storage']);
  assert.deepEqual([...manifest.host_permissions].sort(), ['http://127.0.0.1/*', 'http://localhost/*']);
  assert.equal(manifest.optional_permissions, undefined);
  // other sites are asked for one by one, when the user enables the page API there; never <all_urls>
  assert.deepEqual([...manifest.optional_host_permissions].sort(), ['http://*/*', 'https://*/*']);
  assert.ok(!JSON.stringify(manifest).includes('<all_urls>'));
  // the page API's scripts, on loopback pages only (other sites: registered at run time)
  assert.equal(manifest.content_scripts.length, 2);
  for (const cs of manifest.content_scripts) {
    assert.deepEqual([...cs.matches].sort(), ['http://127.0.0.1/*', 'http://localhost/*']);
    assert.equal(cs.run_at, 'document_start');
  }
  assert.deepEqual(manifest.content_scripts[0], { matches: cs0Matches(), js: ['page-tasks.js', 'page-api.js'], world: 'MAIN', run_at: 'document_start' });
  assert.deepEqual(manifest.content_scripts[1].js, ['page-bridge.js']);
  assert.equal(manifest.content_scripts[1].world, undefined, 'the bridge runs in the isolated world');
  assert.equal(manifest.storage.managed_schema, 'managed_schema.json');
  assert.deepEqual(manifest.externally_connectable, { ids: ['*'] }, 'other extensions, never web pages directly');
  assert.equal(manifest.web_accessible_resources, undefined, 'no extension page is reachable from the web');
  assert.equal(manifest.background.type, 'module');
  assert.match(manifest.version, /^\d+(\.\d+){0,3}$/);
});

function cs0Matches() {
  return ['http://127.0.0.1/*', 'http://localhost/*'];
}

test('every file the manifest names exists', () => {
  const files = [
    manifest.background.service_worker,
    manifest.side_panel.default_path,
    manifest.options_ui.page,
    ...Object.values(manifest.icons),
    ...Object.values(manifest.action.default_icon),
    'offscreen.html',
    'test-hook.html',
    'page-replace.js',
    manifest.storage.managed_schema,
    ...manifest.content_scripts.flatMap((/** @type {any} */ cs) => cs.js),
  ];
  for (const f of files) assert.ok(existsSync(join(root, /** @type {string} */ (f))), `${f} is missing`);
});

test('pages load only local module scripts, nothing inline or remote', () => {
  const pages = readdirSync(root).filter((f) => f.endsWith('.html'));
  assert.ok(pages.length >= 4);
  for (const page of pages) {
    const html = readFileSync(join(root, page), 'utf8');
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
    assert.ok(scripts.length > 0, `${page} has a script`);
    for (const [, attrs, body] of scripts) {
      assert.equal(body.trim(), '', `${page}: inline script`);
      assert.match(attrs, /type="module"/, `${page}: not a module`);
      const src = /src="([^"]+)"/.exec(attrs)?.[1] ?? '';
      assert.ok(existsSync(join(root, src)), `${page}: ${src} is missing`);
    }
    assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//, `${page}: remote resource`);
    assert.doesNotMatch(html, /\son[a-z]+="/, `${page}: inline event handler`);
  }
});

test('the pinned extension id comes from the key and is the one the README gives', () => {
  const id = extensionIdFromKey(manifest.key);
  assert.match(id, /^[a-p]{32}$/);
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  assert.ok(readme.includes(id), `README.md should state the id ${id}`);
});

test('the lockfile has no local paths and the private key is ignored', () => {
  const lock = readFileSync(join(root, 'package-lock.json'), 'utf8');
  assert.doesNotMatch(lock, /"(resolved|link)":\s*"(file:|\/|[A-Za-z]:\\)/);
  assert.doesNotMatch(lock, /\/work\/|\/home\/|\/Users\//);
  const ignore = readFileSync(join(root, '.gitignore'), 'utf8').split('\n');
  for (const pattern of ['vendor/', 'node_modules/', '*.pem']) assert.ok(ignore.includes(pattern), `.gitignore lacks ${pattern}`);
});
