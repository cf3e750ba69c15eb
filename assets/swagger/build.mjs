// `npm run build`: copy Swagger UI from node_modules into vendor/ (generated,
// gitignored), which the binary embeds for /docs (build.rs, feature docs), so
// the page never loads anything from a CDN. The licence goes along, and
// vendor/VERSIONS.json records what was copied. Run `npm ci` first.
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const pkg = join(root, 'node_modules', 'swagger-ui-dist');
const vendor = join(root, 'vendor');

/** [from (inside the package), to (inside vendor/)] */
const FILES = [
  ['swagger-ui-bundle.js', 'swagger-ui-bundle.js'],
  ['swagger-ui.css', 'swagger-ui.css'],
  ['favicon-32x32.png', 'favicon-32x32.png'],
  ['LICENSE', 'LICENSE'],
];

let meta;
try {
  meta = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8'));
} catch {
  console.error('build: swagger-ui-dist is not installed; run `npm ci` in assets/swagger/ first');
  process.exit(1);
}
rmSync(vendor, { recursive: true, force: true });
mkdirSync(vendor, { recursive: true });
for (const [from, to] of FILES) {
  if (/\.(js|css)$/.test(to)) {
    // the source maps are not copied, so drop the comments that point at them
    const code = readFileSync(join(pkg, from), 'utf8').replace(/^\/[/*]# sourceMappingURL=.*$/m, '');
    writeFileSync(join(vendor, to), code);
  } else {
    copyFileSync(join(pkg, from), join(vendor, to));
  }
}
writeFileSync(join(vendor, 'VERSIONS.json'), JSON.stringify({ 'swagger-ui-dist': meta.version }, null, 2) + '\n');
console.log(`build: assets/swagger/vendor/ <- swagger-ui-dist@${meta.version}`);
