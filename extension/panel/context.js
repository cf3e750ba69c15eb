// What the side panel's parts share: the page's TabAgentClient (through the
// service worker), the chat controller, the markdown renderer, and the little
// mutable state (a turn under way, the last connection status).

import { ChatController } from '../lib/chat.js';
import { loadRenderer } from '../lib/markdown.js';
import { createPageClient } from '../lib/page-client.js';

/** @typedef {import('../lib/client.js').ClientStatus} ClientStatus */

export const client = createPageClient();
export const chat = new ChatController(client);
export const rendererReady = loadRenderer();

export const state = {
  /** a turn (or "ask about this page") is under way */
  busy: false,
  /** @type {ClientStatus | null} the service worker's connection, as last heard */
  upstream: null,
};
