// Actions on what the user selects: the context menu's built-in prompts
// (Summarize, Explain, Rephrase, Translate) and the user's own templates,
// with the variables {selection}, {page_title} and {url}. Pure: the service
// worker builds the menu and the prompt here, stores it as the pending
// action, and the side panel sends it (panel/actions.js).

/** chrome.storage.local key of the user's templates ("Title | prompt" lines). */
export const TEMPLATES_KEY = 'promptTemplates';
/** chrome.storage.session keys of the action a side panel should run next start with this. */
const PENDING_ACTION_PREFIX = 'pendingAction:';
/** The keyboard command that opens the panel with the page as context. */
export const ASK_PAGE_COMMAND = 'ask-page';
/**
 * The chrome.storage.session key of the action the side panel of one window
 * should run next. Each window has its own, so a click in one window is run
 * by that window's panel alone, never by a panel open in another.
 * @param {number} windowId
 */
export function pendingActionKey(windowId) {
  return `${PENDING_ACTION_PREFIX}${windowId}`;
}

/** Menu item ids of user templates start with this. */
const USER_PREFIX = 'user-';

/** @typedef {{id: string, title: string, prompt: string}} Template */

/** @type {readonly Template[]} */
export const BUILTIN_ACTIONS = Object.freeze([
  { id: 'summarize', title: 'Summarize', prompt: 'Summarize this text in a few sentences:\n\n{selection}' },
  { id: 'explain', title: 'Explain', prompt: 'Explain this text simply (it is from "{page_title}"):\n\n{selection}' },
  { id: 'rephrase', title: 'Rephrase', prompt: 'Rephrase this text more clearly, keeping its meaning:\n\n{selection}' },
  { id: 'translate', title: 'Translate to English', prompt: 'Translate this text to English:\n\n{selection}' },
]);

/**
 * The user's templates from the options page: one per line, `Title | prompt`
 * (`\n` in the prompt is a new line); malformed lines are skipped.
 * @param {unknown} raw
 * @returns {Template[]}
 */
export function parseTemplates(raw) {
  if (typeof raw !== 'string') return [];
  return raw
    .split('\n')
    .map((line) => line.split('|'))
    .filter((parts) => parts.length >= 2 && parts[0].trim() && parts.slice(1).join('|').trim())
    .slice(0, 20)
    .map((parts, i) => ({ id: `${USER_PREFIX}${i}`, title: parts[0].trim(), prompt: parts.slice(1).join('|').trim().replaceAll('\\n', '\n') }));
}

/**
 * Fill a template's variables. Without a selection, {selection} is the page
 * itself (its title and address), so the page menu works too.
 * @param {string} template
 * @param {{selection?: string, pageTitle?: string, url?: string}} vars
 */
export function fillTemplate(template, vars) {
  const title = vars.pageTitle ?? '';
  const url = vars.url ?? '';
  const selection = vars.selection?.trim() || `the page "${title}" (${url})`;
  return template.replace(/\{(selection|page_title|url)\}/g, (_, name) => (name === 'selection' ? selection : name === 'page_title' ? title : url));
}

/**
 * The prompt a menu click asks for, or null for an unknown item.
 * @param {string} itemId
 * @param {Template[]} templates the user's
 * @param {{selection?: string, pageTitle?: string, url?: string}} vars
 */
export function actionPrompt(itemId, templates, vars) {
  const t = [...BUILTIN_ACTIONS, ...templates].find((a) => a.id === itemId);
  return t ? { title: t.title, prompt: fillTemplate(t.prompt, vars) } : null;
}
