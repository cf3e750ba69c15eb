// `npm run build`: copy the third-party browser libraries the side panel
// uses from node_modules into vendor/ (generated, gitignored), so the
// extension loads them from its own package and never from a CDN. Each
// library's licence goes along, and vendor/VERSIONS.json records what was
// copied. Run `npm ci` first.
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const modules = join(root, 'node_modules');
const vendor = join(root, 'vendor');

/** package -> files to copy: [from (inside the package), to (inside vendor/)] */
const COPIES = {
  marked: [
    ['lib/marked.esm.js', 'marked.esm.js'],
    ['LICENSE', 'licenses/marked.LICENSE'],
  ],
  dompurify: [
    ['dist/purify.es.mjs', 'purify.es.mjs'],
    ['LICENSE', 'licenses/dompurify.LICENSE'],
  ],
  '@highlightjs/cdn-assets': [
    ['es/highlight.min.js', 'highlight.min.js'],
    ['styles/github.min.css', 'hljs-light.min.css'],
    ['styles/github-dark.min.css', 'hljs-dark.min.css'],
    ['LICENSE', 'licenses/highlight.js.LICENSE'],
  ],
};

rmSync(vendor, { recursive: true, force: true });
mkdirSync(join(vendor, 'licenses'), { recursive: true });
/** @type {Record<string, string>} */
const versions = {};
for (const [pkg, files] of Object.entries(COPIES)) {
  const dir = join(modules, pkg);
  let meta;
  try {
    meta = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  } catch {
    console.error(`build: ${pkg} is not installed; run \`npm ci\` in extension/ first`);
    process.exit(1);
  }
  versions[pkg] = meta.version;
  for (const [from, to] of files) {
    if (/\.m?js$/.test(to)) {
      // the source maps are not copied, so drop the comment that points at them
      const code = readFileSync(join(dir, from), 'utf8').replace(/^\/\/# sourceMappingURL=.*$/m, '');
      writeFileSync(join(vendor, to), code);
    } else {
      copyFileSync(join(dir, from), join(vendor, to));
    }
  }
}
writeFileSync(join(vendor, 'VERSIONS.json'), JSON.stringify(versions, null, 2) + '\n');
console.log(`build: vendor/ <- ${Object.entries(versions).map(([p, v]) => `${p}@${v}`).join(', ')}`);
