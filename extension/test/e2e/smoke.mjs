// Smoke test in a real browser, with no dependency but Chromium: load the
// unpacked extension in headless Chromium with a fresh profile whose
// NativeMessagingHosts/ registers test/e2e/mock-host.mjs as com.tabagent.host,
// drive it over the DevTools protocol (--remote-debugging-pipe), and check:
// the extension loads with no warnings or errors; Health and a streamed Chat
// over native messaging through the test hook; the side panel renders a
// streamed, sanitised, highlighted reply (screenshot); with the host removed,
// the fallback reaches the WebRTC transport (offscreen document + signaling),
// and with a mock signaling server (its answering peer is a page in the same
// browser) a data channel carries Health and a streamed Chat.
//
//   npm run smoke                      (after npm run build)
//   CHROMIUM=/path/to/chromium SMOKE_OUT=/tmp/shots npm run smoke
//
// The real end-to-end test (real tabagent, real model, WebRTC) belongs to
// the project's `make test`; this one guards the extension on its own.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { extensionIdFromKey } from '../../scripts/keygen.mjs';
import { startMockRtcServer } from './mock-rtc-server.mjs';

const ext = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const id = extensionIdFromKey(JSON.parse(readFileSync(join(ext, 'manifest.json'), 'utf8')).key);
const chromium = process.env.CHROMIUM ?? ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find(existsSync);
const out = process.env.SMOKE_OUT ?? mkdtempSync(join(tmpdir(), 'tabagent-smoke-out-'));
mkdirSync(out, { recursive: true });
let passed = 0;
let failed = 0;

if (!chromium) {
  console.log('smoke: no Chromium found (set CHROMIUM); skipped');
  process.exit(0);
}
if (!existsSync(join(ext, 'vendor', 'marked.esm.js'))) {
  console.error('smoke: run `npm run build` first');
  process.exit(1);
}

/** Chrome DevTools protocol over the pipe: JSON messages separated by NUL. */
class Cdp {
  #next = 1;
  /** @type {Map<number, {resolve: (v: any) => void, reject: (e: Error) => void}>} */
  #calls = new Map();
  /** @type {((msg: any) => void)[]} */
  listeners = [];
  /** @param {import('node:stream').Writable} w @param {import('node:stream').Readable} r */
  constructor(w, r) {
    this.w = w;
    let buf = '';
    r.setEncoding('utf8');
    r.on('data', (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf('\0')) >= 0) {
        const msg = JSON.parse(buf.slice(0, i));
        buf = buf.slice(i + 1);
        const call = msg.id !== undefined ? this.#calls.get(msg.id) : undefined;
        if (call) {
          this.#calls.delete(msg.id);
          if (msg.error) call.reject(new Error(`${msg.error.message} ${msg.error.data ?? ''}`));
          else call.resolve(msg.result);
        } else {
          for (const l of this.listeners) l(msg);
        }
      }
    });
  }
  /** @param {string} method @param {object} [params] @param {string} [sessionId] @returns {Promise<any>} */
  send(method, params = {}, sessionId) {
    const id = this.#next++;
    this.w.write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + '\0');
    return new Promise((resolve, reject) => this.#calls.set(id, { resolve, reject }));
  }
}

/** @param {string} name @param {() => Promise<void>} fn */
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok - ${name}`);
  } catch (e) {
    failed++;
    console.log(`not ok - ${name}\n  ${/** @type {Error} */ (e).stack?.split('\n').slice(0, 3).join('\n  ')}`);
  }
}

/** @param {unknown} cond @param {string} what */
function assert(cond, what) {
  if (!cond) throw new Error(what);
}

/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- profile with the mock host registered ----------------------------------
const profile = mkdtempSync(join(tmpdir(), 'tabagent-smoke-profile-'));
const hostDir = join(profile, 'NativeMessagingHosts');
mkdirSync(hostDir);
const wrapper = join(profile, 'mock-host.sh');
writeFileSync(wrapper, `#!/bin/sh\nexec "${process.execPath}" "${join(ext, 'test', 'e2e', 'mock-host.mjs')}" "$@"\n`, { mode: 0o755 });
const hostManifest = join(hostDir, 'com.tabagent.host.json');
writeFileSync(
  hostManifest,
  JSON.stringify({
    name: 'com.tabagent.host',
    description: 'tabagent mock host (smoke test)',
    path: wrapper,
    type: 'stdio',
    allowed_origins: [`chrome-extension://${id}/`],
  }),
);

const args = [
  '--headless=new',
  `--user-data-dir=${profile}`,
  `--load-extension=${ext}`,
  `--disable-extensions-except=${ext}`,
  '--remote-debugging-pipe',
  '--no-first-run',
  '--no-default-browser-check',
  '--disable-gpu',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
];
const browser = spawn(chromium, args, { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
let stderr = '';
browser.stderr?.on('data', (d) => (stderr += d));
const cdp = new Cdp(/** @type {any} */ (browser.stdio[3]), /** @type {any} */ (browser.stdio[4]));
/** @type {string[]} */
const pageErrors = [];
cdp.listeners.push((msg) => {
  if (msg.method === 'Runtime.exceptionThrown') pageErrors.push(msg.params.exceptionDetails?.exception?.description ?? msg.params.exceptionDetails?.text);
  if (msg.method === 'Runtime.consoleAPICalled' && msg.params.type === 'error') pageErrors.push(msg.params.args.map((/** @type {any} */ a) => a.value ?? a.description).join(' '));
});

/** Open a page in a new target; return an evaluator bound to it. @param {string} url */
async function open(url, width = 420, height = 760) {
  const { targetId } = await cdp.send('Target.createTarget', { url: 'about:blank' });
  const { sessionId } = await cdp.send('Target.attachToTarget', { targetId, flatten: true });
  await cdp.send('Runtime.enable', {}, sessionId);
  await cdp.send('Page.enable', {}, sessionId);
  await cdp.send('Emulation.setDeviceMetricsOverride', { width, height, deviceScaleFactor: 1, mobile: false }, sessionId);
  await cdp.send('Page.navigate', { url }, sessionId);
  /** @param {string} expression */
  const evaluate = async (expression) => {
    const r = await cdp.send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true }, sessionId);
    if (r.exceptionDetails) throw new Error(r.exceptionDetails.exception?.description ?? r.exceptionDetails.text);
    return r.result.value;
  };
  /** @param {string} expression @param {number} [timeoutMs] */
  const waitFor = async (expression, timeoutMs = 15_000) => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      try {
        const v = await evaluate(expression);
        if (v) return v;
      } catch {
        // not loaded yet
      }
      if (Date.now() > end) throw new Error(`timed out waiting for ${expression}`);
      await sleep(100);
    }
  };
  const screenshot = async (/** @type {string} */ name) => {
    const { data } = await cdp.send('Page.captureScreenshot', { format: 'png' }, sessionId);
    const file = join(out, name);
    writeFileSync(file, Buffer.from(data, 'base64'));
    return file;
  };
  return { evaluate, waitFor, screenshot, sessionId };
}

try {
  await cdp.send('Target.setDiscoverTargets', { discover: true });
  const worker = await (async () => {
    for (let i = 0; i < 100; i++) {
      const { targetInfos } = await cdp.send('Target.getTargets');
      const w = targetInfos.find((/** @type {any} */ t) => t.type === 'service_worker' && t.url.startsWith(`chrome-extension://${id}/`));
      if (w) return w;
      await sleep(100);
    }
    return null;
  })();

  await check(`the extension loads with the pinned id ${id}`, async () => {
    assert(worker, `no service worker for ${id}; stderr:\n${stderr.slice(-2000)}`);
  });

  await check('chrome://extensions reports no warnings or errors for it', async () => {
    const page = await open('chrome://extensions');
    const info = await page.waitFor(
      `chrome.developerPrivate.getExtensionsInfo({includeDisabled: true, includeTerminated: true}).then(list => JSON.stringify(list.find(e => e.id === '${id}') ?? null))`,
    );
    const e = JSON.parse(info);
    assert(e, 'extension not listed');
    const problems = [...(e.installWarnings ?? []), ...(e.manifestErrors ?? []).map((/** @type {any} */ m) => m.message)];
    assert(problems.length === 0, `warnings: ${JSON.stringify(problems)}`);
    assert(e.state === 'ENABLED', `state ${e.state}`);
  });

  const rtc = await startMockRtcServer();
  const hook = await open(`chrome-extension://${id}/test-hook.html?test=1`);
  await hook.waitFor(`document.documentElement.dataset.tabagentTest === 'ready'`);

  await check('Health over native messaging through the test hook', async () => {
    const r = await hook.evaluate(`tabagentTest.request('Health')`);
    assert(r.ok && r.reply.status === 'ok', JSON.stringify(r));
    const s = await hook.evaluate(`tabagentTest.status()`);
    assert(s.transport === 'native' && s.state === 'connected', JSON.stringify(s));
  });

  await check('a streamed Chat reply arrives in chunks', async () => {
    const r = await hook.evaluate(`tabagentTest.stream('Chat', {messages: [{role: 'user', content: 'hi'}]})`);
    assert(r.ok, JSON.stringify(r.error));
    assert(r.chunks.length > 5, `only ${r.chunks.length} chunks`);
    assert(r.final.finish_reason === 'stop' && r.final.text === r.text, 'final message');
  });

  await check('cancel stops a generation (finish_reason cancelled)', async () => {
    const r = await hook.evaluate(`(async () => {
      const { createPageClient } = await import('./lib/page-client.js');
      const c = createPageClient();
      const s = c.stream('Chat', { messages: [{ role: 'user', content: 'long' }] });
      let n = 0, last;
      for await (const m of s) { if (++n === 2) await c.cancel(s.id); last = m; }
      return last;
    })()`);
    assert(r.finish_reason === 'cancelled', JSON.stringify(r));
  });

  await check('the side panel streams a sanitised, highlighted markdown reply', async () => {
    const panel = await open(`chrome-extension://${id}/sidepanel.html`);
    await panel.waitFor(`document.getElementById('status-text').textContent.startsWith('native')`);
    await panel.waitFor(`document.getElementById('model-select').options.length > 0`);
    await panel.evaluate(`document.getElementById('input').value = 'Show me some code'; document.getElementById('composer').requestSubmit(); true`);
    await panel.waitFor(`document.querySelector('.msg.assistant .body code.hljs') && !document.querySelector('.pending')`);
    const html = await panel.evaluate(`document.querySelector('.msg.assistant .body').innerHTML`);
    assert(!/<img|<script/i.test(html), `unsafe markup kept: ${html}`);
    assert(/<strong>streamed<\/strong>/.test(html), 'markdown not rendered');
    const file = await panel.screenshot('sidepanel-chat.png');
    console.log(`# screenshot: ${file}`);
    await panel.evaluate(`document.getElementById('history-toggle').click(); true`);
    await panel.waitFor(`document.querySelectorAll('#history-list .title').length > 0`);
    console.log(`# screenshot: ${await panel.screenshot('sidepanel-history.png')}`);
  });

  await check('ask about this page: page text -> AddDocument -> RagQuery -> an answer citing its excerpt', async () => {
    const panel = await open(`chrome-extension://${id}/sidepanel.html`);
    await panel.waitFor(`document.getElementById('status-text').textContent.startsWith('native')`);
    // the article in a window of its own, focused, so it is the active tab
    const { targetId } = await cdp.send('Target.createTarget', { url: `${rtc.url}/article.html`, newWindow: true });
    await sleep(500);
    await cdp.send('Target.activateTarget', { targetId });
    await panel.evaluate(`document.getElementById('input').value = 'What do otters do?'; document.getElementById('ask-page').click(); true`);
    await panel.waitFor(`document.querySelector('.sources li.cited') || document.querySelector('.msg.error')`);
    const err = await panel.evaluate(`document.querySelector('.msg.error')?.textContent ?? ''`);
    assert(!err, err);
    const tag = await panel.evaluate(`document.querySelector('.msg.user .tag').textContent`);
    assert(/Otters/.test(tag), tag);
    const src = await panel.evaluate(`document.querySelector('.sources li.cited').textContent`);
    assert(/hold hands/.test(src), src);
    console.log(`# screenshot: ${await panel.screenshot('sidepanel-ask-page.png')}`);
  });

  await check('the options page shows the id and the install-host command', async () => {
    const options = await open(`chrome-extension://${id}/options.html`, 640, 900);
    const cmd = await options.waitFor(`document.getElementById('install-cmd').textContent`);
    assert(cmd === `tabagent install-host --extension-id ${id}`, cmd);
    const checked = await options.evaluate(`document.querySelector('input[name=transport]:checked')?.value`);
    assert(checked === 'auto', `transport ${checked}`);
    console.log(`# screenshot: ${await options.screenshot('options.png')}`);
  });

  await check('without the host, auto falls back to WebRTC (offscreen document dials the server)', async () => {
    rmSync(hostManifest);
    const r = await hook.evaluate(`tabagentTest.reconnect()`);
    // no server listens in this smoke test, so both transports fail; what matters is that
    // native failed first and WebRTC was tried through the offscreen document's fetch
    assert(!r.ok && r.error.type === 'unavailable', JSON.stringify(r));
    assert(/native: .*not found/i.test(r.error.detail), r.error.detail);
    assert(/webrtc: .*(fetch|signaling|refused)/i.test(r.error.detail), r.error.detail);
    console.log(`# fallback detail: ${r.error.detail}`);
    const { targetInfos } = await cdp.send('Target.getTargets');
    assert(
      targetInfos.some((/** @type {any} */ t) => t.url === `chrome-extension://${id}/offscreen.html`),
      'no offscreen document',
    );
  });

  await check('WebRTC: signaling, data channel through the offscreen bridge, Health and a streamed Chat', async () => {
    const peer = await open(`${rtc.url}/peer.html`, 200, 200);
    await peer.waitFor(`document.readyState === 'complete'`);
    const r = await hook.evaluate(`tabagentTest.settings({ serverUrl: '${rtc.url}', apiKey: 'k' })`);
    assert(r.ok && r.status.transport === 'webrtc', JSON.stringify(r));
    assert(rtc.offers[0]?.authorization === 'Bearer k', 'the API key goes with the offer');
    assert(/a=candidate:/.test(rtc.offers[0]?.sdp ?? ''), 'the offer carries its candidates');
    const label = await peer.evaluate(`document.title`);
    assert(label === 'channel:tabagent:true', `channel ${label}`);
    const h = await hook.evaluate(`tabagentTest.request('Health')`);
    assert(h.ok && h.reply.version === 'rtc-mock', JSON.stringify(h));
    const c = await hook.evaluate(`tabagentTest.stream('Chat', {messages: [{role: 'user', content: 'hi'}]})`);
    assert(c.ok && c.text === 'over a data channel' && c.chunks.length === 4, JSON.stringify(c));
  });
  rtc.close();

  await check('no uncaught errors in extension pages', async () => {
    const real = pageErrors.filter((e) => !/ERR_CONNECTION_REFUSED|Failed to fetch|tabagent is not reachable/.test(e ?? ''));
    assert(real.length === 0, real.join('\n'));
  });
} finally {
  const exited = new Promise((r) => browser.once('exit', r));
  browser.kill();
  await Promise.race([exited, sleep(5000)]);
  rmSync(profile, { recursive: true, force: true, maxRetries: 3 });
}
console.log(`# screenshots in ${out}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
