// The shapes TabAgentClient and its helpers share (JSDoc only, no code): the
// port and transport a client connects through, its options and status, and
// the bookkeeping of one connection and one request in flight.

/**
 * @typedef {import('./protocol.js').Envelope} Envelope
 * @typedef {import('./protocol.js').RequestId} RequestId
 */

/**
 * The part of chrome.runtime.Port the client uses. A transport may pass an
 * Error (or string) as the second onDisconnect argument; Chrome passes only
 * the port and leaves the reason in chrome.runtime.lastError, which the
 * transport's `lastError()` reads.
 * @typedef {object} PortLike
 * @property {(msg: any) => void} postMessage
 * @property {() => void} disconnect
 * @property {{addListener(fn: (msg: any) => void): void}} onMessage
 * @property {{addListener(fn: (port?: any, error?: unknown) => void): void}} onDisconnect
 */

/**
 * @typedef {object} Transport
 * @property {string} name                         'native', 'webrtc', 'relay', ...
 * @property {() => PortLike | Promise<PortLike>} connect
 * @property {() => (string | undefined)} [lastError] why the last port closed
 * @property {number} [maxMessageBytes]            refuse larger requests locally
 * @property {{type: string, fields?: Record<string, any>}} [probe] request that proves the far end answers (default Health)
 * @property {number} [probeTimeoutMs]
 */

/**
 * @typedef {'idle' | 'connecting' | 'connected' | 'backoff' | 'closed'} ClientState
 * @typedef {object} ClientStatus
 * @property {ClientState} state
 * @property {string | null} transport      name of the transport in use
 * @property {string} preference            'auto' or a transport name
 * @property {string | null} lastError
 * @property {number | null} retryInMs      set while in backoff
 * @property {Envelope | null} health       the probe's reply on the current connection
 */

/**
 * @typedef {object} BackoffOptions
 * @property {number} [initialMs] first delay (default 500)
 * @property {number} [maxMs]     ceiling (default 30000)
 * @property {number} [factor]    growth per failed attempt (default 2)
 * @property {number} [jitter]    0..1, fraction of the delay randomly removed (default 0.2)
 */

/**
 * @typedef {{setTimeout: (fn: () => void, ms: number) => any, clearTimeout: (t: any) => void}} Timers
 * @typedef {{warn: (...a: any[]) => void, debug?: (...a: any[]) => void}} Logger
 */

/**
 * @typedef {object} ClientOptions
 * @property {Transport[]} transports  in the order 'auto' tries them
 * @property {string} [preference]     'auto' (default) or one transport's name
 * @property {number} [requestTimeoutMs]     default 30 s, total per request
 * @property {number} [streamIdleTimeoutMs]  default 120 s, between two chunks
 * @property {number} [probeTimeoutMs]       default 3 s
 * @property {'auto' | 'always' | 'never'} [reconnect] background reconnect: 'auto' = while subscriptions exist
 * @property {BackoffOptions} [backoff]
 * @property {Timers} [timers]
 * @property {() => number} [random]
 * @property {Logger} [logger]
 */

/**
 * @typedef {object} RequestOptions
 * @property {number} [timeoutMs]   0 = no timeout
 * @property {RequestId} [id]       use this id (from nextId()) instead of a fresh one
 * @property {(msg: Envelope) => void} [onChunk] called for every non-final reply
 * @property {AbortSignal} [signal] abort: reject at once and stop a generation
 */

/**
 * One open port. `told` is what the server was asked to push on it ('*' =
 * everything); `subscriptionId` the id of the Subscribe whose events count
 * (the server keeps earlier subscriptions alive, so their events are ignored);
 * `syncing` the Subscribe in flight, if any.
 * @typedef {object} Connection
 * @property {PortLike} port
 * @property {Transport} transport
 * @property {boolean} open
 * @property {Set<string>} told
 * @property {RequestId | null} subscriptionId
 * @property {Promise<Envelope> | null} syncing  the Subscribe in flight
 */

/**
 * @typedef {object} SendOptions
 * @property {RequestId} id
 * @property {number} timeoutMs   0 = none
 * @property {boolean} idle       the timeout restarts on each chunk
 * @property {(m: Envelope) => void} [onChunk]
 * @property {AbortSignal} [signal]
 */

export {};
