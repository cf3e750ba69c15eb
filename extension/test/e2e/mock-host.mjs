#!/usr/bin/env node
// A stand-in native messaging host for developing and smoke-testing the
// extension without the real server: Chrome's framing (32-bit native-endian
// length + UTF-8 JSON) on stdin/stdout, and canned answers for the requests
// the side panel makes. Streams a markdown reply with a code block word by
// word, honours StopGeneration, keeps sessions and documents in memory.
// Not the protocol's reference: tabagent itself is.
import { argv, stdin, stdout } from 'node:process';

const LOG = process.env.TABAGENT_MOCK_LOG === '1';
/** @param {...unknown} a */
const log = (...a) => LOG && process.stderr.write(`mock-host: ${a.join(' ')}\n`);

/** @param {any} msg */
function send(msg) {
  const body = Buffer.from(JSON.stringify(msg), 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32LE(body.length); // x86/arm hosts are little-endian
  stdout.write(Buffer.concat([head, body]));
}

const REPLY =
  'Here is a **streamed** reply from the mock host.\n\n```js\nconst answer = 6 * 7; // highlighted\nconsole.log(answer);\n```\n\n- one\n- two\n\n<img src="https://example.com/x.png"> <script>alert(1)</script>';

/** @type {Map<string, {role: string, content: string, created_at: number}[]>} */
const sessions = new Map();
/** @type {Map<string, {text: string, url?: string, title?: string}[]>} */
const collections = new Map();
/** @type {Set<string>} ids of generations asked to stop */
const stopped = new Set();
const models = [
  { id: 'mock-chat', format: 'gguf', kind: 'chat', size_bytes: 253113024, loaded: true },
  { id: 'mock-embed', format: 'onnx', kind: 'embedding', size_bytes: 22900000, loaded: false },
];

/** @type {{id: any, events: string[]}[]} open Subscribe requests */
const subscriptions = [];

/** Push an event to every subscription that asked for it. @param {{event: string, [k: string]: any}} event */
function publish(event) {
  for (const s of subscriptions) {
    if (s.events.length === 0 || s.events.includes(event.event)) send({ id: s.id, response_type: 'Event', ...event, done: false });
  }
}

/** @param {any} id @param {string} type @param {string} detail @param {number} status */
const error = (id, type, detail, status = 400) => send({ id, response_type: 'Error', error: { type, title: type.replace(/_/g, ' '), status, detail }, done: true });

/** @param {any} req @param {string} text @param {(t: string) => void} [onDone] */
function streamText(req, text, onDone) {
  const words = text.split(/(?<=\s)/);
  let i = 0;
  let out = '';
  const tick = () => {
    if (stopped.has(String(req.id)) || i >= words.length) {
      const reason = stopped.delete(String(req.id)) ? 'cancelled' : 'stop';
      onDone?.(out);
      send({ id: req.id, response_type: 'ChatComplete', text: out, usage: { prompt_tokens: 5, completion_tokens: i }, finish_reason: reason, done: true });
      return;
    }
    out += words[i];
    if (req.stream !== false) send({ id: req.id, response_type: 'ChatChunk', delta: words[i], done: false });
    i++;
    setTimeout(tick, 15);
  };
  tick();
}

/** @param {any} req */
function handle(req) {
  const { id } = req;
  switch (req.request_type) {
    case 'Health':
      return send({ id, response_type: 'Health', status: 'ok', version: '0.0.0-mock', done: true });
    case 'ListModels':
      return send({ id, response_type: 'ModelList', models, done: true });
    case 'LoadModel':
    case 'UnloadModel': {
      const m = models.find((x) => x.id === req.model);
      if (!m) return error(id, 'model_not_found', `no model ${req.model}`, 404);
      const reply = () => send({ id, response_type: 'ModelLoaded', model: m.id, done: true });
      if (req.request_type === 'UnloadModel') {
        m.loaded = false;
        publish({ event: 'ModelUnloaded', model: m.id, reason: 'requested' });
        return reply();
      }
      // a load takes a moment and tells its progress, like tabagent's
      const steps = [0, 0.5, 1];
      const step = () => {
        const p = steps.shift();
        if (p === undefined) {
          m.loaded = true;
          publish({ event: 'ModelLoaded', model: m.id });
          return reply();
        }
        publish({ event: 'ModelLoadProgress', model: m.id, progress: p });
        setTimeout(step, 300);
      };
      return step();
    }
    case 'PullModel': {
      let n = 0;
      const step = () => {
        n++;
        if (n <= 4) {
          send({ id, response_type: 'PullProgress', downloaded_bytes: n * 1000, total_bytes: 4000, done: false });
          setTimeout(step, 20);
        } else {
          models.push({ id: req.model ?? 'pulled', format: 'gguf', kind: 'chat', size_bytes: 4000, loaded: false });
          send({ id, response_type: 'ModelPulled', model: req.model ?? 'pulled', done: true });
        }
      };
      return step();
    }
    case 'Chat':
    case 'Generate':
      return streamText(req, REPLY);
    case 'Responses': {
      const s = sessions.get(req.session_id) ?? [];
      sessions.set(req.session_id, s);
      s.push({ role: 'user', content: req.input, created_at: Date.now() });
      const cites = /excerpts/i.test(req.system ?? '') ? 'The page says so [1].' : REPLY;
      return streamText(req, cites, (out) => s.push({ role: 'assistant', content: out, created_at: Date.now() }));
    }
    case 'StopGeneration':
      stopped.add(String(req.target_id));
      return send({ id, response_type: 'StopGeneration', target_id: req.target_id, done: true });
    case 'ListSessions':
      return send({
        id,
        response_type: 'SessionList',
        sessions: [...sessions.entries()].map(([sid, msgs]) => ({
          session_id: sid,
          title: msgs[0]?.content.slice(0, 60) ?? '',
          message_count: msgs.length,
          updated_at: msgs.at(-1)?.created_at ?? Date.now(),
        })),
        done: true,
      });
    case 'ChatHistory':
      return send({ id, response_type: 'ChatHistory', messages: sessions.get(req.session_id) ?? [], done: true });
    case 'DeleteSession':
      sessions.delete(req.session_id);
      return send({ id, response_type: 'SessionDeleted', done: true });
    case 'SaveMessage': {
      const s = sessions.get(req.session_id) ?? [];
      sessions.set(req.session_id, s);
      s.push({ role: req.role, content: req.content, created_at: Date.now() });
      return send({ id, response_type: 'MessageSaved', done: true });
    }
    case 'ClearCollection':
      collections.delete(req.collection);
      return send({ id, response_type: 'CollectionCleared', done: true });
    case 'AddDocument': {
      const c = collections.get(req.collection) ?? [];
      collections.set(req.collection, c);
      c.push({ text: req.text, url: req.url, title: req.title });
      return send({ id, response_type: 'DocumentAdded', document_id: `doc${c.length}`, chunks: 1, done: true });
    }
    case 'RagQuery': {
      const docs = collections.get(req.collection) ?? [];
      const hits = docs.map((d, i) => ({ text: d.text.slice(0, 400), score: 0.9, document_id: `doc${i + 1}`, url: d.url, title: d.title, start: 0, end: Math.min(400, d.text.length) }));
      return send({ id, response_type: 'RagResults', hits, done: true });
    }
    case 'Subscribe':
      // like tabagent: the request stays open and events come under its id
      subscriptions.push({ id, events: req.events ?? [] });
      return send({ id, response_type: 'Subscribed', events: req.events, done: false });
    default:
      return error(id, 'unknown_request', `unknown variant \`${req.request_type}\``);
  }
}

log('started', argv.slice(2).join(' '));
let buf = Buffer.alloc(0);
stdin.on('data', (chunk) => {
  buf = Buffer.concat([buf, chunk]);
  while (buf.length >= 4) {
    const len = buf.readUInt32LE(0);
    if (buf.length < 4 + len) break;
    const body = buf.subarray(4, 4 + len).toString('utf8');
    buf = buf.subarray(4 + len);
    let req;
    try {
      req = JSON.parse(body);
    } catch {
      error(null, 'bad_json', 'not JSON');
      continue;
    }
    log('<-', req.request_type, req.id);
    handle(req);
  }
});
stdin.on('end', () => process.exit(0));
