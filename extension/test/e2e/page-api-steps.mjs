// The page API steps of the real browser test (real.mjs): a web page
// written for Chrome's built-in AI (test/e2e/page/) served on loopback
// origins, against the real binary and model over native messaging.
//   enabled origin (by policy):  conformance list, create/prompt/promptStreaming
//                                with real text, responseConstraint JSON that
//                                validates, an AbortSignal that stops the job,
//                                no reach beyond the Prompt API, the browser's
//                                own global left alone;
//   origin not enabled:          NotAllowedError, and the server sees nothing;
//   browser's globals deleted:   the extension defines them, and the same page
//                                runs its conformance list and scenario on them;
//   origin opted in to replace:  the globals are tabagent's.
import { createServer } from 'node:http';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { assert, ext, id, sleep } from './harness.mjs';

const PAGE_DIR = join(ext, 'test', 'e2e', 'page');
const GLOBALS = ['LanguageModel', 'Summarizer', 'Writer', 'Rewriter', 'Translator', 'LanguageDetector'];

/**
 * Serve the test page on 127.0.0.1, on two ports (two origins), and the
 * same first port as `localhost` (a third origin).
 * @returns {Promise<{ports: number[], close: () => void}>}
 */
export async function startPageServer() {
  const files = { '/index.html': 'text/html', '/page.js': 'text/javascript' };
  const handler = (/** @type {import('node:http').IncomingMessage} */ req, /** @type {import('node:http').ServerResponse} */ res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname.replace(/^\/$/, '/index.html');
    const type = /** @type {Record<string, string>} */ (files)[path];
    if (!type) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' }).end(readFileSync(join(PAGE_DIR, path.slice(1))));
  };
  const servers = [createServer(handler), createServer(handler)];
  const ports = await Promise.all(
    servers.map(
      (s) => new Promise((ok) => s.listen(0, '127.0.0.1', () => ok(/** @type {import('node:net').AddressInfo} */ (s.address()).port))),
    ),
  );
  return { ports: /** @type {number[]} */ (ports), close: () => servers.forEach((s) => s.close()) };
}

/**
 * The managed policy enabling `origins` for the extension, in a private
 * copy of /etc/chromium bind-mounted over the real one. Only inside the
 * private mount namespace run-real.sh makes (`unshare --mount`): the host's
 * /etc is never written.
 * @param {string} work @param {string[]} origins @param {(cmd: string, args: string[]) => {code: number | null, text: string}} run
 */
export function installPolicy(work, origins, run) {
  if (process.env.TABAGENT_E2E_PRIVATE_MOUNT !== '1') throw new Error('not in a private mount namespace (run through run-real.sh)');
  const etc = join(work, 'etc-chromium');
  mkdirSync(join(etc, 'policies', 'managed'), { recursive: true });
  const copy = run('cp', ['-a', '/etc/chromium/.', etc]);
  assert(copy.code === 0, `cp: ${copy.text}`);
  const policy = { '3rdparty': { extensions: { [id]: { enabledOrigins: origins } } } };
  writeFileSync(join(etc, 'policies', 'managed', 'tabagent-e2e.json'), JSON.stringify(policy, null, 2));
  const mount = run('mount', ['--bind', etc, '/etc/chromium']);
  assert(mount.code === 0, `mount --bind: ${mount.text}`);
}

/**
 * @param {object} ctx
 * @param {(name: string, fn: () => Promise<void>) => Promise<boolean>} ctx.check
 * @param {(url: string, width?: number, height?: number, preScript?: string) => Promise<import('./harness.mjs').Page>} ctx.open
 * @param {import('./harness.mjs').Page} ctx.hook   the extension's test hook page
 * @param {() => string} ctx.log    the native host's log so far
 * @param {number[]} ctx.ports      the page server's two ports
 * @param {string} ctx.model        the chat model pages should get
 * @param {number} ctx.slow         timeout for model work
 */
export async function pageApiSteps({ check, open, hook, log, ports, model, slow }) {
  const enabled = `http://127.0.0.1:${ports[0]}`;
  const replacing = `http://127.0.0.1:${ports[1]}`;
  const notEnabled = `http://localhost:${ports[0]}`;
  const accessLines = () => log().split('\n').filter((l) => l.includes('tabagent::access'));
  /** @param {any} v */
  const brief = (v) => JSON.stringify(v).slice(0, 1200);

  await check('page API: the policy enables the test origin (chrome.storage.managed)', async () => {
    const managed = await hook.evaluate(`chrome.storage.managed.get('enabledOrigins')`);
    assert(JSON.stringify(managed.enabledOrigins) === JSON.stringify([enabled]), `managed storage: ${brief(managed)}`);
    await hook.evaluate(`chrome.storage.local.set({pageModel: ${JSON.stringify(model)}, pageAccess: {${JSON.stringify(replacing)}: {enabled: true, replace: true}}})`);
    await hook.waitFor(`chrome.scripting.getRegisteredContentScripts().then(l => l.some(s => s.id === 'tabagent-page-replace'))`, 10_000);
  });

  const page = await open(`${enabled}/index.html`);
  await page.waitFor(`typeof conformance === 'function' && Boolean(navigator.tabagent)`, 15_000);

  await check('page API: the conformance list of the implemented IDL members passes on navigator.tabagent', async () => {
    const results = await page.evaluate(`conformance('tabagent')`);
    const failed = results.filter((/** @type {any[]} */ r) => !r[1]);
    assert(results.length >= 60 && failed.length === 0, `${failed.length} of ${results.length} failed: ${brief(failed)}`);
    console.log(`# conformance: ${results.length} checks passed`);
  });

  await check('page API: create() then prompt() and promptStreaming() answer with text from the real model', async () => {
    const r = await page.evaluate(`scenario('tabagent')`);
    assert(typeof r.answer === 'string' && r.answer.trim().length > 0, `prompt: ${brief(r)}`);
    assert(r.chunks.length >= 2 && r.chunks.join('').trim().length > 0, `promptStreaming: ${brief(r)}`);
    assert(r.progress.length >= 2 && r.progress.at(-1) === 1, `downloadprogress: ${brief(r.progress)}`);
    assert(r.contextWindow > 0 && r.inputQuota === r.contextWindow, `contextWindow ${r.contextWindow}`);
    assert(r.usageAfterCreate > 0 && r.contextUsage > r.usageAfterCreate && r.measured > 0, `usage: ${brief(r)}`);
    console.log(`# page prompt(): ${JSON.stringify(r.answer.slice(0, 120))}; promptStreaming(): ${r.chunks.length} chunks ${JSON.stringify(r.chunks.join('').slice(0, 120))}; context ${r.contextUsage}/${r.contextWindow}`);
  });

  await check('page API: responseConstraint gives JSON that validates against the schema', async () => {
    const r = await page.evaluate(`structured('tabagent')`);
    let v;
    try {
      v = JSON.parse(r.text);
    } catch {
      throw new Error(`not JSON: ${brief(r)}`);
    }
    assert(typeof v === 'object' && v !== null && !Array.isArray(v), `not an object: ${r.text}`);
    assert(Object.keys(v).sort().join() === 'city,country,population', `keys: ${r.text}`);
    assert(typeof v.city === 'string' && typeof v.country === 'string' && Number.isInteger(v.population), `types: ${r.text}`);
    console.log(`# responseConstraint: ${r.text}`);
  });

  await check('page API: an AbortSignal stops a stream, and the server stops the job', async () => {
    const stopsBefore = accessLines().filter((l) => / StopGeneration 200 /.test(l)).length;
    const r = await page.evaluate(`abortStream('tabagent')`);
    assert(r.error === 'AbortError' && r.chunks.length === 2, `abort: ${brief(r)}`);
    // the server answers the StopGeneration, then logs the Chat it ended, short of max_tokens (64)
    const end = Date.now() + 30_000;
    for (;;) {
      const lines = accessLines();
      const stop = lines.findIndex((l, i) => / StopGeneration 200 /.test(l) && lines.slice(0, i + 1).filter((x) => / StopGeneration 200 /.test(x)).length > stopsBefore);
      const chat = stop >= 0 ? lines.slice(stop).find((l) => / Chat 200 /.test(l)) : undefined;
      if (chat) {
        const tokens = Number(/completion_tokens=(\d+)/.exec(chat)?.[1]);
        assert(tokens < 64, `the stopped Chat still made ${tokens} tokens: ${chat}`);
        console.log(`# stopped: ${chat.replace(/^.*\] /, '')}`);
        break;
      }
      assert(Date.now() < end, `the server logged no stopped Chat: ${lines.slice(-5).join('\n')}`);
      await sleep(100);
    }
  });

  await check('page API: a page reaches nothing but the Prompt API (no sessions, documents, models)', async () => {
    const types = ['ListSessions', 'ChatHistory', 'SearchHistory', 'TruncateSession', 'SetSessionSettings', 'RagQuery', 'ListCollections', 'ListModels', 'LoadModel', 'DeleteModel', 'Subscribe', 'SetParams'];
    const r = await page.evaluate(`raw(${JSON.stringify(types)})`);
    for (const t of types) assert(r[t] === 'not_allowed', `${t}: ${brief(r)}`);
    const keys = await page.evaluate(`Object.keys(navigator.tabagent).sort()`);
    assert(JSON.stringify(keys) === JSON.stringify([...GLOBALS].sort()), `navigator.tabagent has ${keys}`);
  });

  await check("page API: with the browser's LanguageModel present and no opt-in, the browser's stays", async () => {
    const g = await page.evaluate(`globals()`);
    assert(g.LanguageModel === 'browser', `globals: ${brief(g)}`);
    console.log(`# globals on ${enabled}: ${brief(g)}`);
  });

  await check('page API: an origin that was not enabled gets NotAllowedError and the server sees no request', async () => {
    const other = await open(`${notEnabled}/index.html`);
    await other.waitFor(`typeof refused === 'function' && Boolean(navigator.tabagent)`, 15_000);
    // earlier requests may still be finishing: wait until the log is quiet
    let before = -1;
    for (let i = 0; i < 100 && before !== accessLines().length; i++) {
      before = accessLines().length;
      await sleep(1000);
    }
    const r = await other.evaluate(`refused('tabagent')`);
    assert(/^NotAllowedError: .*not enabled/.test(r.create) && /^NotAllowedError/.test(r.availability), `got ${brief(r)}`);
    await sleep(1000);
    const after = accessLines();
    assert(after.length === before, `the server saw requests: ${after.slice(before).join('\n')}`);
    const asked = await hook.evaluate(`chrome.storage.local.get('pageAsked').then(s => Object.keys(s.pageAsked ?? {}))`);
    assert(asked.includes(notEnabled), `not listed as asking: ${brief(asked)}`);
  });

  await check("page API: with the browser's globals deleted first, the extension defines them and the same page runs on them", async () => {
    const del = GLOBALS.map((n) => `delete globalThis.${n};`).join(' ');
    const bare = await open(`${enabled}/index.html`, 420, 760, del);
    await bare.waitFor(`typeof conformance === 'function' && Boolean(navigator.tabagent)`, 15_000);
    const g = await bare.evaluate(`globals()`);
    assert(GLOBALS.every((n) => g[n] === 'tabagent'), `globals: ${brief(g)}`);
    const results = await bare.evaluate(`conformance('global')`);
    const failed = results.filter((/** @type {any[]} */ r) => !r[1]);
    assert(failed.length === 0, `conformance through the globals: ${brief(failed)}`);
    const r = await bare.evaluate(`scenario('global')`);
    assert(r.answer.trim().length > 0 && r.chunks.length >= 2, `scenario through the globals: ${brief(r)}`);
  });

  await check('page API: on an origin opted in to replacing, the globals are tabagent\'s', async () => {
    const p = await open(`${replacing}/index.html`);
    await p.waitFor(`typeof globals === 'function' && Boolean(navigator.tabagent)`, 15_000);
    const g = await p.evaluate(`globals()`);
    assert(GLOBALS.every((n) => g[n] === 'tabagent'), `globals: ${brief(g)}`);
  });

  await check('page API: the options page lists the sites, offers the one that asked, and revokes', async () => {
    const opts = await open(`chrome-extension://${id}/options.html`);
    await opts.waitFor(`document.getElementById('sites').textContent.includes(${JSON.stringify(replacing)})`, 10_000);
    const listed = await opts.evaluate(`document.getElementById('sites').textContent`);
    assert(listed.includes(`${enabled} `) && listed.includes('(enabled by policy)'), `sites: ${listed}`);
    await opts.waitFor(`document.getElementById('sites-asked').textContent.includes(${JSON.stringify(notEnabled)})`, 10_000);
    // revoke the replacing origin: its pages are refused from then on
    await opts.evaluate(`[...document.querySelectorAll('#sites li')].find(li => li.textContent.includes(${JSON.stringify(replacing)})).querySelector('button').click()`);
    await hook.waitFor(`chrome.storage.local.get('pageAccess').then(s => !(${JSON.stringify(replacing)} in (s.pageAccess ?? {})))`, 10_000);
    const p = await open(`${replacing}/index.html`);
    await p.waitFor(`typeof refused === 'function' && Boolean(navigator.tabagent)`, 15_000);
    const r = await p.evaluate(`refused('tabagent')`);
    assert(/^NotAllowedError/.test(r.create), `after revoking: ${brief(r)}`);
    // allow the one that asked: its page can now create a session
    await opts.waitFor(`document.getElementById('sites-asked').textContent.includes(${JSON.stringify(replacing)})`, 10_000);
    await opts.evaluate(`[...document.querySelectorAll('#sites-asked li')].find(li => li.textContent.includes(${JSON.stringify(notEnabled)})).querySelector('button').click()`);
    await hook.waitFor(`chrome.storage.local.get('pageAccess').then(s => s.pageAccess?.[${JSON.stringify(notEnabled)}]?.enabled === true)`, 10_000);
    const other = await open(`${notEnabled}/index.html`);
    await other.waitFor(`typeof refused === 'function' && Boolean(navigator.tabagent)`, 15_000);
    const ok = await other.evaluate(`navigator.tabagent.LanguageModel.availability()`);
    assert(ok === 'available', `after allowing: ${ok}`);
  });
}
