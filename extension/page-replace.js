// Registered only for origins where the user opted in to tabagent
// replacing the browser's own `LanguageModel`, `Summarizer` & co. (MAIN
// world, document_start). Whichever of this and page-api.js runs first,
// the globals end up tabagent's.
(() => {
  const win = /** @type {Window & typeof globalThis & Record<string | symbol, any>} */ (globalThis);
  win[Symbol.for('tabagent.replaceBuiltins')] = true;
  const install = win[Symbol.for('tabagent.installGlobals')];
  if (typeof install === 'function') install(true);
})();
