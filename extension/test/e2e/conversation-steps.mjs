// The conversation-control steps of the real browser test (real.mjs), over
// native messaging with the real Gemma: the side panel's own settings for
// the chat (model, max tokens) kept with the session on the server, the
// context-usage meter under an answer, "regenerate" and "edit" each
// producing a new answer while the server's history (ChatHistory through
// the test hook) holds exactly the turns the panel shows, and the history
// search box finding the chat by a word that is only in a message's body.
import { assert } from './harness.mjs';

/**
 * @param {object} ctx
 * @param {(name: string, fn: () => Promise<void>) => Promise<boolean>} ctx.check
 * @param {(url: string, width?: number, height?: number, preScript?: string) => Promise<import('./harness.mjs').Page>} ctx.open
 * @param {import('./harness.mjs').Page} ctx.hook
 * @param {string} ctx.extensionId
 * @param {string} ctx.model
 * @param {number} ctx.slow
 */
export async function conversationSteps({ check, open, hook, extensionId, model, slow }) {
  /** @type {import('./harness.mjs').Page | null} */
  let panel = null;
  /** @type {string | null} */
  let sessionId = null;
  const first = 'Tell me about zebras.';
  const edited = 'Tell me about giraffes.\nAlso mention okapis.';

  /** The server's history of the chat, oldest first. */
  const serverTurns = async () => {
    const r = await hook.evaluate(`tabagentTest.request('ChatHistory', {session_id: ${JSON.stringify(sessionId)}, order: 'oldest'})`);
    assert(r.ok, `ChatHistory: ${JSON.stringify(r).slice(0, 500)}`);
    return r.reply;
  };
  /** What the panel shows: role and text of each message. */
  const shown = () =>
    /** @type {Promise<{role: string, text: string}[]>} */ (
      /** @type {import('./harness.mjs').Page} */ (panel).evaluate(`[...document.querySelectorAll('#messages article.msg')].map(a => ({
        role: a.classList.contains('user') ? 'user' : a.classList.contains('error') ? 'error' : 'assistant',
        text: a.querySelector('.body').textContent,
      }))`)
    );
  /** Waits for the answer in flight to finish; returns the new answer's article count. */
  const settled = async () => {
    const p = /** @type {import('./harness.mjs').Page} */ (panel);
    await p.waitFor(`document.querySelectorAll('.msg.assistant .body').length > 0 && !document.querySelector('.pending') && !document.getElementById('send').disabled`, slow);
    const err = await p.evaluate(`document.querySelector('.msg.error')?.textContent ?? ''`);
    assert(!err, `the panel shows an error: ${err}`);
  };
  /** The panel's turns match the server's: the same users, as many answers. */
  const matchesServer = async () => {
    const server = await serverTurns();
    const turns = server.messages.map((/** @type {any} */ m) => ({ role: m.role, content: m.content }));
    const view = await shown();
    assert(view.length === turns.length, `the panel shows ${view.length} messages, the server has ${turns.length}: ${JSON.stringify(turns).slice(0, 600)}`);
    view.forEach((v, i) => {
      assert(v.role === turns[i].role, `message ${i}: ${v.role} shown, ${turns[i].role} kept`);
      if (v.role === 'user') assert(v.text === turns[i].content, `message ${i}: ${JSON.stringify(v.text)} shown, ${JSON.stringify(turns[i].content)} kept`);
      else assert(turns[i].content.trim().length > 0, `empty answer kept: ${JSON.stringify(turns[i])}`);
    });
    return server;
  };

  await check('side panel: an answer shows a context-usage meter; the chat keeps its model and max tokens on the server', async () => {
    panel = await open(`chrome-extension://${extensionId}/sidepanel.html`, 420, 900);
    const p = panel;
    await p.waitFor(`[...document.getElementById('model-select').options].some(o => o.value === ${JSON.stringify(model)})`, 30_000);
    await p.evaluate(`(() => {
      const s = document.getElementById('model-select');
      s.value = ${JSON.stringify(model)};
      s.dispatchEvent(new Event('change'));
      document.getElementById('new-chat').click();
      const max = document.getElementById('chat-max-tokens');
      max.value = '24';
      max.dispatchEvent(new Event('change'));
      document.getElementById('input').value = ${JSON.stringify(first)};
      document.getElementById('composer').requestSubmit();
      return true;
    })()`);
    await settled();
    await p.waitFor(`document.querySelector('.msg.assistant .context-meter meter') !== null`, 30_000);
    const meter = await p.evaluate(`({
      text: document.querySelector('.msg.assistant .context-meter').textContent,
      value: document.querySelector('.msg.assistant .context-meter meter').value,
    })`);
    const m = /context (\d+) \/ (\d+) tokens/.exec(meter.text);
    assert(m && Number(m[1]) > 0 && Number(m[1]) <= Number(m[2]), `meter: ${JSON.stringify(meter)}`);
    assert(meter.value > 0 && meter.value <= 1, `meter value ${meter.value}`);
    const sessions = await hook.evaluate(`tabagentTest.request('ListSessions', {})`);
    sessionId = sessions.reply?.sessions?.find((/** @type {any} */ s) => s.title === first)?.session_id ?? null;
    assert(sessionId, `no session titled ${first}: ${JSON.stringify(sessions).slice(0, 500)}`);
    // the settings are saved after the turn, without waiting: allow a moment
    let server = await serverTurns();
    for (let i = 0; i < 50 && !server.settings; i++) {
      await new Promise((r) => setTimeout(r, 100));
      server = await serverTurns();
    }
    assert(server.settings?.model === model && server.settings?.max_tokens === 24, `settings kept: ${JSON.stringify(server.settings)}`);
    const usage = server.messages.at(-1)?.metadata?.usage;
    assert(usage?.completion_tokens <= 24, `max_tokens 24 applied: ${JSON.stringify(usage)}`);
    await matchesServer();
    console.log(`# meter: ${meter.text}`);
  });

  await check('side panel: regenerate replaces the last answer with a new one, on the server too', async () => {
    const p = /** @type {import('./harness.mjs').Page} */ (panel);
    const before = await serverTurns();
    assert(before.messages.length === 2, `before: ${before.messages.length} messages`);
    await p.evaluate(`(() => { document.querySelector('.msg.assistant').dataset.old = '1'; document.querySelector('.msg.assistant .turn-controls .regenerate').click(); return true; })()`);
    await p.waitFor(`!document.querySelector('.msg.assistant[data-old]')`, 30_000);
    await settled();
    const after = await matchesServer();
    assert(after.messages.length === 2, `after: ${JSON.stringify(after.messages).slice(0, 500)}`);
    assert(after.messages[0].content === first, 'the question is the same');
    assert(after.messages[1].id > before.messages[1].id, 'a new answer was stored in place of the old one');
    console.log(`# regenerated: ${JSON.stringify(after.messages[1].content.slice(0, 120))} (was ${JSON.stringify(before.messages[1].content.slice(0, 120))})`);
  });

  await check('side panel: edit-and-resend replaces the question and its answer, on the server too', async () => {
    const p = /** @type {import('./harness.mjs').Page} */ (panel);
    const before = await serverTurns();
    await p.evaluate(`(() => {
      document.querySelector('.msg.assistant').dataset.old = '1';
      document.querySelector('.msg.user .turn-controls .edit').click();
      document.querySelector('.msg.user .edit-box textarea').value = ${JSON.stringify(edited)};
      document.querySelector('.msg.user .edit-box .resend').click();
      return true;
    })()`);
    await p.waitFor(`!document.querySelector('.msg.assistant[data-old]')`, 30_000);
    await settled();
    const after = await matchesServer();
    assert(after.messages.length === 2 && after.messages[0].content === edited, `after: ${JSON.stringify(after.messages).slice(0, 500)}`);
    assert(after.messages[0].id > before.messages[1].id, 'the edited question is a new turn');
    const sessions = await hook.evaluate(`tabagentTest.request('ListSessions', {})`);
    const entry = sessions.reply.sessions.find((/** @type {any} */ s) => s.session_id === sessionId);
    assert(entry?.title === 'Tell me about giraffes.' && entry.messages === 2, `session: ${JSON.stringify(entry)}`);
    await p.screenshot('sidepanel-edited.png');
  });

  await check("side panel: the history search finds the chat by a word in a message's body (the server's full-text search)", async () => {
    const p = /** @type {import('./harness.mjs').Page} */ (panel);
    await p.evaluate(`(() => {
      document.getElementById('history-toggle').click();
      const q = document.getElementById('history-search');
      q.value = 'okapi';
      q.dispatchEvent(new Event('input'));
      return true;
    })()`);
    await p.waitFor(`[...document.querySelectorAll('#history-list li.hit')].some(li => li.querySelector('.snippet mark'))`, 15_000);
    const hit = await p.evaluate(`(() => {
      const li = document.querySelector('#history-list li.hit');
      return { title: li.querySelector('.title').textContent, snippet: li.querySelector('.snippet').textContent, mark: li.querySelector('.snippet mark').textContent };
    })()`);
    assert(hit.title === 'Tell me about giraffes.', `hit: ${JSON.stringify(hit)}`);
    assert(/okapis/.test(hit.snippet) && hit.mark.toLowerCase() === 'okapi', `hit: ${JSON.stringify(hit)}`);
    // a word of the old, replaced question is gone from the server's index
    const gone = await hook.evaluate(`tabagentTest.request('SearchHistory', {query: 'zebras'})`);
    assert(gone.ok && !gone.reply.sessions.some((/** @type {any} */ s) => s.session_id === sessionId), `zebras still found: ${JSON.stringify(gone).slice(0, 500)}`);
    await p.screenshot('sidepanel-history-search.png');
  });
}
