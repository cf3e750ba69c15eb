// Markdown for model output: marked to HTML, DOMPurify to make it safe, and
// highlight.js on code blocks once a reply is complete. The libraries are
// loaded from vendor/ (copied there by `npm run build`); if they are
// missing, replies show as plain text. Model output is untrusted (a page it
// read can steer it), so images are never loaded (no requests to hosts the
// text names) and links open in a new tab without a referrer.

/**
 * @typedef {object} Renderer
 * @property {boolean} rich          false when vendor/ is missing
 * @property {(el: HTMLElement, markdown: string, final: boolean) => void} render
 */

/** Tags we never keep, on top of DOMPurify's defaults. */
const FORBID_TAGS = ['img', 'picture', 'source', 'video', 'audio', 'iframe', 'object', 'embed', 'form', 'input', 'button', 'textarea', 'select', 'style', 'link', 'meta', 'base', 'svg', 'math'];

/** Largest code block highlighted with language guessing (it is slow). */
const AUTO_HIGHLIGHT_MAX = 20_000;

/** @returns {Promise<Renderer>} */
export async function loadRenderer() {
  let marked;
  let purify;
  let hljs;
  try {
    // a computed path: the type checker should not follow into generated, minified code
    const vendor = '../vendor/';
    [marked, purify, hljs] = await Promise.all([
      import(vendor + 'marked.esm.js'),
      import(vendor + 'purify.es.mjs'),
      import(vendor + 'highlight.min.js'),
    ]);
  } catch (e) {
    console.warn('tabagent: markdown libraries missing (run `npm run build` in extension/); showing plain text', e);
    return {
      rich: false,
      render(el, markdown) {
        el.classList.add('plain');
        el.textContent = markdown;
      },
    };
  }
  const DOMPurify = purify.default;
  const highlighter = hljs.default;
  const md = new marked.Marked({ gfm: true, breaks: false });
  md.use({
    renderer: {
      // never fetch images the model mentions; show what they were
      image(/** @type {{href: string, text: string}} */ token) {
        return escapeHtml(`[image: ${token.text || token.href}]`);
      },
    },
  });
  DOMPurify.addHook('afterSanitizeAttributes', (/** @type {Element} */ node) => {
    if (node.tagName === 'A') {
      node.setAttribute('target', '_blank');
      node.setAttribute('rel', 'noopener noreferrer');
    }
  });
  return {
    rich: true,
    render(el, markdown, final) {
      const html = /** @type {string} */ (md.parse(markdown, { async: false }));
      const fragment = DOMPurify.sanitize(html, {
        FORBID_TAGS,
        FORBID_ATTR: ['style'],
        RETURN_DOM_FRAGMENT: true,
      });
      el.replaceChildren(fragment);
      if (final) highlightCode(el, highlighter);
    },
  };
}

/**
 * @param {HTMLElement} el
 * @param {any} hljs
 */
function highlightCode(el, hljs) {
  for (const code of el.querySelectorAll('pre > code')) {
    const text = code.textContent ?? '';
    const lang = /(?:^|\s)language-([\w+#.-]+)/.exec(code.className)?.[1];
    let result;
    if (lang && hljs.getLanguage(lang)) result = hljs.highlight(text, { language: lang, ignoreIllegals: true });
    else if (text.length <= AUTO_HIGHLIGHT_MAX) result = hljs.highlightAuto(text);
    if (!result) continue;
    // highlight.js escapes the code it is given, so its output is safe markup
    code.innerHTML = result.value;
    code.classList.add('hljs');
  }
}

/** @param {string} s */
export function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
