// `npm run pack` (and `make extension`): the store zip of the extension
// folder, as `zip` packs it: what the browser loads (manifest, pages,
// scripts, lib/, panel/, icons/, vendor/ with its licences), without the
// tests, build scripts and node tooling. Written to ../target/extension/
// tabagent-extension-<version>.zip; fails if vendor/ was not built.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
/** Never shipped: development files and folders. */
const SKIP = new Set(['node_modules', 'test', 'scripts', 'package.json', 'package-lock.json', 'tsconfig.json', 'README.md', '.gitignore', 'test-hook.html', 'test-hook.js']);

/** @param {string} dir @returns {string[]} */
function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (dir === root && SKIP.has(name)) return [];
    if (/\.(zip|crx|pem|tgz)$/.test(name)) return [];
    return statSync(path).isDirectory() ? files(path) : [relative(root, path)];
  });
}

if (!existsSync(join(root, 'vendor', 'marked.esm.js'))) {
  console.error('pack: vendor/ is missing; run `npm ci && npm run build` first');
  process.exit(1);
}
const { version } = JSON.parse(readFileSync(join(root, 'manifest.json'), 'utf8'));
const outDir = join(root, '..', 'target', 'extension');
mkdirSync(outDir, { recursive: true });
const zip = join(outDir, `tabagent-extension-${version}.zip`);
rmSync(zip, { force: true });
const list = files(root).sort();
const r = spawnSync('zip', ['-q', '-X', zip, ...list], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) process.exit(r.status ?? 1);
console.log(`pack: ${relative(process.cwd(), zip)} (${list.length} files, ${statSync(zip).size} bytes)`);
