// This chat's model and parameters (the model picker and the "This chat"
// fields, kept with the session on the server by lib/chat.js), preloading
// the chosen model when the panel opens or the pick changes (with "keep the
// model loaded" from the options page), and the context size of each
// loaded model for the meter under the answers.

import { contextMeter } from '../lib/chat-settings.js';
import { Req } from '../lib/protocol.js';
import { loadSettings } from '../lib/settings.js';
import { settleActivity } from './activity.js';
import { chat, client } from './context.js';
import { errorText, notice, ui } from './ui.js';

/** model id -> context size in tokens, from LoadModel and ListLoadedModels */
const contextSizes = new Map();

/** Show the chat's settings in the fields (and its model in the picker, if listed). */
export function showChatSettings() {
  const s = chat.settings;
  ui.chatTemperature.value = s.temperature ?? '';
  ui.chatTopP.value = s.top_p ?? '';
  ui.chatMaxTokens.value = s.max_tokens ?? '';
  const listed = [...ui.modelSelect.options].some((o) => o.value === s.model && !o.disabled);
  if (s.model && listed && ui.modelSelect.value !== s.model) {
    ui.modelSelect.value = s.model;
    preloadModel();
  }
  ui.chatSettings.open ||= s.temperature !== null || s.top_p !== null || s.max_tokens !== null;
}

export function watchChatSettings() {
  const changed = () =>
    chat
      .setSettings({ temperature: ui.chatTemperature.value, top_p: ui.chatTopP.value, max_tokens: ui.chatMaxTokens.value })
      .catch((e) => notice(`settings: ${errorText(e)}`));
  for (const input of [ui.chatTemperature, ui.chatTopP, ui.chatMaxTokens]) input.addEventListener('change', changed);
  ui.modelSelect.addEventListener('change', () => {
    chrome.storage.local.set({ model: ui.modelSelect.value });
    chat.setSettings({ model: ui.modelSelect.value }).catch(() => {});
    preloadModel();
  });
}

/**
 * Load the picked model now, so the first answer does not wait for it; a
 * model already loaded answers at once. With "keep the model loaded" it
 * stays loaded however long it is idle.
 */
export async function preloadModel() {
  const model = ui.modelSelect.value;
  if (!model) return;
  const { keepLoaded } = await loadSettings(chrome.storage.local);
  try {
    const loaded = await client.request(Req.LoadModel, { model, keep_loaded: keepLoaded }, { timeoutMs: 10 * 60_000 });
    if (typeof loaded.context_size === 'number') contextSizes.set(model, loaded.context_size);
  } catch (e) {
    notice(`${model}: ${errorText(e)}`);
  } finally {
    settleActivity(model);
  }
}

/**
 * The context size of a loaded model (null when it is not loaded or unknown).
 * @param {string} model
 */
async function contextSizeOf(model) {
  if (!contextSizes.has(model)) {
    try {
      const loaded = await client.request(Req.ListLoadedModels);
      for (const m of Array.isArray(loaded.models) ? loaded.models : []) {
        if (typeof m?.model === 'string' && typeof m.context_size === 'number') contextSizes.set(m.model, m.context_size);
      }
    } catch {
      // no meter, then
    }
  }
  return contextSizes.get(model) ?? null;
}

/**
 * Add the context-usage meter under an answer.
 * @param {HTMLElement} article
 * @param {string} model
 * @param {{prompt_tokens?: number, completion_tokens?: number} | null} usage
 */
export async function showContextMeter(article, model, usage) {
  const meter = contextMeter(usage, await contextSizeOf(model));
  if (!meter) return;
  const line = document.createElement('div');
  line.className = 'context-meter';
  const bar = document.createElement('meter');
  bar.min = 0;
  bar.max = 1;
  bar.low = 0.5;
  bar.high = 0.85;
  bar.optimum = 0;
  bar.value = meter.fraction;
  const text = document.createElement('span');
  text.className = 'muted';
  text.textContent = meter.text;
  line.title = 'The conversation so far (prompt) and this answer, over the model\'s context; the oldest turns are dropped when it is full.';
  line.append(bar, text);
  article.append(line);
}
