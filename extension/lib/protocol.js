// The wire protocol in one place: request and response type names, the
// envelope shape, and small helpers that read replies tolerantly (field names
// on the server may still shift; only this module should need to change).
//
// A request is `{id, request_type, ...fields}`. Every reply echoes `id`,
// carries `response_type` and `done` (true on the final message). Server push
// messages have `response_type: "Event"`, `done: false` and the id of the
// Subscribe that asked for them (events the extension makes itself have no
// id). The same JSON envelopes travel over native messaging and over the
// WebRTC data channel.

/** Native messaging host name, as registered by `tabagent install-host`. */
export const NATIVE_HOST = 'com.tabagent.host';

/** Default server for WebRTC signaling when the native host is missing. */
export const DEFAULT_SERVER_URL = 'http://127.0.0.1:8080';

/** Signaling endpoints, relative to the server URL. */
export const WEBRTC_OFFER_PATH = '/v1/webrtc/offer';
export const WEBRTC_ICE_PATH = '/v1/webrtc/ice';

/** Data channel label; one ordered channel carries all envelopes. */
export const DATA_CHANNEL_LABEL = 'tabagent';

/** Largest message Chrome lets us put on a data channel (its SCTP max-message-size). */
export const WEBRTC_MAX_MESSAGE_BYTES = 262_144;

/** Largest message Chrome sends to a native host. */
export const NATIVE_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** Port name extension pages use to reach the service worker's relay. */
export const RELAY_PORT_NAME = 'tabagent';

/** Runtime port names the offscreen document opens, one per WebRTC connection. */
export const RTC_PORT_PREFIX = 'tabagent-rtc:';

/** Key of control messages the offscreen document sends on an RTC port (never envelopes). */
export const RTC_CONTROL_KEY = '__tabagent_rtc';

/** `target` of chrome.runtime messages meant for the offscreen document. */
export const OFFSCREEN_TARGET = 'tabagent-offscreen';

/** Request types understood by the server (`request_type`). */
export const Req = Object.freeze({
  Chat: 'Chat',
  Generate: 'Generate',
  Responses: 'Responses',
  // OpenAI's Responses API (the body of POST /v1/responses)
  CreateResponse: 'CreateResponse',
  GetResponse: 'GetResponse',
  DeleteResponse: 'DeleteResponse',
  StopGeneration: 'StopGeneration',
  GetHaltStatus: 'GetHaltStatus',
  ListModels: 'ListModels',
  LoadModel: 'LoadModel',
  UnloadModel: 'UnloadModel',
  ListLoadedModels: 'ListLoadedModels',
  ModelInfo: 'ModelInfo',
  PullModel: 'PullModel',
  DeleteModel: 'DeleteModel',
  Embeddings: 'Embeddings',
  Rerank: 'Rerank',
  RagQuery: 'RagQuery',
  AddDocument: 'AddDocument',
  DeleteDocument: 'DeleteDocument',
  ListCollections: 'ListCollections',
  ClearCollection: 'ClearCollection',
  // the knowledge base (uploads in parts) and backups
  UploadStart: 'UploadStart',
  UploadChunk: 'UploadChunk',
  UploadFinish: 'UploadFinish',
  UploadCancel: 'UploadCancel',
  ListDocuments: 'ListDocuments',
  ExportSession: 'ExportSession',
  Backup: 'Backup',
  Restore: 'Restore',
  ChatHistory: 'ChatHistory',
  ListSessions: 'ListSessions',
  DeleteSession: 'DeleteSession',
  SearchHistory: 'SearchHistory',
  TruncateSession: 'TruncateSession',
  SetSessionSettings: 'SetSessionSettings',
  SaveMessage: 'SaveMessage',
  Health: 'Health',
  SystemInfo: 'SystemInfo',
  GetStats: 'GetStats',
  GetResources: 'GetResources',
  GetParams: 'GetParams',
  SetParams: 'SetParams',
  Subscribe: 'Subscribe',
});

/**
 * Request types answered by the extension's service worker itself, never
 * sent to the server. Pages talk to the service worker through a relay port;
 * these let them ask about (and steer) the shared upstream connection.
 */
export const LocalReq = Object.freeze({
  /** -> `{response_type: "ClientStatus", status: ClientStatus}` */
  ClientStatus: 'ClientStatus',
  /** Drop the upstream connection and connect again (after a settings change). */
  Reconnect: 'Reconnect',
});

/** Response types (`response_type`). */
export const Res = Object.freeze({
  Error: 'Error',
  Event: 'Event',
  ChatChunk: 'ChatChunk',
  ChatComplete: 'ChatComplete',
  ResponseStarted: 'ResponseStarted',
  ResponseResult: 'ResponseResult',
  ResponseDeleted: 'ResponseDeleted',
  PullProgress: 'PullProgress',
  ModelList: 'ModelList',
  Health: 'Health',
  ClientStatus: 'ClientStatus',
  Subscribed: 'Subscribed',
});

/** Events the server pushes to a Subscribe (see openapi.yaml, schema Event). */
export const ServerEvent = Object.freeze({
  ModelLoadProgress: 'ModelLoadProgress',
  ModelLoaded: 'ModelLoaded',
  ModelUnloaded: 'ModelUnloaded',
  PullProgress: 'PullProgress',
  LowMemory: 'LowMemory',
});

/** Event names produced by the extension itself (never sent to the server). */
export const LOCAL_EVENT_PREFIX = 'client.';
export const EVENT_CLIENT_STATUS = 'client.status';

/** Requests that start a generation, so a hang-up or abort should stop them. */
/** @type {ReadonlySet<string>} */
export const GENERATION_TYPES = new Set([Req.Chat, Req.Generate, Req.Responses, Req.CreateResponse]);

/** Model kinds as the server reports them. */
export const ModelKind = Object.freeze({ Chat: 'chat', Embedding: 'embedding', Rerank: 'rerank' });

/**
 * @typedef {string | number} RequestId
 * @typedef {{type?: string, title?: string, status?: number, detail?: string}} ProblemDetails
 * @typedef {{id?: RequestId, response_type?: string, done?: boolean, error?: ProblemDetails, [key: string]: any}} Envelope
 */

/**
 * Build a request envelope. Fields never override `id` or `request_type`.
 * @param {RequestId} id
 * @param {string} type
 * @param {Record<string, any>} [fields]
 * @returns {Envelope}
 */
export function makeRequest(id, type, fields = {}) {
  return { ...fields, id, request_type: type };
}

/**
 * Build an error reply in the server's shape (used by the relay and tests).
 * @param {RequestId | undefined} id
 * @param {ProblemDetails} error
 * @returns {Envelope}
 */
export function makeError(id, error) {
  return { id, response_type: Res.Error, error, done: true };
}

/** @param {Envelope} msg */
export function isError(msg) {
  return msg.response_type === Res.Error || (msg.error != null && typeof msg.error === 'object');
}

/** A pushed event (under a Subscribe's id, or none). @param {Envelope} msg */
export function isEvent(msg) {
  return msg.response_type === Res.Event;
}

/**
 * A reply is final when it says `done: true`; an Error is always final.
 * @param {Envelope} msg
 */
export function isFinal(msg) {
  return msg.done === true || isError(msg);
}

/**
 * Name of a pushed event; tolerant of `event`, `name` or `type`.
 * @param {Envelope} msg
 * @returns {string}
 */
export function eventName(msg) {
  const name = msg.event ?? msg.name ?? msg.type;
  return typeof name === 'string' ? name : '';
}

/**
 * Text carried by one streamed chunk (`delta`, or OpenAI-like `content`/`token`).
 * @param {Envelope} msg
 * @returns {string}
 */
export function chunkText(msg) {
  const t = msg.delta ?? msg.content ?? msg.token ?? msg.text_delta;
  return typeof t === 'string' ? t : '';
}

/**
 * Tools and output constraints a Chat request may carry (the server's
 * `Structure`): at most one of `json_schema`, `grammar` and `tools`.
 * @typedef {{type: 'function', function: {name: string, description?: string, parameters?: object}}} Tool
 * @typedef {'auto' | 'none' | 'required' | {type: 'function', function: {name: string}}} ToolChoice
 * @typedef {{id: string, type: 'function', function: {name: string, arguments: string}}} ToolCall
 * @typedef {{index: number, id?: string, name?: string, arguments: string}} ToolCallDelta
 * @typedef {object} ChatStructure
 * @property {Tool[]} [tools]
 * @property {ToolChoice} [tool_choice]
 * @property {boolean} [parallel_tool_calls]
 * @property {object} [json_schema] the output must validate against this schema
 * @property {string} [grammar] a GBNF grammar (start rule `root`)
 * @property {boolean} [think] false turns a reasoning model's thinking off
 * @property {Record<string, unknown>} [chat_template_kwargs]
 */

/**
 * Reasoning carried by one streamed chunk (a `<think>` block's text).
 * @param {Envelope} msg
 * @returns {string}
 */
export function chunkReasoning(msg) {
  return typeof msg.reasoning === 'string' ? msg.reasoning : '';
}

/**
 * Tool-call pieces of one streamed chunk; a call's first piece has its id
 * and name, later ones add to its arguments.
 * @param {Envelope} msg
 * @returns {ToolCallDelta[]}
 */
export function chunkToolCalls(msg) {
  return Array.isArray(msg.tool_calls) ? msg.tool_calls : [];
}

/**
 * Size of a message as it would travel (UTF-8 JSON).
 * @param {unknown} msg
 */
export function encodedSize(msg) {
  return new TextEncoder().encode(JSON.stringify(msg)).length;
}
