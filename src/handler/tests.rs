//! The handler with a fake backend: every lifecycle and streaming rule of the
//! model manager and the jobs, in milliseconds, seen as a client sees it (the
//! JSON replies). The real backends have their own tests in `tests/`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Handler, HandlerConfig};
use crate::api::{Empty, Reply, Request, RequestId, request_from_value};
use crate::engine::gguf::tiny;
use crate::engine::manager::{Engine, LoadOptions, Loader, Progress};
use crate::engine::text::fake::FakeTextModel;
use crate::jobs::{ConnectionId, JobLimits, ReplySink, lock};
use crate::models::ModelFile;
use crate::store::testing::TempDir;
use retrieval::FakeEmbedder;

mod push;
mod responses;
mod retrieval;

const WAIT: Duration = Duration::from_secs(10);

/// A reply of twelve tokens, long enough to be interrupted.
const TWELVE_WORDS: &str = "one two three four five six seven eight nine ten eleven twelve";

/// Loads GGUF files as a [`FakeTextModel`] saying `reply`, and ONNX folders
/// as a [`FakeEmbedder`]; a load can be held until the test releases it.
struct FakeLoader {
    reply: Vec<String>,
    token_delay: Duration,
    loads: Arc<AtomicUsize>,
    hold: Option<Mutex<mpsc::Receiver<()>>>,
}

impl Loader for FakeLoader {
    fn load(
        &self,
        file: &ModelFile,
        _: &LoadOptions,
        progress: Progress,
    ) -> Result<Engine, crate::error::ApiError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        progress(0.5);
        if let Some(hold) = &self.hold {
            let _ = lock(hold).recv_timeout(WAIT);
        }
        Ok(match file.format {
            crate::api::ModelFormat::Gguf => Engine::Text(Arc::new(FakeTextModel {
                reply: self.reply.clone(),
                token_delay: self.token_delay,
            })),
            crate::api::ModelFormat::Onnx => {
                Engine::Embed(Arc::new(FakeEmbedder::new(&file.id, 16)))
            }
            crate::api::ModelFormat::Upstream => return Err(crate::upstream::not_local(&file.id)),
        })
    }
}

/// A client: the replies it got, as JSON (including those that arrive after
/// it left); it hangs up once it holds `hang_up_after` replies.
#[derive(Default)]
struct Client {
    replies: Mutex<Vec<Value>>,
    arrived: Condvar,
    hang_up_after: Option<usize>,
}

impl ReplySink for Client {
    fn deliver(&self, reply: Reply) -> bool {
        let mut replies = lock(&self.replies);
        let present = self.hang_up_after.is_none_or(|n| replies.len() < n);
        replies.push(serde_json::from_slice(&reply.to_json()).expect("a reply is JSON"));
        self.arrived.notify_all();
        present
    }

    fn is_present(&self) -> bool {
        let replies = lock(&self.replies);
        self.hang_up_after.is_none_or(|n| replies.len() < n)
    }
}

impl Client {
    /// Waits until `done(replies)` holds; panics after [`WAIT`].
    fn wait(&self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        let mut replies = lock(&self.replies);
        while !done(&replies) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out; replies so far: {replies:?}");
            replies = self.arrived.wait_timeout(replies, left).unwrap().0;
        }
        replies.clone()
    }

    /// Waits for the final reply; returns all replies.
    fn finished(&self) -> Vec<Value> {
        self.wait(|r| r.last().is_some_and(|last| last["done"] == true))
    }
}

struct Fixture {
    handler: Handler,
    loads: Arc<AtomicUsize>,
    release: Option<mpsc::Sender<()>>,
    dir: TempDir,
}

struct Setup {
    reply: &'static str,
    token_delay: Duration,
    memory_budget: u64,
    queue_capacity: usize,
    low_memory_bytes: u64,
    keep_alive: Duration,
    hold_loads: bool,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            reply: "Hello there friend",
            token_delay: Duration::ZERO,
            memory_budget: 1 << 40,
            queue_capacity: 16,
            low_memory_bytes: 0,
            keep_alive: Duration::ZERO,
            hold_loads: false,
        }
    }
}

impl Fixture {
    fn new(setup: Setup) -> Fixture {
        let dir = TempDir::new("handler");
        let models = dir.path().join("models");
        std::fs::create_dir_all(&models).unwrap();
        for id in ["alpha", "beta"] {
            std::fs::write(models.join(format!("{id}.gguf")), tiny(0)).unwrap();
        }
        let minilm = models.join("minilm");
        std::fs::create_dir_all(&minilm).unwrap();
        for file in ["model.onnx", "tokenizer.json"] {
            std::fs::write(minilm.join(file), b"{}").unwrap();
        }
        let loads = Arc::new(AtomicUsize::new(0));
        let (release, hold) = mpsc::channel();
        let loader = FakeLoader {
            reply: setup.reply.split_inclusive(' ').map(String::from).collect(),
            token_delay: setup.token_delay,
            loads: Arc::clone(&loads),
            hold: setup.hold_loads.then(|| Mutex::new(hold)),
        };
        let handler = Handler::with_loader(
            HandlerConfig {
                data_dir: dir.path().to_path_buf(),
                models_dir: models,
                limits: JobLimits {
                    model_threads: 1,
                    generate_threads: 4,
                    io_threads: 2,
                    queue_capacity: setup.queue_capacity,
                },
                memory_budget: setup.memory_budget,
                keep_alive: setup.keep_alive,
                low_memory_bytes: setup.low_memory_bytes,
                parallel: 0,
                context_shift: false,
                pull: crate::fetch::PullPolicy::default(),
            },
            Box::new(loader),
            Instant::now(),
        )
        .unwrap();
        Fixture {
            handler,
            loads,
            release: setup.hold_loads.then_some(release),
            dir,
        }
    }

    /// Sends `request`; the client collects its replies.
    fn send_as(&self, request: Value, client: Arc<Client>) -> Arc<Client> {
        let (id, request) = request_from_value(request).expect("a well-formed request");
        let sink: Arc<dyn ReplySink> = client.clone();
        if let Some(response) =
            self.handler
                .serve(CONNECTION, id.clone(), request, || sink, Instant::now())
        {
            client.deliver(Reply::new(id, response));
        }
        client
    }

    fn send(&self, request: Value) -> Arc<Client> {
        self.send_as(request, Arc::default())
    }

    /// Sends `request` and waits for its final reply.
    fn call(&self, request: Value) -> Value {
        self.send(request).finished().pop().unwrap()
    }

    fn subscribe(&self) -> Arc<Client> {
        let client = self.send(json!({"id": "events", "request_type": "Subscribe"}));
        client.wait(|r| !r.is_empty());
        client
    }

    fn models_dir(&self) -> PathBuf {
        self.dir.path().join("models")
    }
}

/// The handler tests' client: one connection.
const CONNECTION: ConnectionId = ConnectionId::FIRST;

/// For requests answered inline: their sink is never asked for.
fn unreachable_sink() -> Arc<dyn ReplySink> {
    unreachable!("answered inline")
}

/// Asserts `reply` is an error of `status` whose detail mentions `mentions`.
fn assert_error(reply: &Value, status: u16, mentions: &str) {
    assert_eq!(reply["error"]["status"], status, "{reply}");
    let detail = reply["error"]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(mentions), "{mentions:?} not in {reply}");
}

fn chat(id: &str, model: &str, stream: bool) -> Value {
    json!({"id": id, "request_type": "Chat", "model": model, "stream": stream,
           "messages": [{"role": "user", "content": "hi"}]})
}

/// The events a subscriber got, as `(event, model)` pairs, progress left out.
fn events(client: &Client) -> Vec<(String, String)> {
    lock(&client.replies)
        .iter()
        .filter(|r| r["response_type"] == "Event" && r["event"] != "ModelLoadProgress")
        .map(|r| {
            let model = r["model"].as_str().unwrap_or_default();
            let reason = r["reason"].as_str().map(|r| format!(" {r}"));
            (
                r["event"].as_str().unwrap().to_string(),
                format!("{model}{}", reason.unwrap_or_default()),
            )
        })
        .collect()
}

#[test]
fn chat_loads_its_model_on_first_use_and_streams_every_token() {
    let fixture = Fixture::new(Setup::default());
    let replies = fixture.send(chat("c1", "alpha", true)).finished();
    let chunks: Vec<&str> = replies[..replies.len() - 1]
        .iter()
        .map(|r| r["delta"].as_str().unwrap())
        .collect();
    assert_eq!(chunks, ["Hello ", "there ", "friend"]);
    let last = replies.last().unwrap();
    assert_eq!(last["response_type"], "ChatComplete", "{last}");
    assert_eq!(last["finish_reason"], "stop");
    assert_eq!(last["usage"]["completion_tokens"], 3);
    assert_eq!(last["id"], "c1");

    // Not streamed: one reply with the whole text; the model stays loaded.
    let whole = fixture.call(chat("c2", "alpha", false));
    assert_eq!(whole["text"], "Hello there friend", "{whole}");
    assert_eq!(fixture.loads.load(Ordering::SeqCst), 1);
    let loaded = fixture.call(json!({"id": 3, "request_type": "ListLoadedModels"}));
    assert_eq!(loaded["models"][0]["model"], "alpha", "{loaded}");
    // The reply's own fields never hide the envelope's request id.
    let info = fixture.call(json!({"id": 5, "request_type": "ModelInfo", "model": "alpha"}));
    assert_eq!(
        (&info["id"], &info["model"]),
        (&json!(5), &json!("alpha")),
        "{info}"
    );
    assert_eq!(info["loaded"], true, "{info}");

    // max_tokens cuts the reply: finish_reason length.
    let mut short = chat("c3", "alpha", false);
    short["max_tokens"] = json!(1);
    let short = fixture.call(short);
    assert_eq!(short["finish_reason"], "length", "{short}");
}

#[test]
fn unknown_and_corrupt_models_get_clear_errors() {
    let fixture = Fixture::new(Setup::default());
    let unknown = fixture.call(chat("u", "no-such-model", true));
    assert_error(&unknown, 404, "no-such-model");

    std::fs::write(fixture.models_dir().join("cut.gguf"), tiny(7)).unwrap();
    let cut = fixture.call(chat("x", "cut", true));
    assert_error(&cut, 422, "cut.gguf");
    assert_eq!(
        fixture.loads.load(Ordering::SeqCst),
        0,
        "never reaches the backend"
    );

    let wrong = fixture.call(chat("w", "minilm", true));
    assert_error(&wrong, 422, "embedding");
}

#[test]
fn stop_generation_cancels_a_stream_within_a_token() {
    let fixture = Fixture::new(Setup {
        reply: TWELVE_WORDS,
        token_delay: Duration::from_millis(30),
        ..Setup::default()
    });
    let client = fixture.send(chat("long", "alpha", true));
    client.wait(|r| !r.is_empty());
    let stopped =
        fixture.call(json!({"id": "s", "request_type": "StopGeneration", "target_id": "long"}));
    assert_eq!(stopped["state"], "stopping", "{stopped}");
    let replies = client.finished();
    let last = replies.last().unwrap();
    assert_eq!(last["finish_reason"], "cancelled", "{last}");
    assert!(
        replies.len() < 6,
        "stopped within a token or two: {replies:?}"
    );
    let status =
        fixture.call(json!({"id": "h", "request_type": "GetHaltStatus", "target_id": "long"}));
    assert_eq!(status["state"], "unknown", "it has ended: {status}");
}

#[test]
fn a_client_that_hangs_up_frees_the_model_for_the_next() {
    let fixture = Fixture::new(Setup {
        reply: TWELVE_WORDS,
        token_delay: Duration::from_millis(20),
        ..Setup::default()
    });
    let gone = Arc::new(Client {
        hang_up_after: Some(2),
        ..Client::default()
    });
    fixture.send_as(chat("gone", "alpha", true), Arc::clone(&gone));
    let started = Instant::now();
    let next = fixture.call(chat("next", "alpha", false));
    assert_eq!(next["finish_reason"], "stop", "{next}");
    // Twelve tokens at 20 ms are 240 ms; the abandoned stream stopped at the
    // first chunk it could not deliver, so the second request did not wait.
    assert!(
        lock(&gone.replies).len() <= 4,
        "the stream stopped: {:?}",
        lock(&gone.replies)
    );
    assert!(started.elapsed() < WAIT);
}

#[test]
fn a_hang_up_is_noticed_while_the_model_shows_no_text() {
    // After "Hi" every token extends a possible stop sequence, so the stream
    // holds them all back: there is nothing to deliver that could fail.
    let fixture = Fixture::new(Setup {
        reply: "Hi x x x x x x x x x x x x x x x x x x x x",
        ..Setup::default()
    });
    let gone = Arc::new(Client {
        hang_up_after: Some(1),
        ..Client::default()
    });
    let mut request = chat("gone", "alpha", true);
    request["stop"] = json!(["x x x x x x x x x x x x x x x x x x x x x x x!"]);
    let replies = fixture.send_as(request, Arc::clone(&gone)).finished();
    let last = replies.last().unwrap();
    assert_eq!(replies.len(), 2, "one chunk, then the end: {replies:?}");
    assert_eq!(last["finish_reason"], "cancelled", "{last}");
    assert_eq!(last["usage"]["completion_tokens"], 2, "{last}");
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let fixture = Fixture::new(Setup {
        reply: "slow slow slow slow slow",
        token_delay: Duration::from_millis(40),
        queue_capacity: 2,
        ..Setup::default()
    });
    let first = fixture.send(chat("1", "alpha", true));
    let second = fixture.send(chat("2", "alpha", true));
    let refused = fixture.call(chat("3", "alpha", true));
    assert_error(&refused, 503, "waiting");
    assert_eq!(refused["error"]["retry_after"], 1, "{refused}");
    // The accepted ones finish; then there is room again.
    for client in [first, second] {
        assert_eq!(client.finished().last().unwrap()["finish_reason"], "stop");
    }
    let again = fixture.call(chat("4", "alpha", false));
    assert_eq!(again["response_type"], "ChatComplete", "{again}");
}

#[test]
fn models_that_do_not_fit_are_refused_and_idle_ones_evicted() {
    // Room for one tiny model at a time.
    let probe = Fixture::new(Setup::default());
    let estimate = probe.call(json!({"id": 1, "request_type": "EstimateMemory", "model": "alpha"}));
    let one = estimate["total_bytes"].as_u64().expect("an estimate");
    let fixture = Fixture::new(Setup {
        memory_budget: one + one / 2,
        ..Setup::default()
    });
    let events_seen = fixture.subscribe();
    let loaded = fixture.call(json!({"id": "l", "request_type": "LoadModel", "model": "alpha"}));
    assert_eq!(loaded["response_type"], "ModelLoaded", "{loaded}");
    fixture.call(chat("b", "beta", false));
    let loaded = fixture.call(json!({"id": 2, "request_type": "ListLoadedModels"}));
    let ids: Vec<&Value> = loaded["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["model"])
        .collect();
    assert_eq!(ids, [&json!("beta")], "alpha was evicted: {loaded}");
    let told = events(&events_seen);
    let expected = [
        ("ModelLoaded", "alpha"),
        ("ModelUnloaded", "alpha memory"),
        ("ModelLoaded", "beta"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(told, expected);

    let tiny_budget = Fixture::new(Setup {
        memory_budget: one / 2,
        ..Setup::default()
    });
    let refused = tiny_budget.call(chat("big", "alpha", true));
    assert_error(&refused, 507, "budget");
}

#[test]
fn tokens_embeddings_and_rerank_run_on_the_fake_backends() {
    let fixture = Fixture::new(Setup::default());
    let tokens = fixture
        .call(json!({"id": 1, "request_type": "Tokenize", "model": "alpha", "content": "ab cde"}));
    assert_eq!(tokens["tokens"], json!([2, 3]), "{tokens}");
    let text = fixture
        .call(json!({"id": 2, "request_type": "Detokenize", "model": "alpha", "tokens": [2, 1]}));
    assert_eq!(text["content"], "xxx", "{text}");

    let embedded = fixture.call(
        json!({"id": 3, "request_type": "Embeddings", "model": "minilm",
                                       "input": ["red apples", "green pears"]}),
    );
    assert_eq!(
        embedded["embeddings"].as_array().unwrap().len(),
        2,
        "{embedded}"
    );
    assert_eq!(embedded["embeddings"][0].as_array().unwrap().len(), 16);

    let ranked = fixture.call(json!({"id": 4, "request_type": "Rerank", "model": "minilm",
        "query": "apples", "documents": ["green pears", "red apples"], "top_n": 1}));
    assert_eq!(ranked["method"], "embedding_similarity", "{ranked}");
    assert_eq!(ranked["results"][0]["index"], 1, "{ranked}");
}
