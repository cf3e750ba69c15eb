// A TabAgentClient over fake transports with a FakeClock, and a stream
// collector: shared by the client's unit tests.

import { TabAgentClient } from '../../lib/client.js';
import { FakeClock } from './fakes.js';

/**
 * @param {import('./fakes.js').FakeTransport[]} transports
 * @param {Partial<import('../../lib/client.js').ClientOptions>} [opts]
 */
export function setup(transports, opts = {}) {
  const clock = new FakeClock();
  const client = new TabAgentClient({
    transports,
    timers: clock,
    random: () => 0,
    backoff: { initialMs: 500, maxMs: 4000, factor: 2, jitter: 0.5 },
    ...opts,
  });
  return { client, clock };
}

/**
 * Start collecting a stream now, so chunks delivered later are consumed.
 * @param {AsyncIterable<any>} s
 */
export function collecting(s) {
  const out = /** @type {any[]} */ ([]);
  const done = (async () => {
    for await (const m of s) out.push(m);
    return out;
  })();
  return { out, done };
}
