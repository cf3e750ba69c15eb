//! The store's unit tests of documents and search, with plain vectors
//! ([`bag_of_words`](super::super::testing::bag_of_words) stands in for an
//! embedder, which the store never runs): chunks stored with their source,
//! replaced and deleted in step with the in-memory vectors, a second process,
//! another model, vectors that do not fit, and large Unicode documents.

use rusqlite::Connection;
use serde_json::json;

use super::super::testing::{BAG_OF_WORDS, TempDir};
use super::super::*;
use super::{add, add_as, document, query, search, store};
use crate::error::ApiError;

const FOXES: &str = "Foxes are small omnivorous mammals. They have a bushy tail and pointed ears. \
    The red fox is the largest of the true foxes. Foxes live on every continent except Antarctica.";
const BREAD: &str = "Bread is made from flour, water and yeast. The dough is kneaded and left to rise. \
    Sourdough bread uses a starter instead of commercial yeast. Bake it in a hot oven.";

#[test]
fn documents_are_chunked_stored_and_found_with_their_source() {
    let dir = TempDir::new("rag");
    let options = StoreOptions {
        chunking: ChunkConfig {
            max_bytes: 90,
            overlap_bytes: 40,
        },
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    let dims = 256;
    let foxes = add(&store, document("kb", FOXES, Some("https://a/foxes")), dims).unwrap();
    assert!(foxes.chunks > 1 && !foxes.replaced);
    add(&store, document("kb", BREAD, Some("https://a/bread")), dims).unwrap();

    let results = search(&store, &query("kb", "sourdough starter yeast", 3), dims).unwrap();
    let top = &results.hits[0];
    assert!(top.text.contains("starter"), "{top:?}");
    assert_eq!(top.url.as_deref(), Some("https://a/bread"));
    assert_eq!(top.title.as_deref(), Some("A title"));
    assert_eq!(top.metadata, Some(json!({"lang": "en"})));
    assert_eq!(&BREAD[top.start..top.end], top.text);
    assert!(top.score > 0.0 && top.score <= 1.0);
    assert!(results.hits.windows(2).all(|w| w[0].score >= w[1].score));

    // min_score drops weak hits.
    let mut strict = query("kb", "red fox tail", 10);
    strict.min_score = Some(0.3);
    let hits = search(&store, &strict, dims).unwrap().hits;
    assert!(!hits.is_empty() && hits.iter().all(|h| h.similarity >= 0.3));
    assert!(
        hits.iter()
            .all(|h| h.url.as_deref() == Some("https://a/foxes"))
    );

    let listed = store.list_collections().unwrap().collections;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].documents, 2);
    assert_eq!(listed[0].model.as_deref(), Some("fake-bag-of-words"));
}

#[test]
fn re_adding_a_url_replaces_and_deletes_keep_search_in_step() {
    let dir = TempDir::new("replace");
    let store = store(&dir);
    let dims = 64;
    let first = add(
        &store,
        document("kb", "Old text about llamas.", Some("u")),
        dims,
    )
    .unwrap();
    // Query once so the vectors are cached, then change the collection.
    assert_eq!(
        search(&store, &query("kb", "llamas", 5), dims)
            .unwrap()
            .hits
            .len(),
        1
    );
    let second = add(
        &store,
        document("kb", "New text about alpacas.", Some("u")),
        dims,
    )
    .unwrap();
    assert!(second.replaced && second.document_id != first.document_id);
    let hits = search(&store, &query("kb", "llamas alpacas", 5), dims)
        .unwrap()
        .hits;
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].text.contains("alpacas"));
    assert_eq!(store.list_collections().unwrap().collections[0].chunks, 1);

    let other = add(&store, document("kb", "Guanacos are wild.", None), dims).unwrap();
    store.delete_document("kb", second.document_id).unwrap();
    let hits = search(&store, &query("kb", "alpacas guanacos", 5), dims)
        .unwrap()
        .hits;
    assert_eq!(
        hits.iter().map(|h| h.document_id).collect::<Vec<_>>(),
        [other.document_id]
    );
    let missing = store.delete_document("kb", second.document_id).unwrap_err();
    assert_eq!(ApiError::from(missing).status, 404);

    // The keyword index follows deletes too.
    let fts: i64 = Connection::open(store.path())
        .unwrap()
        .query_row(
            "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'alpacas'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(fts, 0);

    let cleared = store.clear_collection("kb").unwrap();
    assert_eq!(cleared.documents_removed, 1);
    let gone = search(&store, &query("kb", "guanacos", 5), dims).unwrap_err();
    assert_eq!(ApiError::from(gone).status, 404);
    assert!(store.list_collections().unwrap().collections.is_empty());
    assert_eq!(
        ApiError::from(store.clear_collection("kb").unwrap_err()).status,
        404
    );
}

#[test]
fn a_second_process_sees_changes_through_the_version() {
    let dir = TempDir::new("two");
    let (a, b) = (store(&dir), store(&dir));
    let dims = 64;
    add(&a, document("kb", "Apples are red.", Some("1")), dims).unwrap();
    assert_eq!(
        search(&b, &query("kb", "apples", 5), dims)
            .unwrap()
            .hits
            .len(),
        1
    );
    add(&a, document("kb", "Pears are green.", Some("2")), dims).unwrap();
    let hits = search(&b, &query("kb", "pears", 5), dims).unwrap().hits;
    assert!(
        hits.iter().any(|h| h.text.contains("Pears")),
        "b reloaded: {hits:?}"
    );
}

#[test]
fn another_model_is_a_conflict_and_wrong_vectors_store_nothing() {
    let dir = TempDir::new("model");
    let store = store(&dir);
    let dims = 64;
    add(&store, document("kb", "Text.", None), dims).unwrap();
    // Refused when chunking and when checking the query: before any vector
    // is asked for.
    let error = add_as(&store, document("kb", "More.", None), "another-model", 32).unwrap_err();
    assert!(error.to_string().contains("fake-bag-of-words"), "{error}");
    assert_eq!(ApiError::from(error).status, 409);
    let error = store
        .check_query(&query("kb", "text", 5), "another-model", 32)
        .err()
        .unwrap();
    assert_eq!(ApiError::from(error).status, 409);
    let error = store
        .check_query(&query("nothing", "text", 5), BAG_OF_WORDS, dims)
        .err()
        .unwrap();
    assert_eq!(ApiError::from(error).status, 404);

    // Vectors that do not fit the chunks are refused, and nothing is stored.
    let chunked = || {
        store
            .chunk_document(document("kb", "One. Two.", None), BAG_OF_WORDS, dims)
            .unwrap()
    };
    for vectors in [
        Vec::new(),
        vec![vec![1.0; dims]; 2],
        vec![vec![1.0; dims - 1]],
    ] {
        let error = store.add_document(chunked(), vectors).unwrap_err();
        assert_eq!(ApiError::from(error).status, 422);
    }
    assert_eq!(
        store.list_collections().unwrap().collections[0].documents,
        1
    );
    let checked = store
        .check_query(&query("kb", "text", 5), BAG_OF_WORDS, dims)
        .unwrap();
    let error = store.search(&checked, vec![1.0; 3], 5).unwrap_err();
    assert_eq!(ApiError::from(error).status, 422);

    for bad in [document("", "x", None), document("kb", "   ", None)] {
        let error = add(&store, bad, dims).unwrap_err();
        assert_eq!(ApiError::from(error).status, 422);
    }
    let mut q = query("kb", "x", 0);
    assert_eq!(
        ApiError::from(search(&store, &q, dims).unwrap_err()).status,
        422
    );
    q.top_k = Some(5);
    q.min_score = Some(7.0);
    assert_eq!(
        ApiError::from(search(&store, &q, dims).unwrap_err()).status,
        422
    );
}

#[test]
fn unicode_and_very_large_documents() {
    let dir = TempDir::new("large");
    let store = store(&dir);
    let dims = 128;
    // ~6 MB of mixed scripts; the needle is near the end.
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 6 << 20 {
        text.push_str(&format!(
            "Paragraphe {i} : le café est chaud. 段落{i}は日本語です。 Emoji 🙂 number {i}.\n"
        ));
        i += 1;
    }
    text.push_str("Der Schlüssel liegt unter der Fußmatte neben der Tür.");
    let added = add(&store, document("big", &text, Some("https://big")), dims).unwrap();
    assert!(added.chunks > 5000, "{}", added.chunks);
    let results = search(&store, &query("big", "Schlüssel Fußmatte", 3), dims).unwrap();
    // First by keywords; bag-of-words vectors are too crude to rank
    // it first by similarity too, so it shares the top with the best vector hit.
    let hit = results.hits.iter().find(|h| h.text.contains("Fußmatte"));
    let hit = hit.unwrap_or_else(|| panic!("{:?}", results.hits));
    assert_eq!(&text[hit.start..hit.end], hit.text);
    // Diacritics do not matter to the keyword index.
    let plain = search(&store, &query("big", "schlussel fussmatte", 3), dims).unwrap();
    assert!(
        plain.hits.iter().any(|h| h.text.contains("Schlüssel")),
        "{:?}",
        plain.hits
    );

    let japanese = search(&store, &query("big", "段落77は日本語です", 3), dims).unwrap();
    assert!(
        japanese.hits.iter().any(|h| h.text.contains("段落77は")),
        "{:?}",
        japanese.hits
    );

    let too_big = document("big", &"x".repeat(documents::MAX_DOCUMENT_BYTES + 1), None);
    assert_eq!(
        ApiError::from(add(&store, too_big, dims).unwrap_err()).status,
        422
    );
}
