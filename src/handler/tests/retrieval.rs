//! Retrieval composed in the handler, with a fake embedder: documents are
//! chunked by the store, embedded here in batches that a cancel stops, and
//! stored; queries are embedded, searched and reranked. The same seen as a
//! client sees it, through `Handler::serve` and the fake ONNX model.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use super::super::retrieval::{add_document, rag_query};
use super::{Fixture, Setup, assert_error};
use crate::api::{AddDocumentRequest, RagQueryRequest};
use crate::engine::Embedder;
use crate::engine::rerank::Scorer;
use crate::error::ApiError;
use crate::store::testing::{TempDir, bag_of_words};
use crate::store::{Store, StoreOptions};

/// An embedder of [`bag_of_words`] vectors (unit tests only — the product
/// never makes up vectors); it counts its calls.
pub(super) struct FakeEmbedder {
    dimensions: usize,
    model: String,
    calls: AtomicUsize,
}

impl FakeEmbedder {
    pub(super) fn new(model: &str, dimensions: usize) -> FakeEmbedder {
        FakeEmbedder {
            dimensions,
            model: model.into(),
            calls: AtomicUsize::new(0),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Embedder for FakeEmbedder {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ApiError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(texts
            .iter()
            .map(|t| bag_of_words(t, self.dimensions))
            .collect())
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn model_id(&self) -> &str {
        &self.model
    }
}

/// Answers one vector too short: a bug whose output must not be stored.
struct ShortVectors;

impl Embedder for ShortVectors {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ApiError> {
        Ok(texts.iter().map(|_| vec![1.0; 3]).collect())
    }
    fn dimensions(&self) -> usize {
        4
    }
    fn model_id(&self) -> &str {
        "short"
    }
}

fn document(text: &str, url: Option<&str>) -> AddDocumentRequest {
    AddDocumentRequest {
        collection: "kb".into(),
        text: text.into(),
        url: url.map(String::from),
        title: None,
        metadata: None,
    }
}

fn query(text: &str, top_k: usize, rerank: bool) -> RagQueryRequest {
    RagQueryRequest {
        collection: "kb".into(),
        query: text.into(),
        top_k: Some(top_k),
        min_score: None,
        rerank,
    }
}

fn documents_in(store: &Store) -> u64 {
    store.list_collections().unwrap().collections[0].documents
}

#[test]
fn another_model_is_refused_before_embedding_and_a_cancel_stores_nothing() {
    let dir = TempDir::new("retrieval-cancel");
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let embedder = FakeEmbedder::new("fake", 64);
    add_document(&store, document("Text.", None), &embedder, &|| false).unwrap();

    let other = FakeEmbedder::new("another-model", 32);
    let error = add_document(&store, document("More.", None), &other, &|| false).unwrap_err();
    assert_eq!(error.status, 409);
    assert!(error.detail.contains("fake"), "{error:?}");
    let error = rag_query(&store, &query("text", 5, false), &other, None).unwrap_err();
    assert_eq!(error.status, 409);
    assert_eq!(other.calls(), 0, "refused before embedding");

    // ~50 KB: three batches of 32 chunks. Cancelled before the first, or
    // between the first and the second: a 499, and nothing stored.
    let long = "Sentence. ".repeat(5000);
    let error = add_document(&store, document(&long, None), &embedder, &|| true).unwrap_err();
    assert_eq!(error.status, 499);
    assert!(error.kind.ends_with(":cancelled"), "{error:?}");
    let before = embedder.calls();
    let after_one = || embedder.calls() > before;
    let error = add_document(&store, document(&long, None), &embedder, &after_one).unwrap_err();
    assert_eq!(error.status, 499);
    assert_eq!(embedder.calls(), before + 1, "stopped between batches");
    assert_eq!(documents_in(&store), 1);

    let before = embedder.calls();
    let added = add_document(&store, document(&long, None), &embedder, &|| false).unwrap();
    assert!(added.chunks > 64, "{}", added.chunks);
    assert_eq!(embedder.calls() - before, added.chunks.div_ceil(32));
    assert_eq!(documents_in(&store), 2);

    // Vectors of the wrong length are a 500, and are not stored.
    let mut short = document("Other.", None);
    short.collection = "short".into();
    let error = add_document(&store, short, &ShortVectors, &|| false).unwrap_err();
    assert_eq!(error.status, 500, "{error:?}");
    assert_eq!(store.list_collections().unwrap().collections.len(), 1);
}

#[test]
fn queries_are_embedded_searched_and_reranked() {
    let dir = TempDir::new("retrieval-rerank");
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let embedder = Arc::new(FakeEmbedder::new("fake", 256));
    for (i, text) in [
        "Foxes have a bushy tail and pointed ears.",
        "Sourdough bread uses a starter instead of yeast.",
        "Bread is made from flour, water and yeast.",
        "The red fox lives on every continent.",
        "Yeast makes the dough rise in a warm room.",
    ]
    .iter()
    .enumerate()
    {
        add_document(
            &store,
            document(text, Some(&format!("u{i}"))),
            embedder.as_ref(),
            &|| false,
        )
        .unwrap();
    }
    let fused = rag_query(
        &store,
        &query("sourdough starter", 2, false),
        embedder.as_ref(),
        None,
    )
    .unwrap()
    .hits;
    assert_eq!(fused.len(), 2);
    assert!(fused[0].text.contains("starter"), "{fused:?}");
    assert!(fused.iter().all(|h| h.score > 0.0 && h.score <= 1.0));

    // Reranked by embedding similarity: the score is then the cosine, best
    // first, and the cut to top_k comes after reranking a larger pool.
    let scorer = Scorer::EmbeddingSimilarity(embedder.clone());
    let calls = embedder.calls();
    let reranked = rag_query(
        &store,
        &query("bread yeast", 3, true),
        embedder.as_ref(),
        Some(&scorer),
    )
    .unwrap()
    .hits;
    assert_eq!(
        embedder.calls() - calls,
        2,
        "the query, then the candidates"
    );
    assert_eq!(reranked.len(), 3);
    assert!(reranked.windows(2).all(|w| w[0].score >= w[1].score));
    for hit in &reranked {
        assert!((hit.score - hit.similarity).abs() < 1e-5, "{hit:?}");
    }
    assert!(reranked[0].text.contains("yeast"), "{reranked:?}");
}

fn call(fixture: &Fixture, id: u64, request_type: &str, body: Value) -> Value {
    let mut request = json!({"id": id, "request_type": request_type});
    request
        .as_object_mut()
        .unwrap()
        .extend(body.as_object().unwrap().clone());
    fixture.call(request)
}

#[test]
#[cfg_attr(
    not(feature = "onnx"),
    ignore = "retrieval answers 501 without the onnx feature"
)]
fn retrieval_requests_run_on_the_fake_embedding_model() {
    let fixture = Fixture::new(Setup::default());
    let added = call(
        &fixture,
        1,
        "AddDocument",
        json!({"collection": "kb",
        "text": "Foxes have bushy tails. Bread needs yeast.", "url": "https://a"}),
    );
    assert_eq!(added["response_type"], "DocumentAdded", "{added}");
    assert_eq!(added["chunks"], 1, "{added}");
    // Again with the same URL: replaced, with the collection's own model.
    let again = call(
        &fixture,
        2,
        "AddDocument",
        json!({"collection": "kb",
        "text": "Foxes have bushy tails. Bread needs yeast.", "url": "https://a"}),
    );
    assert_eq!(again["replaced"], true, "{again}");
    call(
        &fixture,
        3,
        "AddDocument",
        json!({"collection": "kb", "text": "Pears are green."}),
    );

    for rerank in [false, true] {
        let found = call(
            &fixture,
            4,
            "RagQuery",
            json!({"collection": "kb", "query": "bushy foxes", "top_k": 1, "rerank": rerank}),
        );
        assert_eq!(found["hits"].as_array().unwrap().len(), 1, "{found}");
        assert_eq!(found["hits"][0]["url"], "https://a", "{found}");
    }
    let listed = call(&fixture, 5, "ListCollections", json!({}));
    assert_eq!(listed["collections"][0]["model"], "minilm", "{listed}");
    assert_eq!(listed["collections"][0]["documents"], 2, "{listed}");

    let document_id = again["document_id"].clone();
    let deleted = call(
        &fixture,
        6,
        "DeleteDocument",
        json!({"collection": "kb", "document_id": document_id}),
    );
    assert_eq!(deleted["document_id"], document_id, "{deleted}");
    let cleared = call(&fixture, 7, "ClearCollection", json!({"collection": "kb"}));
    assert_eq!(cleared["documents_removed"], 1, "{cleared}");
    let gone = call(
        &fixture,
        8,
        "RagQuery",
        json!({"collection": "kb", "query": "pears"}),
    );
    assert_error(&gone, 404, "kb");
}
