//! `make bench`: the store's figures.
//!
//! - SaveMessage acknowledged durable writes/s (synchronous=FULL, each write
//!   acknowledged after its group commit) with 1 and 16 concurrent writers,
//!   calling the store directly and through `Handler::serve` (the path every
//!   transport takes, with the pool sizes the binary uses);
//! - RagQuery p50/p99 over 100,000 chunks of 384-dim vectors, query
//!   embedding excluded (the vectors here are random: the figure is the
//!   store's search, vector scan + BM25 + fusion + reading the hits);
//! - AddDocument chunks/s with the real MiniLM model, when the build has the
//!   `onnx` feature and `TABAGENT_TEST_MODELS` names the test models.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tabagent::api::{
    AddDocumentRequest, RagQueryRequest, Reply, Request, RequestId, Response, SaveMessageRequest,
};
use tabagent::engine::Embedder;
use tabagent::error::ApiError;
use tabagent::handler::{Handler, HandlerConfig};
use tabagent::jobs::{JobLimits, ReplySink};
use tabagent::store::{Store, StoreOptions};

fn main() {
    let root = std::env::temp_dir().join(format!("tabagent-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();

    // `-- save rag add` picks sections; all run by default.
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |section: &str| picked.is_empty() || picked.iter().any(|p| p == section);
    if run("save") {
        save_message_figures(&root);
    }
    if run("rag") {
        vector_scan(100_000, 384);
        rag_query(&root.join("rag"), 100_000, 384);
    }
    if run("add") {
        match test_models() {
            Some(models) if cfg!(feature = "onnx") => {
                add_document_real_model(&root.join("add"), &models)
            }
            _ => println!(
                "AddDocument with the real model: skipped (needs the onnx feature and TABAGENT_TEST_MODELS)"
            ),
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}

fn save_message_figures(root: &Path) {
    println!(
        "raw fsync rate of this disk right now: {:.0}/s (a single writer can do no better; \
         the figure moves a lot while other work writes to the disk)",
        fsync_rate(root)
    );
    for writers in [1, 16] {
        let dir = root.join(format!("store-{writers}"));
        let store = Arc::new(Store::open(&dir, StoreOptions::default()).unwrap());
        let (rate, p99) = save_messages(writers, Duration::from_secs(3), move |s, c| {
            store
                .save_message(message(s, c))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        println!(
            "SaveMessage, store API, {writers:>2} writer(s): {rate:>7.0} durable writes/s (ack p99 {p99:.2} ms)"
        );
    }
    for writers in [1, 16] {
        let handler = Arc::new(handler(&root.join(format!("handler-{writers}")), None));
        let (rate, p99) = save_messages(writers, Duration::from_secs(3), move |s, c| {
            let request = Request::SaveMessage(message(s, c));
            match serve(&handler, request) {
                Response::MessageSaved(_) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        println!(
            "SaveMessage, Handler::serve, {writers:>2} writer(s): {rate:>7.0} durable writes/s (ack p99 {p99:.2} ms)"
        );
    }
}

fn message(session: &str, content: &str) -> SaveMessageRequest {
    SaveMessageRequest {
        session_id: session.into(),
        role: "user".into(),
        content: content.into(),
        metadata: Some(serde_json::json!({"url": "https://example.com/page"})),
    }
}

/// Runs `writers` threads saving messages for `time`; writes/s and the p99
/// time from call to acknowledgement.
fn save_messages(
    writers: usize,
    time: Duration,
    save: impl Fn(&str, &str) -> Result<(), String> + Send + Sync + 'static,
) -> (f64, f64) {
    let save = Arc::new(save);
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + time;
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (save, count) = (Arc::clone(&save), Arc::clone(&count));
            std::thread::spawn(move || {
                let session = format!("session-{w}");
                let mut latencies = Vec::new();
                let mut n = 0;
                while Instant::now() < deadline {
                    let content =
                        format!("writer {w} message {n}: some text of a typical chat turn");
                    let t = Instant::now();
                    save(&session, &content).unwrap();
                    latencies.push(t.elapsed().as_secs_f64() * 1e3);
                    count.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<f64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let rate = count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    (rate, percentile(&mut latencies, 0.99))
}

/// A handler like the binary's (same pool sizes), in `dir`.
fn handler(dir: &Path, models: Option<&Path>) -> Handler {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Handler::new(
        HandlerConfig {
            data_dir: dir.to_path_buf(),
            models_dir: models.map_or_else(|| dir.join("models"), Path::to_path_buf),
            limits: JobLimits {
                model_threads: 1,
                generate_threads: 4,
                io_threads: cores.max(2),
                queue_capacity: 64,
            },
            memory_budget: 0,
            keep_alive: Duration::ZERO,
            low_memory_bytes: 0,
            parallel: 0,
            context_shift: false,
            pull: tabagent::fetch::PullPolicy::default(),
        },
        Instant::now(),
    )
    .unwrap()
}

struct ChannelSink(Mutex<mpsc::Sender<Reply>>);

impl ReplySink for ChannelSink {
    fn deliver(&self, reply: Reply) -> bool {
        self.0.lock().unwrap().send(reply).is_ok()
    }
}

/// One request through `Handler::serve`, waiting for its final reply.
fn serve(handler: &Handler, request: Request) -> Response {
    let (tx, rx) = mpsc::channel();
    let sink: Arc<dyn ReplySink> = Arc::new(ChannelSink(Mutex::new(tx)));
    if let Some(response) = handler.serve(RequestId::text("b"), request, || sink, Instant::now()) {
        return response;
    }
    loop {
        let reply = rx.recv().unwrap();
        if reply.response.is_final() {
            return reply.response;
        }
    }
}

/// Random unit vectors keyed by text: the store's search cost without a model.
struct RandomEmbedder(usize);

impl Embedder for RandomEmbedder {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ApiError> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut state = t.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                }) | 1;
                let mut v: Vec<f32> = (0..self.0)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        (state % 20_000) as f32 / 10_000.0 - 1.0
                    })
                    .collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= norm);
                v
            })
            .collect())
    }

    fn dimensions(&self) -> usize {
        self.0
    }

    fn model_id(&self) -> &str {
        "random-bench-vectors"
    }
}

/// Text with a Zipf-like word distribution, so BM25 meets common and rare words.
struct Words {
    vocabulary: Vec<String>,
    state: u64,
}

impl Words {
    fn new() -> Words {
        let syllables = [
            "ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ve", "zu", "an", "el",
        ];
        let mut vocabulary = Vec::new();
        for a in syllables {
            for b in syllables {
                for c in ["", "n", "s", "ra", "to"] {
                    vocabulary.push(format!("{a}{b}{c}"));
                }
            }
        }
        Words {
            vocabulary,
            state: 0x2545_F491_4F6C_DD1D,
        }
    }

    fn next(&mut self) -> &str {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        // Zipf-ish: squaring a uniform number favours low ranks.
        let u = (self.state % 1_000_000) as f64 / 1_000_000.0;
        let rank = (u * u * self.vocabulary.len() as f64) as usize;
        &self.vocabulary[rank.min(self.vocabulary.len() - 1)]
    }

    /// A word from the rarest fifth of the vocabulary.
    fn rare(&mut self) -> &str {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let tail = self.vocabulary.len() / 5;
        let index = self.vocabulary.len() - 1 - (self.state % tail as u64) as usize;
        &self.vocabulary[index]
    }

    /// A sentence of about `bytes` bytes.
    fn sentence(&mut self, bytes: usize) -> String {
        let mut out = String::new();
        while out.len() < bytes {
            if !out.is_empty() {
                out.push(' ');
            }
            let word = self.next().to_string();
            out.push_str(&word);
        }
        out.push_str(". ");
        out
    }
}

fn rag_query(dir: &Path, chunks: usize, dims: usize) {
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    let embedder = RandomEmbedder(dims);
    let mut words = Words::new();
    // Sentences of ~200 bytes, chunks of up to 800 with 160 of overlap: about
    // 4 sentences a chunk; 100 sentences a document.
    let started = Instant::now();
    let mut stored = 0;
    let mut document = 0;
    while stored < chunks {
        let text: String = (0..100).map(|_| words.sentence(190)).collect();
        let request = AddDocumentRequest {
            collection: "bench".into(),
            text,
            url: Some(format!("https://example.com/{document}")),
            title: Some(format!("Page {document}")),
            metadata: None,
        };
        let chunked = store
            .chunk_document(request, embedder.model_id(), dims)
            .unwrap();
        let vectors = embedder.embed(chunked.texts()).unwrap();
        let added = store.add_document(chunked, vectors).unwrap();
        stored += added.chunks;
        document += 1;
    }
    println!(
        "RagQuery set-up: {stored} chunks of {dims} dims in {document} documents stored in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // As the handler runs a RagQuery: check it, embed it, search.
    let search = |text: String| {
        let request = RagQueryRequest {
            collection: "bench".into(),
            query: text,
            top_k: Some(5),
            min_score: None,
            rerank: false,
        };
        let checked = store
            .check_query(&request, embedder.model_id(), dims)
            .unwrap();
        let vector = embedder.embed(&[request.query]).unwrap().remove(0);
        store.search(&checked, vector, checked.top_k()).unwrap()
    };
    let t = Instant::now();
    search("kaka lomi".into());
    println!(
        "RagQuery first query (loads the vectors into memory): {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    // Queries as people type them: a few common words and one distinctive
    // one; then queries of common words only (no keyword ranking: see
    // store::search::keyword_search).
    for (label, rare) in [
        ("common words + 1 rare word", true),
        ("common words only", false),
    ] {
        let mut latencies = Vec::new();
        let mut keyword_hits = 0;
        for i in 0..300 {
            let mut terms: Vec<String> =
                (0..(2 + i % 3)).map(|_| words.next().to_string()).collect();
            if rare {
                terms.push(words.rare().to_string());
            }
            let t = Instant::now();
            let results = search(terms.join(" "));
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(results.hits.len(), 5);
            keyword_hits += results
                .hits
                .iter()
                .filter(|h| terms.iter().any(|t| h.text.contains(t.as_str())))
                .count();
        }
        let (p50, p99) = (
            percentile(&mut latencies, 0.5),
            percentile(&mut latencies, 0.99),
        );
        println!(
            "RagQuery over {stored} chunks x {dims} dims, top 5, {label} (query embedding excluded): p50 {p50:.1} ms, p99 {p99:.1} ms"
        );
        let _ = keyword_hits;
    }
}

/// The in-memory scan alone.
fn vector_scan(rows: usize, dims: usize) {
    let embedder = RandomEmbedder(dims);
    let mut index = tabagent::store::VectorIndex::new(dims, 0);
    let texts: Vec<String> = (0..rows).map(|i| i.to_string()).collect();
    for (i, v) in embedder.embed(&texts).unwrap().iter().enumerate() {
        index.push(i as i64, i as i64 / 25, v);
    }
    let query = embedder.embed(&["query".to_string()]).unwrap().remove(0);
    let mut latencies = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        std::hint::black_box(index.search(&query, 50));
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (p50, p99) = (
        percentile(&mut latencies, 0.5),
        percentile(&mut latencies, 0.99),
    );
    println!("vector scan alone, {rows} x {dims}, top 50: p50 {p50:.1} ms, p99 {p99:.1} ms");
}

fn test_models() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("TABAGENT_TEST_MODELS")?);
    dir.join("all-minilm-l6-v2").is_dir().then_some(dir)
}

fn add_document_real_model(dir: &Path, models: &Path) {
    let handler = handler(dir, Some(models));
    let add = |text: String, url: &str| {
        let request = Request::AddDocument(AddDocumentRequest {
            collection: "real".into(),
            text,
            url: Some(url.into()),
            title: None,
            metadata: None,
        });
        match serve(&handler, request) {
            Response::DocumentAdded(added) => added.chunks,
            other => panic!("{other:?}"),
        }
    };
    // The first call loads the model; time the second.
    add("Warm-up sentence. Another one.".into(), "warm-up");
    // English prose, as pages are: ~40 KB, chunks of up to 800 bytes (~180 tokens).
    let sentences = [
        "The committee met on Tuesday to review the budget for the coming year.",
        "Several members raised concerns about the rising cost of maintenance.",
        "After a long discussion, they agreed to postpone the decision until spring.",
        "Meanwhile, the library will extend its opening hours on weekends.",
        "Volunteers are needed to help with the annual book sale in the main hall.",
        "Residents can register online or at the front desk before the end of the month.",
    ];
    let text: String = (0..600)
        .map(|i| format!("{} ({i}) ", sentences[(i * 7 + i / 6) % sentences.len()]))
        .collect();
    let t = Instant::now();
    let chunks = add(text.clone(), "page");
    let seconds = t.elapsed().as_secs_f64();
    println!(
        "AddDocument with all-minilm-l6-v2: {} KB of English in {chunks} chunks in {seconds:.1} s = {:.1} chunks/s ({:.1} KB/s)",
        text.len() / 1000,
        chunks as f64 / seconds,
        text.len() as f64 / 1000.0 / seconds
    );
}

/// Appends and fsyncs a small file for a second: the disk's commit ceiling.
fn fsync_rate(dir: &Path) -> f64 {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).unwrap();
    let started = Instant::now();
    let mut count = 0;
    while started.elapsed() < Duration::from_secs(1) {
        file.write_all(&[0u8; 100]).unwrap();
        file.sync_data().unwrap();
        count += 1;
    }
    let _ = std::fs::remove_file(path);
    count as f64 / started.elapsed().as_secs_f64()
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}
