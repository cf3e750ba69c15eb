// Headless Chromium opens tabagent's /docs (Swagger UI) and reads every
// operation the page shows; then it runs GET /api/stats from the page, first
// without the key (401), then after typing the key into Swagger's Authorize
// dialog (200), and saves a screenshot of the whole page:
// `node docs.js /path/to/tabagent SCREENSHOT.png`. Run it through docs.sh,
// which puts everything in a network namespace with loopback only. Prints one
// JSON object (operations, statuses, console errors), then "docs test passed".
'use strict';
const {spawn} = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const {chromium} = require('playwright-core');

const [binary, screenshot] = process.argv.slice(2);
if (!binary || !screenshot) {
  console.error('usage: node docs.js /path/to/tabagent SCREENSHOT.png');
  process.exit(2);
}
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const KEY = 'docs-test-key';
const fail = (message) => {
  console.error(`docs test FAILED: ${message}`);
  process.exitCode = 1;
};

function startTabagent(dataDir) {
  const child = spawn(binary, ['--mode', 'http', '--bind', '127.0.0.1:0'], {
    env: {
      PATH: process.env.PATH,
      HOME: dataDir,
      TABAGENT_DATA_DIR: dataDir,
      TABAGENT_API_KEY: KEY,
      TABAGENT_LOG: process.env.TABAGENT_LOG || 'info',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`tabagent did not start:\n${seen}`)), 20000);
    child.stderr.on('data', (chunk) => {
      seen += chunk;
      if (process.env.TABAGENT_TEST_LOG) process.stderr.write(chunk);
      const match = /HTTP on (http:\/\/[0-9.:]+)/.exec(seen);
      if (match && timer) {
        clearTimeout(timer);
        resolve({child, api: match[1]});
      }
    });
    child.on('exit', (code) => reject(new Error(`tabagent exited (${code}):\n${seen}`)));
  });
}

/** Runs GET /api/stats from the page; the status the page shows. */
async function runStats(page) {
  const block = page.locator('.opblock-get', {has: page.locator('.opblock-summary-path[data-path="/api/stats"]')});
  if (!(await block.locator('.execute').count())) {
    if (!(await block.locator('.try-out__btn').count())) {
      await block.locator('.opblock-summary-control').click();
    }
    await block.locator('.try-out__btn').click();
  }
  await block.locator('.execute').click();
  // the live response's row (the table's head has a "Code" cell of the same class)
  const status = block.locator('.live-responses-table tbody .response-col_status').first();
  await status.waitFor({timeout: 20000});
  const text = (await status.textContent()).trim();
  if (process.env.TABAGENT_TEST_LOG) console.error(`status cell: ${JSON.stringify(text)}`);
  const curl = (await block.locator('.curl-command').textContent().catch(() => '')) || '';
  await block.locator('.btn-clear').click().catch(() => {});
  return {status: Number.parseInt(text, 10), curl};
}

async function main() {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tabagent-docs-'));
  const {child, api} = await startTabagent(dataDir);
  let browser;
  const errors = [];
  try {
    browser = await chromium.launch({executablePath: chromiumPath, args: ['--no-sandbox']});
    const page = await browser.newPage({viewport: {width: 1280, height: 900}});
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
      if (process.env.TABAGENT_TEST_LOG) console.error(`page: ${m.text()}`);
    });
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${api}/docs`);
    await page.locator('.opblock').first().waitFor({timeout: 30000});
    const operations = await page.$$eval('.opblock', (blocks) => blocks.map((b) => [
      (b.querySelector('.opblock-summary-method') || {}).textContent,
      (b.querySelector('.opblock-summary-path') || {getAttribute: () => null}).getAttribute('data-path'),
    ]));

    const without = await runStats(page);
    await page.locator('.auth-wrapper button.authorize').click();
    const dialog = page.locator('.modal-ux');
    await dialog.locator('input').first().fill(KEY);
    await dialog.locator('button.authorize').first().click();
    await dialog.locator('button.btn-done').first().click();
    const authorized = await runStats(page);
    await page.screenshot({path: screenshot, fullPage: true});

    if (without.status !== 401) fail(`without the key GET /api/stats showed ${without.status}`);
    if (authorized.status !== 200) fail(`with the key GET /api/stats showed ${authorized.status}`);
    if (!authorized.curl.includes(`Bearer ${KEY}`)) fail(`the request did not carry the key: ${authorized.curl}`);
    // The browser logs the 401 of the call made without the key; nothing else may fail.
    const unexpected = errors.filter((e) => !/status of 401 \(Unauthorized\)/.test(e));
    if (unexpected.length) fail(`the page logged errors: ${unexpected.join('\n')}`);
    console.log(JSON.stringify({
      browser: 'chromium ' + browser.version(),
      operations,
      without_key: without.status,
      with_key: authorized.status,
      errors,
    }, null, 1));
  } finally {
    if (browser) await browser.close();
    child.kill();
    fs.rmSync(dataDir, {recursive: true, force: true});
  }
  if (!process.exitCode) console.log('docs test passed');
}

main().catch((e) => {
  fail(e.stack || String(e));
});
