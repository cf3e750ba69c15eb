// The TabAgentClient an extension page uses: one transport, the relay port
// into the service worker (which holds the real connection). Timeouts are
// generous because a request may first wait for the worker to connect
// upstream or for a model to load.

import { TabAgentClient } from './client.js';
import { relayTransport } from './transports.js';

/**
 * @param {typeof chrome} [chromeApi]
 * @param {Partial<import('./client.js').ClientOptions>} [options]
 */
export function createPageClient(chromeApi = chrome, options = {}) {
  return new TabAgentClient({
    transports: [relayTransport(chromeApi)],
    requestTimeoutMs: 60_000,
    streamIdleTimeoutMs: 180_000,
    probeTimeoutMs: 5_000,
    reconnect: 'auto',
    ...options,
  });
}
