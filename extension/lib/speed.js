// The speed line under each answer: time to the first token, tokens per
// second while generating, and the token count. Pure, from timestamps the
// side panel takes (performance.now(), milliseconds).

/**
 * @param {{start: number, first: number | null, end: number, tokens: number | undefined}} t
 * @returns {string} e.g. "first token 0.42 s · 23.1 tok/s · 48 tokens"
 */
export function speedLine({ start, first, end, tokens }) {
  const parts = [];
  if (first !== null && first >= start) parts.push(`first token ${((first - start) / 1000).toFixed(2)} s`);
  // the first token's time is the prompt's; the rate is over the tokens after it
  if (first !== null && tokens && tokens > 1 && end > first) parts.push(`${((tokens - 1) / ((end - first) / 1000)).toFixed(1)} tok/s`);
  if (tokens) parts.push(`${tokens} tokens`);
  return parts.join(' · ');
}
