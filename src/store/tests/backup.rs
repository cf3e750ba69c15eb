//! The store's unit tests of backups with documents: a collection's
//! documents, chunks and vectors come back in another store and answer the
//! same searches; a second restore does not double them; a restore into a
//! collection of another model, or a file with a broken vector, changes
//! nothing; a version 1 file (titles only) still restores.

use serde_json::{Value, json};

use super::super::testing::TempDir;
use super::super::*;
use super::{add, add_as, document, message, query, search, store};
use crate::error::ApiError;

const FOXES: &str = "Foxes are small omnivorous mammals. They have a bushy tail and pointed ears. \
    The red fox is the largest of the true foxes. Foxes live on every continent except Antarctica.";
const BREAD: &str = "Bread is made from flour, water and yeast. The dough is kneaded and left to rise. \
    Sourdough bread uses a starter instead of commercial yeast. Bake it in a hot oven.";
const DIMS: usize = 64;

fn small_chunks(dir: &TempDir) -> Store {
    let options = StoreOptions {
        chunking: ChunkConfig {
            max_bytes: 90,
            overlap_bytes: 20,
        },
        ..StoreOptions::default()
    };
    Store::open(dir.path(), options).unwrap()
}

/// A store with a chat and a collection of two documents (one with a URL).
fn filled(dir: &TempDir) -> Store {
    let store = small_chunks(dir);
    store
        .save_message(message("chat", "user", "hello"))
        .unwrap();
    add(&store, document("kb", FOXES, Some("https://a/foxes")), DIMS).unwrap();
    add(&store, document("kb", BREAD, None), DIMS).unwrap();
    store
}

/// The backup as bytes, as the file a user keeps.
fn backup_bytes(store: &Store) -> Vec<u8> {
    serde_json::to_vec(&store.backup(None, 1).unwrap()).unwrap()
}

/// (text, url, start, end) of each hit, best first.
fn hits(store: &Store, text: &str) -> Vec<(String, Option<String>, usize, usize)> {
    search(store, &query("kb", text, 4), DIMS)
        .unwrap()
        .hits
        .into_iter()
        .map(|h| (h.text, h.url, h.start, h.end))
        .collect()
}

#[test]
fn documents_with_their_vectors_come_back_and_a_second_restore_does_not_double_them() {
    let (from_dir, to_dir) = (TempDir::new("backup-from"), TempDir::new("backup-to"));
    let from = filled(&from_dir);
    let bytes = backup_bytes(&from);
    let file = BackupFile::check(&bytes).unwrap();
    assert_eq!(file.version, 2);
    let kb = &file.collections[0];
    assert_eq!(kb.documents.len(), 2);
    assert!(kb.documents.iter().all(|d| d.chunks.len() > 1), "{kb:?}");

    let to = small_chunks(&to_dir);
    let counts = to.restore(file).unwrap();
    assert_eq!(
        counts,
        RestoreCounts {
            sessions: 1,
            messages: 1,
            collections_created: 1,
            documents: 2
        }
    );
    // The restored vectors and text answer as the originals did.
    for text in ["sourdough starter yeast", "red fox bushy tail"] {
        assert_eq!(hits(&to, text), hits(&from, text), "{text}");
    }
    let documents = to.list_documents("kb").unwrap().documents;
    assert_eq!(documents.len(), 2);
    let bread = documents.iter().find(|d| d.url.is_none()).unwrap();
    assert_eq!(bread.length, BREAD.len() as u64);
    assert_eq!(bread.metadata, Some(json!({"lang": "en"})));

    // Again: the URL's document is replaced, the one without a URL is kept.
    let counts = to.restore(BackupFile::check(&bytes).unwrap()).unwrap();
    assert_eq!(counts.documents, 1);
    assert_eq!(to.list_documents("kb").unwrap().documents.len(), 2);
    let chunks = |s: &Store| s.list_collections().unwrap().collections[0].chunks;
    assert_eq!(chunks(&to), chunks(&from));
}

#[test]
fn a_collection_searched_before_the_restore_finds_the_restored_documents() {
    let (from_dir, to_dir) = (TempDir::new("backup-cached"), TempDir::new("backup-into"));
    let bytes = backup_bytes(&filled(&from_dir));
    let to = small_chunks(&to_dir);
    let owls = "Owls hunt at night.";
    add(&to, document("kb", owls, Some("https://b/owls")), DIMS).unwrap();
    // This query loads the collection's vectors into memory.
    assert_eq!(
        hits(&to, "owls night")[0].1.as_deref(),
        Some("https://b/owls")
    );
    to.restore(BackupFile::check(&bytes).unwrap()).unwrap();
    let top = &hits(&to, "red fox bushy tail")[0];
    assert_eq!(top.1.as_deref(), Some("https://a/foxes"), "{top:?}");
    assert_eq!(to.list_documents("kb").unwrap().documents.len(), 3);
}

#[test]
fn a_restore_into_a_collection_of_another_model_changes_nothing() {
    let (from_dir, to_dir) = (TempDir::new("backup-model"), TempDir::new("backup-other"));
    let bytes = backup_bytes(&filled(&from_dir));
    let to = small_chunks(&to_dir);
    add_as(
        &to,
        document("kb", "Owls hunt.", None),
        "another-model",
        DIMS,
    )
    .unwrap();
    let error = to.restore(BackupFile::check(&bytes).unwrap()).unwrap_err();
    assert_eq!(ApiError::from(error).status, 409);
    // The sessions of the file were rolled back with it.
    let sessions = to.list_sessions(&ListSessionsRequest::default()).unwrap();
    assert!(sessions.sessions.is_empty(), "{sessions:?}");
    assert_eq!(to.list_documents("kb").unwrap().documents.len(), 1);
}

#[test]
fn a_file_with_a_broken_vector_or_chunk_is_refused_whole() {
    let dir = TempDir::new("backup-broken");
    let good: Value = serde_json::from_slice(&backup_bytes(&filled(&dir))).unwrap();
    let chunk = "/collections/0/documents/1/chunks/0";
    // The file with the value at `path` replaced: (the error, its status).
    let broken = |path: &str, value: Value| {
        let mut file = good.clone();
        *file.pointer_mut(path).unwrap() = value;
        let error = BackupFile::check(file.to_string().as_bytes()).unwrap_err();
        (error.to_string(), ApiError::from(error).status)
    };
    let short = "AAAAAA=="; // 4 bytes: one float, not 64
    let (why, status) = broken(&format!("{chunk}/embedding"), json!(short));
    assert_eq!(status, 422);
    assert!(
        why.contains("document 1") && why.contains("chunk 0") && why.contains("64 floats"),
        "{why}"
    );
    let (why, _) = broken(&format!("{chunk}/embedding"), json!("not base64!"));
    assert!(why.contains("not base64"), "{why}");
    let nan = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        [f32::NAN.to_le_bytes(); DIMS].concat(),
    );
    let (why, _) = broken(&format!("{chunk}/embedding"), json!(nan));
    assert!(why.contains("finite"), "{why}");
    let (why, _) = broken(&format!("{chunk}/end"), json!(1 << 20));
    assert!(why.contains("outside"), "{why}");
    let (why, _) = broken("/collections/0/model", Value::Null);
    assert!(why.contains("no model"), "{why}");
    let (why, _) = broken(
        "/collections",
        json!([good["collections"][0], good["collections"][0]]),
    );
    assert!(why.contains("twice"), "{why}");
}

#[test]
fn a_version_1_file_with_document_titles_restores_its_collections_empty() {
    let dir = TempDir::new("backup-v1");
    let store = store(&dir);
    let v1 = json!({
        "format": "tabagent-backup", "version": 1, "created_at": 0,
        "collections": [{"name": "notes", "model": "m", "dimensions": 8, "documents": ["A title"]}],
        "sessions": [],
    });
    let file = BackupFile::check(v1.to_string().as_bytes()).unwrap();
    let counts = store.restore(file).unwrap();
    assert_eq!((counts.collections_created, counts.documents), (1, 0));
    let listed = store.list_collections().unwrap().collections;
    assert_eq!((listed[0].name.as_str(), listed[0].documents), ("notes", 0));
    let v3 = json!({"format": "tabagent-backup", "version": 3, "created_at": 0});
    let error = BackupFile::check(v3.to_string().as_bytes()).unwrap_err();
    assert!(error.to_string().contains("version 3"), "{error}");
}
