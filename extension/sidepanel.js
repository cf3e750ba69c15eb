// The side panel's entry point: it wires the page's controls to the parts in
// panel/ and starts them. The parts: status.js (status line), activity.js
// (what the server pushes: model loading, pulls, unloads, low memory),
// models.js (model picker, load, unload, pull), chat-settings.js (this
// chat's model and parameters, preloading the model, the context meter),
// conversation.js (streamed chat, stop, "ask about this page"), turns.js
// (regenerate, edit-and-resend), messages.js (the message list),
// history.js (chats kept by the server, full-text search), ui.js and context.js (shared DOM
// handles, client and state). All traffic goes through the page's
// TabAgentClient to the service worker, which holds the real connection.

import { EVENT_CLIENT_STATUS, LocalReq, Req } from './lib/protocol.js';
import { loadSettings, saveSettings } from './lib/settings.js';
import { watchActions } from './panel/actions.js';
import { resetActivity, watchServer } from './panel/activity.js';
import { chat, client, rendererReady, state } from './panel/context.js';
import { askAboutPage, onSend, setBusy } from './panel/conversation.js';
import { preloadModel, showChatSettings, watchChatSettings } from './panel/chat-settings.js';
import { newChat, onHistorySearch, toggleHistory } from './panel/history.js';
import { loadOrUnload, pull, refreshModels } from './panel/models.js';
import { refreshStatus, showStatus } from './panel/status.js';
import { debounce, errorText, notice, ui } from './panel/ui.js';

async function retry() {
  ui.statusText.textContent = 'connecting…';
  ui.statusDot.dataset.state = 'connecting';
  try {
    await client.request(LocalReq.Reconnect, {}, { timeoutMs: 30_000 });
  } catch {
    // shown by refreshStatus
  }
  await refreshStatus();
  await refreshModels();
}

ui.composer.addEventListener('submit', onSend);
ui.input.addEventListener('keydown', (/** @type {KeyboardEvent} */ ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    onSend(null);
  } else if (ev.key === 'Escape' && state.busy) {
    chat.stop().catch(() => {});
  }
});
ui.stop.addEventListener('click', () => chat.stop().catch((e) => notice(`stop: ${errorText(e)}`)));
ui.askPage.addEventListener('click', askAboutPage);
ui.newChat.addEventListener('click', newChat);
ui.historyToggle.addEventListener('click', toggleHistory);
ui.historySearch.addEventListener('input', onHistorySearch);
ui.openOptions.addEventListener('click', () => chrome.runtime.openOptionsPage());
ui.retry.addEventListener('click', retry);
ui.modelRefresh.addEventListener('click', refreshModels);
ui.modelLoad.addEventListener('click', () => loadOrUnload(Req.LoadModel));
ui.modelUnload.addEventListener('click', () => loadOrUnload(Req.UnloadModel));
watchChatSettings();
ui.pullForm.addEventListener('submit', pull);
ui.systemPrompt.addEventListener(
  'input',
  debounce(() => saveSettings(chrome.storage.local, { systemPrompt: ui.systemPrompt.value }), 400),
);

async function start() {
  setBusy(false);
  const settings = await loadSettings(chrome.storage.local);
  ui.systemPrompt.value = settings.systemPrompt;
  if (settings.systemPrompt) ui.system.open = true;
  // Subscriptions outlive reconnects: the page client (and the service
  // worker's client upstream) send them again on every new connection.
  client
    .subscribe([EVENT_CLIENT_STATUS], (ev) => {
      const wasConnected = state.upstream?.state === 'connected';
      showStatus(ev.status);
      if (ev.status.state === 'connected' && !wasConnected) refreshModels();
      if (ev.status.state !== 'connected' && wasConnected) resetActivity();
    })
    .catch(() => {});
  watchServer({ onModelsChanged: refreshModels });
  await refreshStatus();
  await refreshModels();
  showChatSettings();
  // the first answer need not wait for the model the user chose to load
  const { model: chosen } = await chrome.storage.local.get('model');
  if (chosen && ui.modelSelect.value === chosen) void preloadModel();
  const renderer = await rendererReady;
  if (!renderer.rich) notice('Markdown is off: run `npm run build` in extension/ to copy the libraries.');
  // a context menu action or the keyboard command that opened the panel
  await watchActions();
}

start();
// keep the status fresh (and the service worker awake) while the panel is open
setInterval(() => {
  if (document.visibilityState === 'visible' && !state.busy) refreshStatus();
}, 25_000);
