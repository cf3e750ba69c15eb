// Draw the toolbar/extension icons (icons/icon{16,32,48,128}.png) without
// any image library: a rounded square with a speech bubble, rendered with
// 4x4 supersampling and written as RGBA PNG through node's zlib. Run once;
// the PNGs are committed.
import { deflateSync } from 'node:zlib';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const out = join(dirname(fileURLToPath(import.meta.url)), '..', 'icons');

/** CRC-32 as PNG wants it. @param {Buffer} buf */
function crc32(buf) {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return ~c >>> 0;
}

/** @param {string} type @param {Buffer} data */
function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** Coverage of one point in unit coordinates: 0 outside, 1 bg, 2 bubble. @param {number} x @param {number} y */
function shape(x, y) {
  const r = 0.22; // corner radius of the square
  const cx = Math.min(Math.max(x, r), 1 - r);
  const cy = Math.min(Math.max(y, r), 1 - r);
  if ((x - cx) ** 2 + (y - cy) ** 2 > r * r) return 0;
  // bubble: ellipse plus a tail at the lower left
  const inEllipse = ((x - 0.5) / 0.32) ** 2 + ((y - 0.45) / 0.24) ** 2 <= 1;
  const inTail = y > 0.55 && y < 0.8 && x > 0.28 && x < 0.45 && x - 0.28 < (0.8 - y) * 0.9;
  return inEllipse || inTail ? 2 : 1;
}

/** @param {number} size */
function png(size) {
  const ss = 4;
  const rows = [];
  for (let py = 0; py < size; py++) {
    const row = Buffer.alloc(1 + size * 4);
    for (let px = 0; px < size; px++) {
      let bg = 0;
      let fg = 0;
      for (let sy = 0; sy < ss; sy++) {
        for (let sx = 0; sx < ss; sx++) {
          const s = shape((px + (sx + 0.5) / ss) / size, (py + (sy + 0.5) / ss) / size);
          if (s === 1) bg++;
          else if (s === 2) fg++;
        }
      }
      const n = ss * ss;
      const a = (bg + fg) / n;
      const f = bg + fg > 0 ? fg / (bg + fg) : 0;
      const [r1, g1, b1] = [0x1f, 0x4e, 0x79]; // background blue
      const [r2, g2, b2] = [0xff, 0xff, 0xff];
      const o = 1 + px * 4;
      row[o] = Math.round(r1 + (r2 - r1) * f);
      row[o + 1] = Math.round(g1 + (g2 - g1) * f);
      row[o + 2] = Math.round(b1 + (b2 - b1) * f);
      row[o + 3] = Math.round(a * 255);
    }
    rows.push(row);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 6; // RGBA
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.concat(rows), { level: 9 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

mkdirSync(out, { recursive: true });
for (const size of [16, 32, 48, 128]) writeFileSync(join(out, `icon${size}.png`), png(size));
