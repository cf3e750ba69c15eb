// Headless Chromium makes an RTCPeerConnection to tabagent and talks over the
// data channel: `node run.js /path/to/tabagent`. Run it through run.sh, which
// puts everything in a network namespace with loopback only.
//
// The page is served from http://127.0.0.1:<port> and holds the microphone
// permission: Chromium then offers real 127.0.0.1 candidates instead of mDNS
// names. tabagent allows that origin through TABAGENT_CORS_ORIGINS.
'use strict';
const {spawn, execFileSync} = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const {chromium} = require('playwright-core');

const binary = process.argv[2];
if (!binary) {
  console.error('usage: node run.js /path/to/tabagent');
  process.exit(2);
}
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const fail = (message) => {
  console.error(`browser test FAILED: ${message}`);
  process.exitCode = 1;
};
const check = (ok, message) => ok || fail(message);

function servePage() {
  const page = fs.readFileSync(path.join(__dirname, 'page.html'));
  const server = http.createServer((req, res) => {
    res.writeHead(200, {'Content-Type': 'text/html'});
    res.end(page);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// The API key the page sends with its signaling requests.
const KEY = 'browser-test-key';

function startTabagent(pageOrigin, dataDir) {
  const child = spawn(binary, ['--mode', 'webrtc', '--bind', '127.0.0.1:0'], {
    env: {
      PATH: process.env.PATH,
      HOME: dataDir,
      TABAGENT_DATA_DIR: dataDir,
      TABAGENT_CORS_ORIGINS: pageOrigin,
      TABAGENT_API_KEY: KEY,
      // Throughput runs send thousands of requests a second on one session.
      TABAGENT_RATE_LIMIT: '0',
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

async function main() {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tabagent-browser-'));
  const pageServer = await servePage();
  const pageOrigin = `http://127.0.0.1:${pageServer.address().port}`;
  const {child, api} = await startTabagent(pageOrigin, dataDir);
  let browser;
  try {
    const health = await (await fetch(`${api}/health`)).json();
    let chatModel = null;
    if (health.features.includes('llama')) {
      fs.mkdirSync(path.join(dataDir, 'models'), {recursive: true});
      const script = path.join(__dirname, '..', 'fixtures', 'make_tiny_gguf.py');
      execFileSync('python3', [script, path.join(dataDir, 'models', 'tiny.gguf')]);
      chatModel = 'tiny';
    }
    browser = await chromium.launch({
      executablePath: chromiumPath,
      // Without --allow-loopback-in-peer-connection Chromium gathers no
      // candidate at all in a namespace that has only loopback.
      args: ['--no-sandbox', '--disable-features=WebRtcHideLocalIpsWithMdns',
        '--allow-loopback-in-peer-connection',
        '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream'],
    });
    const context = await browser.newContext();
    await context.grantPermissions(['microphone'], {origin: pageOrigin});
    const page = await context.newPage();
    page.on('console', (m) => process.env.TABAGENT_TEST_LOG && console.error(`page: ${m.text()}`));
    await page.goto(pageOrigin);
    const result = await page.evaluate(([a, m, k]) => runTest(a, m, k), [api, chatModel, KEY]);

    check(result.answerHasLoopback, 'the answer has no 127.0.0.1 candidate');
    check(result.health.response_type === 'Health' && result.health.done === true,
      `Health: ${JSON.stringify(result.health)}`);
    const bad = result.badJson.pop();
    check(bad.response_type === 'Error' && bad.error.status === 400, `bad JSON: ${JSON.stringify(bad)}`);
    if (chatModel) {
      const chunks = result.chat.filter((r) => r.response_type === 'ChatChunk');
      const last = result.chat[result.chat.length - 1];
      check(chunks.length >= 2 && chunks.every((c) => c.done === false),
        `streamed chat chunks: ${JSON.stringify(result.chat).slice(0, 500)}`);
      check(last.response_type === 'ChatComplete' && last.done === true,
        `chat final reply: ${JSON.stringify(last).slice(0, 500)}`);
      result.chatChunks = chunks.length;
    } else {
      console.log('chat skipped: this tabagent build has no llama engine');
    }
    check(result.session.state === 'connected', `session: ${JSON.stringify(result.session)}`);
    delete result.chat;
    delete result.badJson;
    console.log(JSON.stringify({browser: 'chromium ' + browser.version(), ...result}, null, 1));
  } finally {
    if (browser) await browser.close();
    child.kill();
    pageServer.close();
    fs.rmSync(dataDir, {recursive: true, force: true});
  }
  if (!process.exitCode) console.log('browser test passed');
}

main().catch((e) => {
  fail(e.stack || String(e));
});
