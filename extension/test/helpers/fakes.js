// Fakes for the client's injected pieces: a port shaped like
// chrome.runtime.Port, a transport handing such ports out (with scripted
// failures), a tiny scripted server, and a virtual clock for timeouts and
// backoff. No real timers, so tests are fast and deterministic.

/** Let every queued microtask and promise continuation run. */
export const flush = () => new Promise((r) => setImmediate(r));

export class FakeClock {
  now = 0;
  /** @type {{id: number, at: number, fn: () => void}[]} */
  timers = [];
  seq = 0;
  setTimeout = (/** @type {() => void} */ fn, /** @type {number} */ ms) => {
    const t = { id: ++this.seq, at: this.now + Math.max(0, ms), fn };
    this.timers.push(t);
    return t.id;
  };
  clearTimeout = (/** @type {number} */ id) => {
    this.timers = this.timers.filter((t) => t.id !== id);
  };
  /** Delays of the pending timers, relative to now, sorted. */
  pendingDelays() {
    return this.timers.map((t) => t.at - this.now).sort((a, b) => a - b);
  }
  /** Move time forward, firing due timers in order and flushing after each. */
  async advance(/** @type {number} */ ms) {
    const target = this.now + ms;
    await flush();
    for (;;) {
      const due = this.timers.filter((t) => t.at <= target).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.now = due.at;
      due.fn();
      await flush();
    }
    this.now = target;
    await flush();
  }
}

export class FakePort {
  /** @type {any[]} */ sent = [];
  connected = true;
  disconnectedByClient = false;
  /** @type {((msg: any) => void)[]} */ messageListeners = [];
  /** @type {((port: any, error?: unknown) => void)[]} */ disconnectListeners = [];
  onMessage = { addListener: (/** @type {(msg: any) => void} */ fn) => this.messageListeners.push(fn) };
  onDisconnect = {
    addListener: (/** @type {(port: any, error?: unknown) => void} */ fn) => this.disconnectListeners.push(fn),
  };

  /** @param {((msg: any, port: FakePort) => void) | null} responder called (in a microtask) for each message sent */
  constructor(responder = null) {
    this.responder = responder;
  }
  /** @param {any} msg */
  postMessage(msg) {
    if (!this.connected) throw new Error('Attempting to use a disconnected port object');
    const copy = structuredClone(msg); // what crosses a real port is a copy
    this.sent.push(copy);
    if (this.responder) {
      const r = this.responder;
      queueMicrotask(() => {
        if (this.connected) r(copy, this);
      });
    }
  }
  disconnect() {
    this.connected = false;
    this.disconnectedByClient = true;
  }
  /** The far end sends a message. @param {any} msg */
  deliver(msg) {
    if (!this.connected) return;
    for (const l of [...this.messageListeners]) l(structuredClone(msg));
  }
  /** The far end goes away. @param {unknown} [error] */
  peerDisconnect(error) {
    if (!this.connected) return;
    this.connected = false;
    for (const l of [...this.disconnectListeners]) l(this, error);
  }
  /** Sent messages of one request type. @param {string} type */
  sentOf(type) {
    return this.sent.filter((m) => m.request_type === type);
  }
}

/**
 * A scripted server: answers Health and Subscribe at once, records the rest
 * for the test to answer by hand through `port.deliver`.
 * @param {Record<string, (msg: any, port: FakePort) => void>} [handlers]
 */
export function fakeServer(handlers = {}) {
  return (/** @type {any} */ msg, /** @type {FakePort} */ port) => {
    const h = handlers[msg.request_type];
    if (h) return h(msg, port);
    if (msg.request_type === 'Health') {
      port.deliver({ id: msg.id, response_type: 'Health', status: 'ok', done: true });
    } else if (msg.request_type === 'Subscribe') {
      port.deliver({ id: msg.id, response_type: 'Subscribed', events: msg.events, done: false }); // the subscription stays open
    } else if (msg.request_type === 'StopGeneration') {
      port.deliver({ id: msg.id, response_type: 'StopGeneration', stopped: true, done: true });
    }
  };
}

/**
 * How one connection attempt goes:
 * - 'ok': the port answers like `fakeServer(handlers)`
 * - 'missing': like Chrome without the host: the port disconnects with an error
 * - 'throw': connect() itself throws
 * - 'silent': the port never answers (the probe times out)
 * @typedef {'ok' | 'missing' | 'throw' | 'silent'} Mode
 */

export class FakeTransport {
  /** @type {FakePort[]} */ ports = [];
  connects = 0;
  /** @type {string | undefined} */ lastErrorValue;

  /**
   * @param {string} name
   * @param {{mode?: Mode, script?: Mode[], handlers?: Record<string, (msg: any, port: FakePort) => void>, maxMessageBytes?: number}} [opts]
   */
  constructor(name, opts = {}) {
    this.name = name;
    this.mode = opts.mode ?? 'ok';
    this.script = [...(opts.script ?? [])];
    this.handlers = opts.handlers ?? {};
    if (opts.maxMessageBytes) this.maxMessageBytes = opts.maxMessageBytes;
  }
  lastError = () => this.lastErrorValue;
  connect() {
    this.connects += 1;
    const mode = this.script.length > 0 ? this.script.shift() : this.mode;
    if (mode === 'throw') throw new Error(`${this.name} cannot connect`);
    const port = new FakePort(mode === 'ok' ? fakeServer(this.handlers) : null);
    this.ports.push(port);
    if (mode === 'missing') {
      setImmediate(() => {
        this.lastErrorValue = 'Specified native messaging host not found.';
        port.peerDisconnect();
      });
    }
    return port;
  }
  get port() {
    return this.ports[this.ports.length - 1];
  }
}

/**
 * Two linked ports, like the two ends of chrome.runtime.connect: a message
 * posted on one arrives (asynchronously, as a copy) on the other;
 * disconnect() on one fires onDisconnect on the other only.
 */
export function portPair() {
  const a = new FakePort();
  const b = new FakePort();
  /**
   * @param {FakePort} from
   * @param {FakePort} to
   */
  const link = (from, to) => {
    from.postMessage = (msg) => {
      if (!from.connected) throw new Error('Attempting to use a disconnected port object');
      const copy = structuredClone(msg);
      from.sent.push(copy);
      queueMicrotask(() => to.deliver(copy));
    };
    from.disconnect = () => {
      if (!from.connected) return;
      from.connected = false;
      from.disconnectedByClient = true;
      queueMicrotask(() => to.peerDisconnect());
    };
  };
  link(a, b);
  link(b, a);
  return [a, b];
}
