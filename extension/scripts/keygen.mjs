// Pin the extension id. Chrome derives an unpacked extension's id from the
// manifest's `key` (base64 DER SubjectPublicKeyInfo): sha256 of the DER, the
// first 32 hex digits, each mapped 0-f -> a-p. Usage:
//   node scripts/keygen.mjs            print the id of manifest.json's key
//   node scripts/keygen.mjs --new      new RSA-2048 pair: public key into
//                                      manifest.json, private key into
//                                      tabagent-extension-key.pem (gitignored;
//                                      only needed to pack a .crx; never commit)
import { createHash, generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const manifestPath = join(root, 'manifest.json');
const privatePath = join(root, 'tabagent-extension-key.pem');

/**
 * The extension id Chrome computes from a manifest `key`.
 * @param {string} keyBase64 base64 of the DER SubjectPublicKeyInfo
 */
export function extensionIdFromKey(keyBase64) {
  const der = Buffer.from(keyBase64, 'base64');
  const hex = createHash('sha256').update(der).digest('hex').slice(0, 32);
  return [...hex].map((c) => String.fromCharCode('a'.charCodeAt(0) + parseInt(c, 16))).join('');
}

function main() {
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
  if (process.argv.includes('--new')) {
    if (existsSync(privatePath)) {
      console.error(`${privatePath} exists; move it away first (the id would change)`);
      process.exit(1);
    }
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const spki = publicKey.export({ type: 'spki', format: 'der' });
    writeFileSync(privatePath, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    // keep `key` right after the version fields, as a reader expects
    const { manifest_version, name, version, ...rest } = manifest;
    const next = { manifest_version, name, version, key: spki.toString('base64'), ...rest };
    writeFileSync(manifestPath, JSON.stringify(next, null, 2) + '\n');
    console.error(`private key written to ${privatePath} (do not commit it)`);
  }
  const key = JSON.parse(readFileSync(manifestPath, 'utf8')).key;
  if (typeof key !== 'string') {
    console.error('manifest.json has no key; run with --new');
    process.exit(1);
  }
  console.log(extensionIdFromKey(key));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
