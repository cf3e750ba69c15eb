// The actions steps of the real browser test (real.mjs): the context
// menu's "Summarize" on a selection streams an answer from the real model
// into the side panel. A headless browser has no menu to click, so with the
// panel open the test calls, in the service worker, the very function the
// menu's onClicked runs (`tabagentMenuAction`).
import { assert } from './harness.mjs';

/**
 * Evaluate in the extension's service worker.
 * @param {import('./harness.mjs').Cdp} cdp @param {string} targetId @param {string} expression
 */
async function inWorker(cdp, targetId, expression) {
  const { sessionId } = await cdp.send('Target.attachToTarget', { targetId, flatten: true });
  const r = await cdp.send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true }, sessionId);
  await cdp.send('Target.detachFromTarget', { sessionId });
  if (r.exceptionDetails) throw new Error(r.exceptionDetails.exception?.description ?? r.exceptionDetails.text);
  return r.result.value;
}

/**
 * @param {object} ctx
 * @param {(name: string, fn: () => Promise<void>) => Promise<boolean>} ctx.check
 * @param {(url: string, width?: number, height?: number, preScript?: string) => Promise<import('./harness.mjs').Page>} ctx.open
 * @param {import('./harness.mjs').Cdp} ctx.cdp
 * @param {(timeoutMs?: number) => Promise<any>} ctx.findWorker
 * @param {import('./harness.mjs').Page} ctx.hook
 * @param {string} ctx.extensionId
 * @param {string} ctx.model
 * @param {number} ctx.slow
 */
export async function actionSteps({ check, open, cdp, findWorker, hook, extensionId, model, slow }) {
  await check('actions: context menu "Summarize" on a selection streams an answer into the side panel', async () => {
    await hook.evaluate(`chrome.storage.local.set({model: ${JSON.stringify(model)}})`);
    const worker = await findWorker();
    assert(worker, 'no service worker');
    const selection = 'The Pacific Ocean is the largest and deepest ocean on Earth. It covers about a third of the surface of the planet.';
    // one side panel, as a window has: close the ones earlier steps opened, open it, then click
    const { targetInfos } = await cdp.send('Target.getTargets');
    for (const t of targetInfos.filter((/** @type {any} */ t) => t.url.includes('/sidepanel.html'))) await cdp.send('Target.closeTarget', { targetId: t.targetId });
    // every partial render of the answer, watched from before the panel's own scripts run
    const watch = `window.__partials = [];
      document.addEventListener('DOMContentLoaded', () => new MutationObserver(() => {
        const b = document.querySelector('.msg.assistant .body');
        if (b && b.classList.contains('pending') && b.textContent) window.__partials.push(b.textContent.length);
      }).observe(document.getElementById('messages'), { subtree: true, childList: true, characterData: true }));`;
    const panel = await open(`chrome-extension://${extensionId}/sidepanel.html`, 420, 760, watch);
    await panel.waitFor(`[...document.getElementById('model-select').options].some(o => o.value === ${JSON.stringify(model)})`, 30_000);
    // the click's tab is in the panel's window: each window's panel runs only its own actions
    const windowId = await panel.evaluate(`chrome.windows.getCurrent().then(w => w.id)`);
    const pending = await inWorker(
      cdp,
      worker.targetId,
      `tabagentMenuAction({menuItemId: 'summarize', selectionText: ${JSON.stringify(selection)}}, {windowId: ${Number(windowId)}, title: 'Oceans', url: 'http://127.0.0.1/oceans'})`,
    );
    assert(pending?.kind === 'prompt' && pending.prompt.includes(selection), `pending action: ${JSON.stringify(pending)}`);
    await panel.waitFor(`document.querySelector('.msg.user') !== null`, 30_000).catch(async (e) => {
      const seen = await panel.evaluate(`chrome.storage.session.get(null).then(s => JSON.stringify({session: s, messages: document.getElementById('messages').innerText, status: document.getElementById('status-text').textContent}))`);
      throw new Error(`${e.message}; the panel: ${seen}`);
    });
    await panel.waitFor(`document.querySelector('.msg.assistant .body') && !document.querySelector('.pending')`, slow);
    const state = await panel.evaluate(`({
      user: document.querySelector('.msg.user').textContent,
      text: document.querySelector('.msg.assistant .body').textContent,
      error: document.querySelector('.msg.assistant.error, .msg.error')?.textContent ?? '',
      partials: window.__partials,
    })`);
    assert(!state.error, `the panel shows an error: ${state.error}`);
    assert(state.user.includes('Summarize this text') && state.user.includes('Pacific Ocean'), `the question: ${state.user}`);
    assert(state.text.trim().length > 0, 'empty answer');
    assert(new Set(state.partials).size >= 2, `the answer did not stream (partial renders: ${JSON.stringify(state.partials)})`);
    console.log(`# Summarize: ${JSON.stringify(state.text.slice(0, 200))}`);
    await panel.screenshot('sidepanel-action-summarize.png');
  });
}
