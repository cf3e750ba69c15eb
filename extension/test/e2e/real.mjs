// The real end-to-end test: the extension in headless Chromium against the
// real tabagent binary and real models, no mocks.
//
//   test/e2e/run-real.sh BIN MODELS_DIR     (the way to run it: an isolated
//                                            loopback-only network namespace)
//   node test/e2e/real.mjs BIN MODELS_DIR   (inside such a namespace only)
//
// BIN is target/release/tabagent; MODELS_DIR holds gemma-3-270m-q4_k_m.gguf
// (what `make test` fetches into target/test-models). The test makes its own
// models dir with that Gemma (linked) and a tiny random-weight GGUF
// (tests/fixtures/make_tiny_gguf.py), a fresh Chromium profile in which
// `tabagent install-host --user-data-dir` registers the real binary as
// com.tabagent.host, and checks, each step reported on its own:
//   native messaging: Health, ListModels, streamed Chat (tiny and Gemma), a
//   side panel showing each model loading (push events), and the side panel
//   streaming a Gemma reply (screenshots); the side panel's conversation
//   controls (conversation-steps.mjs: per-chat settings kept on the server,
//   the context meter, regenerate, edit-and-resend, the history search);
//   then `tabagent uninstall-host`, a real `tabagent --mode webrtc` server on
//   127.0.0.1 set up as a browser-only install would be (`tabagent
//   allow-extension`, the key from `tabagent token`): without the key the
//   extension is refused (401) and says where the key comes from; with it,
//   over WebRTC (auto fallback): Health, streamed Chat (tiny and Gemma), and
//   the side panel again (screenshots).
// Prints "N passed, N failed" and exits non-zero if any step failed.
// Screenshots and logs go to $E2E_OUT (default: a new temporary folder,
// printed at the start and the end).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import { Checks, assert, ext, findChromium, id, launch, sleep } from './harness.mjs';
import { installPolicy, pageApiSteps, startPageServer } from './page-api-steps.mjs';
import { actionSteps } from './actions-steps.mjs';
import { conversationSteps } from './conversation-steps.mjs';

const GEMMA_FILE = 'gemma-3-270m-q4_k_m.gguf';
const GEMMA = 'gemma-3-270m-q4_k_m';
const TINY = 'tiny';
/** Model loads and first tokens on 2 busy cores can take a while. */
const SLOW = 180_000;

const [binArg, modelsArg] = process.argv.slice(2);
if (!binArg || !modelsArg) {
  console.error('usage: node test/e2e/real.mjs BIN MODELS_DIR   (run it through test/e2e/run-real.sh)');
  process.exit(2);
}
const bin = resolve(binArg);
const sourceModels = resolve(modelsArg);
const repo = resolve(ext, '..');
const chromium = findChromium();

// Never send traffic beyond 127.0.0.0/8: refuse to run with any interface but loopback.
const outside = Object.entries(networkInterfaces()).flatMap(([name, addrs]) => (addrs ?? []).filter((a) => !a.internal).map((a) => `${name} ${a.address}`));
if (outside.length > 0 && process.env.E2E_ALLOW_NETWORK !== '1') {
  console.error(`real e2e: this network namespace has interfaces beyond loopback (${outside.join(', ')}); run it through test/e2e/run-real.sh`);
  process.exit(2);
}
for (const [what, ok] of /** @type {[string, boolean][]} */ ([
  [`the tabagent binary ${bin}`, existsSync(bin)],
  ['Chromium (set CHROMIUM)', Boolean(chromium)],
  ['the vendored libraries (npm run build)', existsSync(join(ext, 'vendor', 'marked.esm.js'))],
])) {
  if (!ok) {
    console.error(`real e2e: missing ${what}`);
    process.exit(2);
  }
}

const out = process.env.E2E_OUT ?? mkdtempSync(join(tmpdir(), 'tabagent-e2e-out-'));
mkdirSync(out, { recursive: true });
console.log(`# screenshots and logs in ${out}`);
const work = mkdtempSync(join(tmpdir(), 'tabagent-e2e-'));
const profile = join(work, 'profile');
const models = join(work, 'models');
mkdirSync(profile);
mkdirSync(models);
const checks = new Checks();
/** With E2E_ONLY=page, only the steps the page API needs run. @param {string} name */
const wanted = (name) => process.env.E2E_ONLY !== 'page' || /page API|actions|policy|install-host|loads with the pinned id|Health from the real host/.test(name);
/** @param {string} name @param {() => Promise<void>} fn */
const check = (name, fn) => (wanted(name) ? checks.check(name, fn) : Promise.resolve(false));

/** @param {string[]} args */
function tabagent(args) {
  const r = spawnSync(bin, args, { encoding: 'utf8', env: { ...process.env, HOME: join(work, 'home') } });
  return { code: r.status, text: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() };
}

/** A free TCP port on 127.0.0.1. @returns {Promise<number>} */
function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const port = /** @type {import('node:net').AddressInfo} */ (s.address()).port;
      s.close(() => ok(port));
    });
  });
}

/** The result of a hook call as one line for a failure message. @param {any} r */
const brief = (r) => String(JSON.stringify(r, (k, v) => (k === 'chunks' && Array.isArray(v) ? `[${v.length} chunks]` : v))).slice(0, 1500);

/** @param {string} model @param {string} content @param {number} maxTokens */
const chatFields = (model, content, maxTokens) => ({ model, messages: [{ role: 'user', content }], max_tokens: maxTokens, temperature: 0 });

/**
 * Checks a streamed Chat reply from the test hook.
 * @param {any} r @param {string} model @param {number} minChunks
 */
function assertStreamed(r, model, minChunks) {
  assert(r.ok, `stream failed: ${brief(r)}`);
  assert(r.chunks.length >= minChunks, `only ${r.chunks.length} chunks: ${brief(r)}`);
  assert(r.chunks.every((/** @type {any} */ c) => c.response_type === 'ChatChunk' && c.done === false), `unexpected chunk: ${brief(r.chunks.find((/** @type {any} */ c) => c.response_type !== 'ChatChunk'))}`);
  assert(r.final.response_type === 'ChatComplete' && r.final.done === true, `final message ${brief(r.final)}`);
  assert(['stop', 'length'].includes(r.final.finish_reason), `finish_reason ${r.final.finish_reason}`);
  assert(r.final.model === model, `answered by ${r.final.model}, not ${model}`);
  assert(r.text.length > 0 && r.final.text === r.text, `streamed text ${JSON.stringify(r.text)} differs from the final ${JSON.stringify(r.final.text)}`);
  assert(r.final.usage?.completion_tokens > 0, `usage ${brief(r.final.usage)}`);
}

/** @type {import('node:child_process').ChildProcess | null} */
let server = null;
let serverLog = '';
/** @type {ReturnType<typeof launch> | null} */
let chrome = null;
/** @type {{ports: number[], close: () => void} | null} */
let pageServer = null;

try {
  // ---- models: the tiny GGUF (made here) and the real Gemma (linked) --------
  const made = spawnSync(process.env.PYTHON ?? 'python3', [join(repo, 'tests', 'fixtures', 'make_tiny_gguf.py'), join(models, `${TINY}.gguf`)], { encoding: 'utf8' });
  if (made.status !== 0) console.log(`# make_tiny_gguf.py failed: ${made.stderr}`);
  const gemma = join(sourceModels, GEMMA_FILE);
  if (existsSync(gemma)) symlinkSync(gemma, join(models, GEMMA_FILE));
  else console.log(`# no ${gemma}: the Gemma steps will fail`);

  // ---- the real host, registered for this profile only ------------------------
  const hostManifest = join(profile, 'NativeMessagingHosts', 'com.tabagent.host.json');
  await check('`tabagent install-host --user-data-dir` registers the real binary for this profile', async () => {
    const r = tabagent(['install-host', '--extension-id', id, '--user-data-dir', profile]);
    assert(r.code === 0, `exit ${r.code}: ${r.text}`);
    assert(existsSync(hostManifest), `no ${hostManifest}; said: ${r.text}`);
    const m = JSON.parse(readFileSync(hostManifest, 'utf8'));
    assert(m.name === 'com.tabagent.host' && m.type === 'stdio', JSON.stringify(m));
    assert(realpathSync(m.path) === realpathSync(bin), `path ${m.path} is not ${bin}`);
    assert(JSON.stringify(m.allowed_origins) === JSON.stringify([`chrome-extension://${id}/`]), `allowed_origins ${JSON.stringify(m.allowed_origins)}`);
  });

  // The web pages of the page API steps, and the policy enabling the first
  // origin; Chromium reads the policy when it starts.
  pageServer = await startPageServer();
  const pagePorts = pageServer.ports;
  const policyReady = await check('a managed policy enables one test origin for the page API (private mount namespace)', async () => {
    installPolicy(work, [`http://127.0.0.1:${pagePorts[0]}`], (cmd, args) => {
      const r = spawnSync(cmd, args, { encoding: 'utf8' });
      return { code: r.status, text: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() };
    });
  });

  // The host Chromium starts inherits this environment: its own data dir, our models.
  chrome = launch({
    chromium: /** @type {string} */ (chromium),
    profile,
    out,
    // Without --allow-loopback-in-peer-connection Chromium gathers no ICE
    // candidate at all in a namespace that has only loopback.
    args: ['--disable-quic', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--allow-loopback-in-peer-connection'],
    env: {
      ...process.env,
      HOME: join(work, 'home'),
      TABAGENT_DATA_DIR: join(work, 'native-data'),
      TABAGENT_MODELS_DIR: models,
      TABAGENT_LOG: process.env.TABAGENT_LOG ?? 'info',
    },
  });
  const { cdp, open, findWorker, extensionInfo, pageErrors } = chrome;
  await cdp.send('Target.setDiscoverTargets', { discover: true });

  await check(`the extension loads with the pinned id ${id}, no warnings`, async () => {
    assert(await findWorker(), `no service worker for ${id}; stderr:\n${chrome?.stderr().slice(-2000)}`);
    const e = await extensionInfo();
    assert(e && e.state === 'ENABLED', `state ${e?.state}`);
    const problems = [...(e.installWarnings ?? []), ...(e.manifestErrors ?? []).map((/** @type {any} */ m) => m.message)];
    assert(problems.length === 0, `warnings: ${JSON.stringify(problems)}`);
  });

  const hook = await open(`chrome-extension://${id}/test-hook.html?test=1`);
  await hook.waitFor(`document.documentElement.dataset.tabagentTest === 'ready'`);

  // ---- native messaging --------------------------------------------------------
  await check('native messaging: Health from the real host', async () => {
    const r = await hook.evaluate(`tabagentTest.request('Health', {}, {timeoutMs: 30000})`);
    assert(r.ok, `Health failed: ${brief(r)}`);
    assert(r.reply.response_type === 'Health' && r.reply.status === 'ok', brief(r.reply));
    assert(typeof r.reply.version === 'string' && r.reply.version !== 'mock', `version ${r.reply.version}`);
    const s = await hook.evaluate(`tabagentTest.status()`);
    assert(s.transport === 'native' && s.state === 'connected', `status ${brief(s)}`);
    console.log(`# native Health: ${brief(r.reply).slice(0, 300)}`);
  });

  await check('native messaging: ListModels lists the tiny model and Gemma', async () => {
    const r = await hook.evaluate(`tabagentTest.request('ListModels')`);
    assert(r.ok, brief(r));
    const list = r.reply.models ?? r.reply.data ?? [];
    const ids = list.map((/** @type {any} */ m) => m.id);
    assert(ids.includes(TINY) && ids.includes(GEMMA), `models ${JSON.stringify(ids)}`);
  });

  // A side panel open before the first chats, watching its activity line: the
  // chats auto-load the models, and the server's push events should show it.
  const watcher = await open(`chrome-extension://${id}/sidepanel.html`);
  await watcher.waitFor(`document.getElementById('model-select').options.length > 0`, 30_000);
  await watcher.evaluate(`(() => {
    window.__activity = [];
    const el = document.getElementById('activity');
    new MutationObserver(() => window.__activity.push(el.hidden ? '' : el.textContent.trim()))
      .observe(el, { subtree: true, childList: true, characterData: true, attributes: true });
    return true;
  })()`);
  await sleep(500); // its Subscribe reaches the server

  await check('native messaging: a streamed Chat reply from the tiny model', async () => {
    const r = await hook.evaluate(`tabagentTest.stream('Chat', ${JSON.stringify(chatFields(TINY, 'Say hello.', 24))}, {timeoutMs: ${SLOW}})`);
    assertStreamed(r, TINY, 2);
  });

  await check('native messaging: a streamed Chat reply from the real Gemma 3 270M', async () => {
    const r = await hook.evaluate(`tabagentTest.stream('Chat', ${JSON.stringify(chatFields(GEMMA, 'What is the capital of France?', 32))}, {timeoutMs: ${SLOW}})`);
    assertStreamed(r, GEMMA, 3);
    console.log(`# Gemma over native messaging: ${JSON.stringify(r.text)}`);
  });

  await check('native messaging: the side panel showed each model loading (server push events), then cleared it', async () => {
    const seen = await watcher.evaluate(`window.__activity`);
    for (const model of [TINY, GEMMA]) {
      assert(seen.some((/** @type {string} */ t) => new RegExp(`^Loading ${model}… \\d+%`).test(t)), `no "Loading ${model}…" in ${JSON.stringify(seen)}`);
    }
    assert(await watcher.evaluate(`document.getElementById('activity').hidden`), `still shown: ${JSON.stringify(seen.slice(-3))}`);
    console.log(`# activity line during the first chats: ${JSON.stringify(seen.filter(Boolean))}`);
  });

  /**
   * The side panel: pick Gemma, send a prompt, see the reply stream in
   * (screenshot while it streams and when done), and no error.
   * @param {string} transport @param {string} prompt
   */
  const panelChat = async (transport, prompt) => {
    const panel = await open(`chrome-extension://${id}/sidepanel.html`);
    await panel.waitFor(`document.getElementById('status-text').textContent.startsWith('${transport}')`, 30_000);
    await panel.waitFor(`[...document.getElementById('model-select').options].some(o => o.value === '${GEMMA}')`, 30_000);
    await panel.evaluate(`(() => {
      const s = document.getElementById('model-select');
      s.value = '${GEMMA}';
      s.dispatchEvent(new Event('change'));
      // every partial render of the reply while it streams
      window.__partials = [];
      new MutationObserver(() => {
        const b = document.querySelector('.msg.assistant .body');
        if (b && b.classList.contains('pending') && b.textContent) window.__partials.push(b.textContent.length);
      }).observe(document.getElementById('messages'), { subtree: true, childList: true, characterData: true });
      document.getElementById('input').value = ${JSON.stringify(prompt)};
      document.getElementById('composer').requestSubmit();
      return true;
    })()`);
    // screenshot once a few words have streamed in (it may finish first on a fast machine)
    const streaming = await panel.waitFor(
      `(() => { const b = document.querySelector('.msg.assistant .body'); return b && (b.textContent.length >= 24 || !b.classList.contains('pending')) ? (b.classList.contains('pending') ? 'streaming' : 'done') : ''; })()`,
      SLOW,
    );
    const during = await panel.screenshot(`sidepanel-${transport}-gemma-${streaming}.png`);
    console.log(`# screenshot (${streaming === 'streaming' ? 'while streaming' : 'reply already complete'}): ${during}`);
    await panel.waitFor(`document.querySelector('.msg.assistant .body') && !document.querySelector('.pending')`, SLOW);
    const done = await panel.screenshot(`sidepanel-${transport}-gemma-done.png`);
    console.log(`# screenshot: ${done}`);
    const state = await panel.evaluate(`({
      error: document.querySelector('.msg.assistant.error, .msg.error')?.textContent ?? '',
      text: document.querySelector('.msg.assistant .body').textContent,
      who: document.querySelector('.msg.assistant .meta').textContent,
      foot: document.querySelector('.msg.assistant .foot')?.textContent ?? '',
      partials: window.__partials,
      status: document.getElementById('status-text').textContent,
    })`);
    assert(!state.error, `the panel shows an error: ${state.error}`);
    assert(state.text.trim().length > 0 && state.text !== '(empty reply)', `empty reply: ${brief(state)}`);
    assert(state.who === GEMMA, `answered as ${state.who}`);
    assert(new Set(state.partials).size >= 2, `the reply did not stream in the panel (partial renders: ${JSON.stringify(state.partials)})`);
    assert(state.status.startsWith(transport), `status line ${state.status}`);
    assert(/first token \d+\.\d\d s · \d+\.\d tok\/s · \d+ tokens/.test(state.foot), `no speed line under the answer: ${state.foot}`);
    console.log(`# side panel (${transport}) reply: ${JSON.stringify(state.text.slice(0, 200))} [${state.foot}]`);
  };

  await check('native messaging: the side panel streams a Gemma reply (screenshots)', async () => {
    // keep the panel's replies short: the panel sends no max_tokens of its own
    const p = await hook.evaluate(`tabagentTest.request('SetParams', {max_tokens: 96})`);
    assert(p.ok, `SetParams: ${brief(p)}`);
    await panelChat('native', 'Write one sentence about the sea.');
  });
  await conversationSteps({ check, open, hook, extensionId: id, model: GEMMA, slow: SLOW });

  // ---- the page API: web pages on loopback origins ------------------------------
  if (policyReady) {
    await check('page API: pages get short answers (SetParams max_tokens 64)', async () => {
      const p = await hook.evaluate(`tabagentTest.request('SetParams', {max_tokens: 64})`);
      assert(p.ok, `SetParams: ${brief(p)}`);
    });
    await pageApiSteps({ check, open, hook, log: () => chrome?.stderr() ?? '', ports: pagePorts, model: GEMMA, slow: SLOW });
  } else {
    checks.skip('page API steps', 'no policy (see above)');
  }
  await actionSteps({ check, open, cdp, findWorker, hook, extensionId: id, model: GEMMA, slow: SLOW });

  // ---- host unregistered: WebRTC to a real server ------------------------------
  await check('`tabagent uninstall-host --user-data-dir` removes the registration', async () => {
    const r = tabagent(['uninstall-host', '--user-data-dir', profile]);
    assert(r.code === 0, `exit ${r.code}: ${r.text}`);
    assert(!existsSync(hostManifest), `${hostManifest} is still there; said: ${r.text}`);
  });

  const port = await freePort();
  const serverUrl = `http://127.0.0.1:${port}`;
  // A browser-only install: let the extension in and read the key, as the
  // options page tells the user to.
  const serverData = join(work, 'server-data');
  let serverKey = '';
  await check('a browser-only install: `tabagent allow-extension` and `tabagent token`', async () => {
    const allowed = tabagent(['allow-extension', id, '--data-dir', serverData]);
    assert(allowed.code === 0, `allow-extension: exit ${allowed.code}: ${allowed.text}`);
    const token = spawnSync(bin, ['token', '--data-dir', serverData], { encoding: 'utf8', env: { ...process.env, HOME: join(work, 'home') } });
    serverKey = (token.stdout ?? '').trim();
    assert(token.status === 0 && /^[A-Za-z0-9_-]{43}$/.test(serverKey), `token: exit ${token.status}: ${token.stderr}`);
  });
  const serverReady = await check(`a real \`tabagent --mode webrtc\` server listens on ${serverUrl}`, async () => {
    const args = ['--mode', 'webrtc', '--bind', `127.0.0.1:${port}`, '--data-dir', serverData, '--models-dir', models];
    server = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HOME: join(work, 'home'), TABAGENT_LOG: process.env.TABAGENT_LOG ?? 'info' } });
    const s = server;
    s.stdout?.on('data', (d) => (serverLog += d));
    s.stderr?.on('data', (d) => (serverLog += d));
    const end = Date.now() + 30_000;
    for (;;) {
      assert(s.exitCode === null, `the server exited (${s.exitCode}): ${serverLog.slice(-1500)}`);
      try {
        const r = await fetch(`${serverUrl}/v1/models`, { headers: { authorization: `Bearer ${serverKey}` } });
        if (r.ok) break;
      } catch {
        // not listening yet
      }
      assert(Date.now() < end, `no answer on ${serverUrl} in 30 s: ${serverLog.slice(-1500)}`);
      await sleep(100);
    }
    assert(/WebRTC on UDP/.test(serverLog), `the server did not start WebRTC: ${serverLog.slice(-1500)}`);
  });

  if (serverReady) await check('WebRTC without the key: refused (401), and the extension says where the key comes from', async () => {
    const r = await hook.evaluate(`tabagentTest.settings({ transport: 'auto', serverUrl: '${serverUrl}', apiKey: '' })`);
    assert(!r.ok, `connected without the key: ${brief(r)}`);
    assert(/HTTP 401/.test(JSON.stringify(r)) && /tabagent token/.test(JSON.stringify(r)), `the failure: ${brief(r)}`);
  });
  const webrtcUp = serverReady && (await check('WebRTC: with the host gone and the key pasted, auto falls back to the real server; Health over the data channel', async () => {
    const r = await hook.evaluate(`tabagentTest.settings({ transport: 'auto', serverUrl: '${serverUrl}', apiKey: '${serverKey}' })`);
    assert(r.ok && r.status?.transport === 'webrtc' && r.status?.state === 'connected', `reconnect: ${brief(r)}`);
    const h = await hook.evaluate(`tabagentTest.request('Health', {}, {timeoutMs: 30000})`);
    assert(h.ok && h.reply.response_type === 'Health' && h.reply.status === 'ok', `Health: ${brief(h)}`);
    const s = await hook.evaluate(`tabagentTest.status()`);
    assert(s.transport === 'webrtc' && s.state === 'connected', `status ${brief(s)}`);
    assert(/WebRTC session \S+ created/.test(serverLog), 'the server logged no WebRTC session');
    console.log(`# WebRTC Health: ${brief(h.reply).slice(0, 300)}`);
  }));

  const webrtcSteps = [
    ['WebRTC: a streamed Chat reply from the tiny model', async () => {
      const r = await hook.evaluate(`tabagentTest.stream('Chat', ${JSON.stringify(chatFields(TINY, 'Say hello.', 24))}, {timeoutMs: ${SLOW}})`);
      assertStreamed(r, TINY, 2);
    }],
    ['WebRTC: a streamed Chat reply from the real Gemma 3 270M', async () => {
      const r = await hook.evaluate(`tabagentTest.stream('Chat', ${JSON.stringify(chatFields(GEMMA, 'Name three colours.', 32))}, {timeoutMs: ${SLOW}})`);
      assertStreamed(r, GEMMA, 3);
      console.log(`# Gemma over WebRTC: ${JSON.stringify(r.text)}`);
    }],
    ['WebRTC: the side panel streams a Gemma reply (screenshots)', async () => {
      const p = await hook.evaluate(`tabagentTest.request('SetParams', {max_tokens: 96})`);
      assert(p.ok, `SetParams: ${brief(p)}`);
      await panelChat('webrtc', 'Write one sentence about the mountains.');
    }],
  ];
  for (const [name, fn] of /** @type {[string, () => Promise<void>][]} */ (webrtcSteps)) {
    if (webrtcUp) await check(name, fn);
    else if (wanted(name)) checks.skip(name, 'no WebRTC connection to the server (see above)');
  }

  await check('no uncaught errors in extension pages', async () => {
    assert(pageErrors.length === 0, pageErrors.join('\n'));
  });
} catch (e) {
  checks.skip('the test harness itself', /** @type {Error} */ (e).stack ?? String(e));
} finally {
  if (chrome) {
    await chrome.close();
    writeFileSync(join(out, 'chromium-and-native-host.log'), chrome.stderr());
  }
  const s = /** @type {import('node:child_process').ChildProcess | null} */ (server);
  if (s && s.exitCode === null) {
    const exited = new Promise((r) => s.once('exit', r));
    s.kill('SIGTERM');
    await Promise.race([exited, sleep(5000)]);
    if (s.exitCode === null) s.kill('SIGKILL');
  }
  writeFileSync(join(out, 'server.log'), serverLog);
  pageServer?.close();
  if (process.env.E2E_KEEP !== '1') rmSync(work, { recursive: true, force: true, maxRetries: 3 });
}
console.log(`# screenshots and logs in ${out}`);
process.exit(checks.summary());
