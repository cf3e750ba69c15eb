// Shared by the browser tests (smoke.mjs: mock host and mock signaling;
// real.mjs: the real tabagent binary): the extension's path and pinned id,
// a dependency-free DevTools protocol client over --remote-debugging-pipe,
// headless Chromium with a fresh profile, pages to evaluate in and
// screenshot, and a `check` that reports each step as ok / not ok and
// counts them for the final "N passed, N failed" line.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { extensionIdFromKey } from '../../scripts/keygen.mjs';

/** The extension's folder (the one `--load-extension` gets). */
export const ext = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The pinned id, derived from the manifest's `key`. */
export const id = extensionIdFromKey(JSON.parse(readFileSync(join(ext, 'manifest.json'), 'utf8')).key);

/** `$CHROMIUM`, or the first Chromium-like browser installed. */
export function findChromium() {
  return process.env.CHROMIUM ?? ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find(existsSync);
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** @param {unknown} cond @param {string} what */
export function assert(cond, what) {
  if (!cond) throw new Error(what);
}

/** Counts steps; each prints `ok - name` or `not ok - name` with the reason. */
export class Checks {
  passed = 0;
  failed = 0;
  /** @type {string[]} */
  failures = [];
  /** @param {string} name @param {() => Promise<void>} fn @returns {Promise<boolean>} */
  async check(name, fn) {
    try {
      await fn();
      this.passed++;
      console.log(`ok - ${name}`);
      return true;
    } catch (e) {
      this.failed++;
      this.failures.push(name);
      console.log(`not ok - ${name}\n  ${/** @type {Error} */ (e).stack?.split('\n').slice(0, 3).join('\n  ')}`);
      return false;
    }
  }
  /** A step that cannot run because an earlier one failed: counted as failed. @param {string} name @param {string} why */
  skip(name, why) {
    this.failed++;
    this.failures.push(name);
    console.log(`not ok - ${name}\n  not run: ${why}`);
  }
  summary() {
    console.log(`${this.passed} passed, ${this.failed} failed`);
    return this.failed === 0 ? 0 : 1;
  }
}

/** Chrome DevTools protocol over the pipe: JSON messages separated by NUL. */
export class Cdp {
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
    r.on('close', () => {
      for (const call of this.#calls.values()) call.reject(new Error('the browser closed the DevTools pipe'));
      this.#calls.clear();
    });
  }
  /** @param {string} method @param {object} [params] @param {string} [sessionId] @returns {Promise<any>} */
  send(method, params = {}, sessionId) {
    const id = this.#next++;
    this.w.write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + '\0');
    return new Promise((resolve, reject) => this.#calls.set(id, { resolve, reject }));
  }
}

/**
 * @typedef {object} Page
 * @property {(expression: string) => Promise<any>} evaluate
 * @property {(expression: string, timeoutMs?: number) => Promise<any>} waitFor
 * @property {(name: string) => Promise<string>} screenshot  file written in the output folder
 * @property {string} sessionId
 * @property {string} targetId
 */

/**
 * Start headless Chromium with the extension loaded in the fresh profile
 * `profile`, driven over --remote-debugging-pipe.
 * @param {{chromium: string, profile: string, out: string, args?: string[], env?: NodeJS.ProcessEnv}} opts
 */
export function launch({ chromium, profile, out, args = [], env = process.env }) {
  const all = [
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
    ...args,
  ];
  const browser = spawn(chromium, all, { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'], env });
  let stderr = '';
  browser.stderr?.on('data', (d) => {
    stderr += d;
    if (stderr.length > 1 << 20) stderr = stderr.slice(-(1 << 19));
  });
  const cdp = new Cdp(/** @type {any} */ (browser.stdio[3]), /** @type {any} */ (browser.stdio[4]));
  /** @type {string[]} */
  const pageErrors = [];
  cdp.listeners.push((msg) => {
    if (msg.method === 'Runtime.exceptionThrown') pageErrors.push(msg.params.exceptionDetails?.exception?.description ?? msg.params.exceptionDetails?.text);
    if (msg.method === 'Runtime.consoleAPICalled' && msg.params.type === 'error') pageErrors.push(msg.params.args.map((/** @type {any} */ a) => a.value ?? a.description).join(' '));
  });

  /**
   * Open a page in a new target; return an evaluator bound to it. `preScript`
   * runs in every document of it before the page's own scripts.
   * @param {string} url @returns {Promise<Page>}
   */
  async function open(url, width = 420, height = 760, preScript = '') {
    const { targetId } = await cdp.send('Target.createTarget', { url: 'about:blank' });
    const { sessionId } = await cdp.send('Target.attachToTarget', { targetId, flatten: true });
    await cdp.send('Runtime.enable', {}, sessionId);
    await cdp.send('Page.enable', {}, sessionId);
    await cdp.send('Emulation.setDeviceMetricsOverride', { width, height, deviceScaleFactor: 1, mobile: false }, sessionId);
    if (preScript) await cdp.send('Page.addScriptToEvaluateOnNewDocument', { source: preScript }, sessionId);
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
        if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${expression}`);
        await sleep(100);
      }
    };
    const screenshot = async (/** @type {string} */ name) => {
      const { data } = await cdp.send('Page.captureScreenshot', { format: 'png' }, sessionId);
      const file = join(out, name);
      writeFileSync(file, Buffer.from(data, 'base64'));
      return file;
    };
    return { evaluate, waitFor, screenshot, sessionId, targetId };
  }

  /** The extension's service worker target, or null after `timeoutMs`. */
  async function findWorker(timeoutMs = 10_000) {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      const { targetInfos } = await cdp.send('Target.getTargets');
      const w = targetInfos.find((/** @type {any} */ t) => t.type === 'service_worker' && t.url.startsWith(`chrome-extension://${id}/`));
      if (w) return w;
      await sleep(100);
    }
    return null;
  }

  /** The extension's entry in chrome://extensions (warnings, errors, state). */
  async function extensionInfo() {
    const page = await open('chrome://extensions');
    const info = await page.waitFor(
      `chrome.developerPrivate.getExtensionsInfo({includeDisabled: true, includeTerminated: true}).then(list => JSON.stringify(list.find(e => e.id === '${id}') ?? null))`,
    );
    return JSON.parse(info);
  }

  async function close() {
    const exited = new Promise((r) => browser.once('exit', r));
    browser.kill();
    await Promise.race([exited, sleep(5000)]);
    if (browser.exitCode === null && browser.signalCode === null) browser.kill('SIGKILL');
  }

  return { browser, cdp, pageErrors, open, findWorker, extensionInfo, close, stderr: () => stderr };
}
