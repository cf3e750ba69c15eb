// Actions on what the user selects: templates with {selection},
// {page_title} and {url}, the user's "Title | prompt" lines, and a menu
// click leaving the prompt for the side panel after opening it.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { BUILTIN_ACTIONS, actionPrompt, fillTemplate, parseTemplates, pendingActionKey } from '../lib/actions.js';
import { buildMenus, runCommand, runMenuAction } from '../lib/menus.js';

test('templates fill their variables; without a selection the page stands in', () => {
  assert.equal(fillTemplate('{selection} on {page_title} at {url}; {other}', { selection: ' text ', pageTitle: 'T', url: 'https://x/' }), 'text on T at https://x/; {other}');
  assert.equal(fillTemplate('Summarize {selection}', { pageTitle: 'T', url: 'https://x/' }), 'Summarize the page "T" (https://x/)');
  assert.deepEqual(BUILTIN_ACTIONS.map((a) => a.title), ['Summarize', 'Explain', 'Rephrase', 'Translate to English']);
});

test("the user's templates: one per line, Title | prompt", () => {
  const t = parseTemplates('Tweet | Make a tweet of: {selection}\nbroken line\n | no title\nQuote|a|b\\nc');
  assert.deepEqual(t, [
    { id: 'user-0', title: 'Tweet', prompt: 'Make a tweet of: {selection}' },
    { id: 'user-1', title: 'Quote', prompt: 'a|b\nc' },
  ]);
  assert.deepEqual(parseTemplates(undefined), []);
  assert.equal(actionPrompt('user-0', t, { selection: 'hi' })?.prompt, 'Make a tweet of: hi');
  assert.equal(actionPrompt('nope', t, {}), null);
});

function fakeChrome() {
  /** @type {Record<string, any>} */
  const local = { promptTemplates: 'Mine | Do {selection}' };
  /** @type {Record<string, any>} */
  const session = {};
  /** @type {any[]} */
  const calls = [];
  const api = {
    storage: {
      local: { get: async (/** @type {string} */ k) => ({ [k]: local[k] }) },
      session: { set: async (/** @type {Record<string, any>} */ v) => { calls.push(['session.set']); Object.assign(session, v); } },
    },
    sidePanel: { open: async (/** @type {any} */ o) => { calls.push(['open', o.tabId]); } },
    windows: { getLastFocused: async () => ({ id: 9 }) },
    contextMenus: {
      removeAll: async () => calls.push(['removeAll']),
      create: (/** @type {any} */ item) => calls.push(['create', item.id, item.parentId ?? null, item.contexts.join()]),
    },
  };
  return { api: /** @type {any} */ (api), session, calls };
}

test('the menu has the built-in actions and the user templates, on selections and pages', async () => {
  const { api, calls } = fakeChrome();
  await buildMenus(api);
  assert.deepEqual(calls.map((c) => c.slice(1, 3).join(':')), ['', 'tabagent:', 'summarize:tabagent', 'explain:tabagent', 'rephrase:tabagent', 'translate:tabagent', 'user-0:tabagent']);
  assert.ok(calls.slice(1).every((c) => c[3] === 'selection,page'));
});

test('a click opens the panel first (user gesture), then leaves the prompt for its window; the command asks about the page', async () => {
  const { api, session, calls } = fakeChrome();
  const pending = await runMenuAction(api, { menuItemId: 'summarize', selectionText: 'The sea is big.' }, { id: 4, windowId: 1, title: 'Sea', url: 'https://sea/' });
  assert.deepEqual(calls[0], ['open', 4]);
  assert.equal(session[pendingActionKey(1)].prompt, 'Summarize this text in a few sentences:\n\nThe sea is big.');
  assert.equal(pending?.kind, 'prompt');
  await runMenuAction(api, { menuItemId: 'user-0', selectionText: 'x' }, { id: 4, windowId: 1 });
  assert.equal(session[pendingActionKey(1)].prompt, 'Do x');
  await runCommand(api, 'ask-page', { id: 5, windowId: 1 });
  assert.equal(session[pendingActionKey(1)].kind, 'page');
  assert.deepEqual(calls.filter((c) => c[0] === 'open').map((c) => c[1]), [4, 4, 5]);
});

test("each window's panel gets its own pending action; with no tab, the last focused window's", async () => {
  const { api, session } = fakeChrome();
  await runMenuAction(api, { menuItemId: 'summarize', selectionText: 'one' }, { id: 4, windowId: 1 });
  await runMenuAction(api, { menuItemId: 'explain', selectionText: 'two' }, { id: 7, windowId: 2 });
  assert.match(session[pendingActionKey(1)].prompt, /one$/);
  assert.match(session[pendingActionKey(2)].prompt, /two$/);
  await runCommand(api, 'ask-page', undefined);
  assert.equal(session[pendingActionKey(9)].kind, 'page');
  assert.notEqual(pendingActionKey(1), pendingActionKey(2));
});
