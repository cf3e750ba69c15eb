// `npm run pack` (make extension): the store zip holds what the browser
// loads (every file the manifest names, the vendored libraries) and none of
// the tests, build scripts or node tooling. Needs vendor/ (npm run build),
// which `make test-extension` builds first.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

test('the packed zip has the extension and nothing of its development', () => {
  const packed = spawnSync(process.execPath, [join(root, 'scripts', 'pack.mjs')], { encoding: 'utf8' });
  assert.equal(packed.status, 0, packed.stderr);
  const manifest = JSON.parse(readFileSync(join(root, 'manifest.json'), 'utf8'));
  const zip = join(root, '..', 'target', 'extension', `tabagent-extension-${manifest.version}.zip`);
  const list = spawnSync('unzip', ['-Z1', zip], { encoding: 'utf8' });
  assert.equal(list.status, 0, list.stderr);
  const files = list.stdout.trim().split('\n');
  const named = [
    'manifest.json', manifest.background.service_worker, manifest.side_panel.default_path, manifest.options_ui.page,
    'offscreen.html', 'page-replace.js', manifest.storage.managed_schema, ...manifest.content_scripts.flatMap((/** @type {any} */ c) => c.js),
    ...Object.values(manifest.icons), 'vendor/marked.esm.js', 'vendor/purify.es.mjs', 'lib/page-gate.js', 'panel/actions.js',
  ];
  for (const f of named) assert.ok(files.includes(/** @type {string} */ (f)), `${f} is not in the zip`);
  for (const f of files) assert.doesNotMatch(f, /^(test|scripts|node_modules)\/|^package|^tsconfig|^test-hook/, `${f} should not ship`);
});
