// TabAgentError: what every failed request rejects with. It carries the
// server's problem details ({type, title, status, detail}) for an Error
// reply, or a local kind for failures the client detects itself: timeout,
// disconnected, unavailable, too_large, closed, aborted, duplicate_id.

/**
 * @typedef {import('./protocol.js').Envelope} Envelope
 * @typedef {import('./protocol.js').RequestId} RequestId
 * @typedef {import('./protocol.js').ProblemDetails} ProblemDetails
 */

/** An error from the server (its problem details) or from the client itself. */
export class TabAgentError extends Error {
  /**
   * @param {ProblemDetails} problem
   * @param {RequestId} [id]
   */
  constructor(problem, id) {
    const p = problem ?? {};
    super(p.detail ? `${p.title ?? p.type ?? 'error'}: ${p.detail}` : String(p.title ?? p.type ?? 'error'));
    this.name = 'TabAgentError';
    /** machine-readable kind; local ones: timeout, disconnected, unavailable, too_large, closed, aborted */
    this.type = p.type ?? 'error';
    this.title = p.title ?? this.type;
    this.status = p.status ?? 0;
    this.detail = p.detail ?? '';
    this.id = id;
  }

  /** The problem details, as the server would send them. @returns {ProblemDetails} */
  toProblem() {
    return { type: this.type, title: this.title, status: this.status, detail: this.detail };
  }

  /**
   * @param {Envelope} msg an Error reply
   */
  static fromReply(msg) {
    const e = msg.error;
    const problem = typeof e === 'object' && e !== null ? e : { type: 'error', title: String(e ?? 'error') };
    return new TabAgentError(problem, msg.id);
  }
}

/** @param {unknown} e */
export function messageOf(e) {
  if (e == null) return '';
  if (typeof e === 'string') return e;
  if (typeof e === 'object' && 'message' in e) return String(e.message);
  return String(e);
}
