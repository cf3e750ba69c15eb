// A stand-in WebRTC server for the smoke test, with no WebRTC stack in
// node: the answering peer is a web page (/peer.html) opened in the same
// browser. Node does the signaling: POST /v1/webrtc/offer parks the offer
// until the peer page fetches it (GET /peer/offer), answers, and posts the
// answer back (POST /peer/answer). The peer page answers Health and streams
// a short Chat reply on the data channel, in the protocol's envelopes.
// /article.html is a plain page for "ask about this page".
import { createServer } from 'node:http';

const PEER_PAGE = `<!doctype html><meta charset="utf-8"><title>mock rtc peer</title><script>
async function serve() {
  for (;;) {
    const r = await fetch('/peer/offer');
    if (r.status !== 200) continue;
    const { session_id, sdp } = await r.json();
    const pc = new RTCPeerConnection();
    pc.ondatachannel = (ev) => {
      const ch = ev.channel;
      document.title = 'channel:' + ch.label + ':' + ch.ordered;
      ch.onmessage = (m) => {
        const req = JSON.parse(m.data);
        if (req.request_type === 'Health') {
          ch.send(JSON.stringify({ id: req.id, response_type: 'Health', status: 'ok', version: 'rtc-mock', done: true }));
        } else if (req.request_type === 'Chat') {
          const words = ['over ', 'a ', 'data ', 'channel'];
          for (const w of words) ch.send(JSON.stringify({ id: req.id, response_type: 'ChatChunk', delta: w, done: false }));
          ch.send(JSON.stringify({ id: req.id, response_type: 'ChatComplete', text: words.join(''), finish_reason: 'stop', done: true }));
        } else {
          ch.send(JSON.stringify({ id: req.id, response_type: 'Error', error: { type: 'unknown_request', title: 'unknown', status: 400 }, done: true }));
        }
      };
    };
    await pc.setRemoteDescription({ type: 'offer', sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    if (pc.iceGatheringState !== 'complete') {
      await new Promise((ok) => pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && ok()));
    }
    await fetch('/peer/answer', { method: 'POST', body: JSON.stringify({ session_id, sdp: pc.localDescription.sdp }) });
  }
}
serve();
</script>`;

/** @param {import('node:http').IncomingMessage} req */
async function body(req) {
  let s = '';
  for await (const chunk of req) s += chunk;
  return s ? JSON.parse(s) : {};
}

/** @returns {Promise<{url: string, offers: any[], close: () => void}>} */
export async function startMockRtcServer() {
  /** @type {{session_id: string, sdp: string}[]} */
  const waitingOffers = [];
  /** @type {((o: any) => void)[]} */
  const waitingPeers = [];
  /** @type {Map<string, (sdp: string) => void>} */
  const waitingAnswers = new Map();
  /** @type {any[]} */
  const offers = [];
  let n = 0;
  const server = createServer(async (req, res) => {
    const json = (/** @type {number} */ status, /** @type {any} */ v) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(v));
    };
    try {
      if (req.method === 'GET' && req.url === '/article.html') {
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end('<!doctype html><title>Otters</title><main><h1>Otters</h1><p>Sea otters hold hands while they sleep so they do not drift apart.</p></main>');
      } else if (req.method === 'GET' && req.url === '/peer.html') {
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end(PEER_PAGE);
      } else if (req.method === 'POST' && req.url === '/v1/webrtc/offer') {
        const b = await body(req);
        offers.push({ ...b, authorization: req.headers.authorization ?? null });
        if (typeof b.sdp !== 'string') return json(400, { type: 'bad_request', title: 'bad request', status: 400, detail: 'no sdp' });
        const offer = { session_id: `s${++n}`, sdp: b.sdp };
        const answer = new Promise((ok) => waitingAnswers.set(offer.session_id, ok));
        const peer = waitingPeers.shift();
        if (peer) peer(offer);
        else waitingOffers.push(offer);
        json(200, { session_id: offer.session_id, sdp: await answer, type: 'answer' });
      } else if (req.method === 'GET' && req.url === '/peer/offer') {
        const offer = waitingOffers.shift() ?? (await new Promise((ok) => waitingPeers.push(ok)));
        json(200, offer);
      } else if (req.method === 'POST' && req.url === '/peer/answer') {
        const b = await body(req);
        waitingAnswers.get(b.session_id)?.(b.sdp);
        json(200, {});
      } else if (req.method === 'POST' && req.url === '/v1/webrtc/ice') {
        await body(req);
        json(200, {});
      } else {
        json(404, { type: 'not_found', title: 'not found', status: 404 });
      }
    } catch (e) {
      json(500, { type: 'internal', title: String(e), status: 500 });
    }
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(undefined)));
  const addr = /** @type {import('node:net').AddressInfo} */ (server.address());
  return {
    url: `http://127.0.0.1:${addr.port}`,
    offers,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}
