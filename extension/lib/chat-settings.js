// A chat's own model and parameters (kept with its session on the server by
// SetSessionSettings, sent with each of its turns), and the context-usage
// meter under each answer. Pure: no DOM, no chrome.*.

/**
 * @typedef {object} ChatSettings
 * @property {string} model           '' = the model picked in the panel
 * @property {number | null} temperature  null = the server's default
 * @property {number | null} top_p
 * @property {number | null} max_tokens
 */

/** @type {Readonly<ChatSettings>} */
export const DEFAULT_CHAT_SETTINGS = Object.freeze({ model: '', temperature: null, top_p: null, max_tokens: null });

/** The bounds the server accepts (openapi.yaml, SamplingParams). */
const BOUNDS = Object.freeze({
  temperature: [0, 5],
  top_p: [Number.MIN_VALUE, 1], // above 0
  max_tokens: [1, 1_000_000],
});

/**
 * A number within `[lo, hi]`, or null for anything else (blank, text, out of range).
 * @param {unknown} v
 * @param {[number, number]} bounds
 * @param {boolean} integer
 */
function bounded(v, [lo, hi], integer) {
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  if (!Number.isFinite(n) || n < lo || n > hi) return null;
  return integer ? Math.round(n) : n;
}

/**
 * Tolerant read of stored or typed settings; unknown fields are dropped.
 * @param {unknown} raw
 * @returns {ChatSettings}
 */
export function readChatSettings(raw) {
  const r = /** @type {Record<string, unknown>} */ (raw && typeof raw === 'object' ? raw : {});
  return {
    model: typeof r.model === 'string' ? r.model.trim() : '',
    temperature: bounded(r.temperature, /** @type {[number, number]} */ (BOUNDS.temperature), false),
    top_p: bounded(r.top_p, /** @type {[number, number]} */ (BOUNDS.top_p), false),
    max_tokens: bounded(r.max_tokens, /** @type {[number, number]} */ (BOUNDS.max_tokens), true),
  };
}

/**
 * The request fields the settings add to a turn (only those set).
 * @param {ChatSettings} s
 * @returns {Record<string, number>}
 */
export function settingsParams(s) {
  /** @type {Record<string, number>} */
  const out = {};
  if (s.temperature !== null) out.temperature = s.temperature;
  if (s.top_p !== null) out.top_p = s.top_p;
  if (s.max_tokens !== null) out.max_tokens = s.max_tokens;
  return out;
}

/**
 * The context-usage meter under an answer: prompt + completion tokens over
 * the model's context size.
 * @param {{prompt_tokens?: number, completion_tokens?: number} | null | undefined} usage
 * @param {number | null | undefined} contextSize
 * @returns {{used: number, size: number, fraction: number, text: string} | null} null when either is unknown
 */
export function contextMeter(usage, contextSize) {
  const prompt = Number(usage?.prompt_tokens ?? NaN);
  const completion = Number(usage?.completion_tokens ?? 0);
  if (!Number.isFinite(prompt) || !contextSize || !(contextSize > 0)) return null;
  const used = prompt + (Number.isFinite(completion) ? completion : 0);
  const fraction = Math.min(1, used / contextSize);
  const pct = fraction * 100;
  return { used, size: contextSize, fraction, text: `context ${used} / ${contextSize} tokens (${pct < 1 && used > 0 ? '<1' : Math.round(pct)}%)` };
}
