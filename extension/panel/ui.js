// The side panel's DOM handles (every element sidepanel.html gives an id the
// code uses) and the small text helpers all its parts share: the notice line,
// how an error reads, and a debounce.

import { TabAgentError } from '../lib/client.js';

/** @param {string} id */
export const $ = (id) => /** @type {any} */ (document.getElementById(id));

export const ui = {
  statusDot: $('status-dot'),
  statusText: $('status-text'),
  retry: $('retry'),
  newChat: $('new-chat'),
  historyToggle: $('history-toggle'),
  openOptions: $('open-options'),
  activity: $('activity'),
  activityText: $('activity-text'),
  activityProgress: /** @type {HTMLProgressElement} */ ($('activity-progress')),
  memoryWarning: $('memory-warning'),
  memoryText: $('memory-text'),
  memoryDismiss: $('memory-dismiss'),
  modelSelect: /** @type {HTMLSelectElement} */ ($('model-select')),
  modelLoad: $('model-load'),
  modelUnload: $('model-unload'),
  modelRefresh: $('model-refresh'),
  pullForm: $('pull-form'),
  pullUrl: $('pull-url'),
  pullName: $('pull-name'),
  pullSha: $('pull-sha'),
  pullStart: $('pull-start'),
  pullProgress: $('pull-progress'),
  pullText: $('pull-text'),
  history: $('history'),
  historySearch: $('history-search'),
  historyList: $('history-list'),
  messages: $('messages'),
  empty: $('empty'),
  system: $('system'),
  systemPrompt: $('system-prompt'),
  chatSettings: $('chat-settings'),
  chatTemperature: $('chat-temperature'),
  chatTopP: $('chat-top-p'),
  chatMaxTokens: $('chat-max-tokens'),
  composer: $('composer'),
  input: /** @type {HTMLTextAreaElement} */ ($('input')),
  askPage: $('ask-page'),
  stop: $('stop'),
  send: $('send'),
  notice: $('notice'),
};

/** @param {string} text */
export function notice(text) {
  ui.notice.textContent = text;
}

/** @param {unknown} e */
export function errorText(e) {
  if (e instanceof TabAgentError) {
    if (e.type === 'unavailable') {
      return `tabagent is not reachable (${e.detail}). Install the native host (see the extension's README) or start the server and check its URL in Settings.`;
    }
    return e.message;
  }
  return e instanceof Error ? e.message : String(e);
}

/**
 * @param {() => void} fn
 * @param {number} ms
 */
export function debounce(fn, ms) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let t;
  return () => {
    clearTimeout(t);
    t = setTimeout(fn, ms);
  };
}
