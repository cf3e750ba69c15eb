// Smoke test in a real browser, with no dependency but Chromium: load the
// unpacked extension in headless Chromium with a fresh profile whose
// NativeMessagingHosts/ registers test/e2e/mock-host.mjs as com.tabagent.host,
// drive it over the DevTools protocol (--remote-debugging-pipe), and check:
// the extension loads with no warnings or errors; Health and a streamed Chat
// over native messaging through the test hook; the side panel renders a
// streamed, sanitised, highlighted reply (screenshot) and shows a model
// loading from the host's push events; with the host removed,
// the fallback reaches the WebRTC transport (offscreen document + signaling),
// and with a mock signaling server (its answering peer is a page in the same
// browser) a data channel carries Health and a streamed Chat.
//
//   npm run smoke                      (after npm run build)
//   CHROMIUM=/path/to/chromium SMOKE_OUT=/tmp/shots npm run smoke
//
// The real end-to-end test (real tabagent, real model, WebRTC) belongs to
// the project's `make test`; this one guards the extension on its own.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Checks, assert, ext, findChromium, id, launch, sleep } from './harness.mjs';
import { startMockRtcServer } from './mock-rtc-server.mjs';

const chromium = findChromium();
const out = process.env.SMOKE_OUT ?? mkdtempSync(join(tmpdir(), 'tabagent-smoke-out-'));
mkdirSync(out, { recursive: true });
const checks = new Checks();
const check = checks.check.bind(checks);

if (!chromium) {
  console.log('smoke: no Chromium found (set CHROMIUM); skipped');
  process.exit(0);
}
if (!existsSync(join(ext, 'vendor', 'marked.esm.js'))) {
  console.error('smoke: run `npm run build` first');
  process.exit(1);
}

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

const { cdp, pageErrors, open, findWorker, extensionInfo, close, stderr } = launch({ chromium, profile, out });

try {
  await cdp.send('Target.setDiscoverTargets', { discover: true });
  const worker = await findWorker();

  await check(`the extension loads with the pinned id ${id}`, async () => {
    assert(worker, `no service worker for ${id}; stderr:\n${stderr().slice(-2000)}`);
  });

  await check('chrome://extensions reports no warnings or errors for it', async () => {
    const e = await extensionInfo();
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

  await check('the side panel shows a model loading from the server\'s events, then clears it', async () => {
    const panel = await open(`chrome-extension://${id}/sidepanel.html`);
    await panel.waitFor(`document.getElementById('status-text').textContent.startsWith('native')`);
    await panel.waitFor(`document.getElementById('model-select').value === 'mock-chat'`);
    await panel.evaluate(`(() => {
      window.__activity = [];
      const el = document.getElementById('activity');
      new MutationObserver(() => window.__activity.push(el.hidden ? '' : el.textContent.trim()))
        .observe(el, { subtree: true, childList: true, characterData: true, attributes: true });
      document.getElementById('model-load').click();
      return true;
    })()`);
    await panel.waitFor(`/Loading mock-chat… 50%/.test(document.getElementById('activity-text').textContent)`);
    console.log(`# screenshot: ${await panel.screenshot('sidepanel-loading.png')}`);
    await panel.waitFor(`document.getElementById('notice').textContent === 'mock-chat: loaded'`);
    const seen = await panel.evaluate(`window.__activity`);
    assert(seen.some((/** @type {string} */ t) => t === 'Loading mock-chat… 0%'), JSON.stringify(seen));
    assert(await panel.evaluate(`document.getElementById('activity').hidden`), `still shown: ${JSON.stringify(seen)}`);
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
  await close();
  rmSync(profile, { recursive: true, force: true, maxRetries: 3 });
}
console.log(`# screenshots in ${out}`);
process.exit(checks.summary());
