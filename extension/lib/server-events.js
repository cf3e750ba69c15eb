// What the server is doing, as the side panel shows it: the events tabagent
// pushes (model load progress, loaded, unloaded, pull progress, low memory)
// folded into one small state, and that state turned into text. Pure: no
// DOM, no clock (time is an argument), so node tests cover it.

import { ServerEvent } from './protocol.js';
import { formatBytes } from './readers.js';

/**
 * @typedef {import('./protocol.js').Envelope} Envelope
 * @typedef {{done: number, total: number, at: number}} PullState
 * @typedef {object} Activity
 * @property {Map<string, number>} loads       model -> progress 0..1
 * @property {Map<string, PullState>} pulls     model -> bytes so far, size (0: unknown), when last heard
 * @property {{available: number, total: number} | null} lowMemory
 * @property {{model: string, text: string} | null} note   a one-off remark (the chat model was unloaded)
 * @typedef {{text: string, progress: number | null, warning: string}} ActivityView
 */

/** The events the side panel subscribes to. */
export const PANEL_EVENTS = Object.freeze(Object.values(ServerEvent));

/** A pull not heard of for this long is shown no more (the server sends no end event). */
export const PULL_STALE_MS = 15_000;

/** Why a model was unloaded, as the user reads it; `requested` needs no remark. */
const UNLOAD_REASONS = /** @type {Record<string, string>} */ ({
  idle: 'unloaded after sitting idle; it loads again with the next message',
  memory: 'unloaded to free memory; it loads again with the next message',
  replaced: 'unloaded: a pull replaced its file',
});

/** @returns {Activity} */
export function emptyActivity() {
  return { loads: new Map(), pulls: new Map(), lowMemory: null, note: null };
}

/** @param {unknown} v */
const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
/** @param {number} v */
const fraction = (v) => Math.min(1, Math.max(0, v));

/**
 * Fold one pushed event into the activity (a new object; the old one is untouched).
 * @param {Activity} state
 * @param {Envelope} msg
 * @param {{now: number, chatModel?: string}} ctx  `chatModel`: the model the panel chats with
 * @returns {Activity}
 */
export function applyEvent(state, msg, ctx) {
  const model = typeof msg.model === 'string' ? msg.model : '';
  const next = { ...state, loads: new Map(state.loads), pulls: new Map(state.pulls) };
  const clearNote = () => {
    if (next.note?.model === model) next.note = null;
  };
  switch (msg.event) {
    case ServerEvent.ModelLoadProgress:
      if (!model) return state;
      next.loads.set(model, fraction(num(msg.progress)));
      clearNote();
      return next;
    case ServerEvent.ModelLoaded:
      next.loads.delete(model);
      clearNote();
      return next;
    case ServerEvent.ModelUnloaded: {
      next.loads.delete(model);
      const why = UNLOAD_REASONS[String(msg.reason)];
      if (why && model && model === ctx.chatModel) next.note = { model, text: `${model} was ${why}` };
      return next;
    }
    case ServerEvent.PullProgress: {
      if (!model) return state;
      const done = num(msg.downloaded_bytes);
      const total = num(msg.total_bytes);
      if (total > 0 && done >= total) next.pulls.delete(model);
      else next.pulls.set(model, { done, total, at: ctx.now });
      return next;
    }
    case ServerEvent.LowMemory:
      next.lowMemory = { available: num(msg.available_bytes), total: num(msg.total_bytes) };
      return next;
    default:
      return state;
  }
}

/**
 * A request for `model` ended (loaded or failed): stop showing it as loading,
 * since a failed load sends no event.
 * @param {Activity} state
 * @param {string} model
 * @returns {Activity}
 */
export function settleLoad(state, model) {
  if (!state.loads.has(model)) return state;
  const loads = new Map(state.loads);
  loads.delete(model);
  return { ...state, loads };
}

/**
 * Forget pulls not heard of for PULL_STALE_MS (finished or failed).
 * @param {Activity} state
 * @param {number} now
 * @returns {Activity}
 */
export function expirePulls(state, now) {
  const pulls = new Map([...state.pulls].filter(([, p]) => now - p.at < PULL_STALE_MS));
  return pulls.size === state.pulls.size ? state : { ...state, pulls };
}

/** @param {Activity} state */
export function dismissLowMemory(state) {
  return { ...state, lowMemory: null };
}

/**
 * The text for the status area: what is loading or downloading (or the last
 * remark), a fraction for a progress bar when one thing is under way, and
 * the low-memory warning ('' when memory is fine).
 * @param {Activity} state
 * @returns {ActivityView}
 */
export function describeActivity(state) {
  /** @type {string[]} */
  const parts = [];
  /** @type {number[]} */
  const fractions = [];
  for (const [model, p] of state.loads) {
    parts.push(`Loading ${model}… ${Math.round(p * 100)}%`);
    fractions.push(p);
  }
  for (const [model, p] of state.pulls) {
    if (p.total > 0) {
      const f = fraction(p.done / p.total);
      parts.push(`Pulling ${model}… ${formatBytes(p.done)} / ${formatBytes(p.total)} (${Math.round(f * 100)}%)`);
      fractions.push(f);
    } else {
      parts.push(`Pulling ${model}… ${formatBytes(p.done)}`);
    }
  }
  if (parts.length === 0 && state.note) parts.push(state.note.text);
  const { lowMemory } = state;
  const warning = lowMemory
    ? `Low memory: ${formatBytes(lowMemory.available)}${lowMemory.total ? ` of ${formatBytes(lowMemory.total)}` : ''} free. Large models may fail to load; close other programs or unload a model.`
    : '';
  return { text: parts.join(' · '), progress: fractions.length === 1 && parts.length === 1 ? fractions[0] : null, warning };
}
