//! RagQuery's search: hybrid retrieval over one collection, for a query
//! vector the caller made (the store runs no model).
//!
//! Two rankings of the collection's chunks are made: by cosine similarity of
//! their vectors with the query's (brute force over the in-memory copy), and
//! by BM25 over the FTS5 keyword index, on the query's distinctive words
//! (see [`keyword_search`] for why the very common ones are left out). They are fused by reciprocal rank
//! fusion — each chunk scores `Σ 1/(60 + rank)` over the rankings it appears
//! in — which needs no calibration between the two kinds of score. The
//! reported `score` is that sum divided by its maximum (first in both
//! rankings), so it lies in (0, 1]; `similarity` is the chunk's cosine.
//! `min_score` filters on the cosine, the one score with an absolute meaning.
//! Reranking the candidates is the caller's (the handler's) work.

use std::collections::HashMap;

use rusqlite::{Connection, params};

use super::StoreError;
use super::documents::{check_model, check_name, find_collection, load_index, no_collection};
use super::history::parse_metadata;
use super::vectors::{VectorCache, normalise};
use crate::api::{RagHit, RagQueryRequest, RagResults};

/// Hits returned when a request does not say.
pub const DEFAULT_TOP_K: usize = 5;
/// The most hits one request may ask for.
pub const MAX_TOP_K: usize = 100;
/// The k of reciprocal rank fusion (the value of the original paper).
const RRF_K: f32 = 60.0;
/// Query words used for keyword search, at most.
const MAX_TERMS: usize = 32;
/// A word in more than 1/this of all chunks is too common to rank by.
const COMMON_FRACTION: i64 = 20;
/// ...but a word is never too common below this many chunks.
const MIN_COMMON: i64 = 2000;

/// A checked RagQuery whose vector comes from `model` ([`super::Store::check_query`]).
pub struct SearchQuery {
    collection: String,
    text: String,
    top_k: usize,
    min_score: Option<f32>,
    model: String,
    dimensions: usize,
}

impl SearchQuery {
    /// Checks the request's values; no I/O.
    pub(crate) fn check(
        request: &RagQueryRequest,
        model: &str,
        dimensions: usize,
    ) -> Result<SearchQuery, StoreError> {
        check_name(&request.collection)?;
        if request.query.trim().is_empty() {
            return Err(StoreError::Invalid("query is empty".into()));
        }
        let top_k = request.top_k.unwrap_or(DEFAULT_TOP_K);
        if top_k == 0 || top_k > MAX_TOP_K {
            return Err(StoreError::Invalid(format!(
                "top_k must be 1 to {MAX_TOP_K}"
            )));
        }
        if let Some(min) = request.min_score
            && !(-1.0..=1.0).contains(&min)
        {
            return Err(StoreError::Invalid(format!(
                "min_score {min} is not a cosine similarity (-1 to 1)"
            )));
        }
        Ok(SearchQuery {
            collection: request.collection.clone(),
            text: request.query.clone(),
            top_k,
            min_score: request.min_score,
            model: model.to_string(),
            dimensions,
        })
    }

    /// The query's text: what to embed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The hits asked for.
    pub fn top_k(&self) -> usize {
        self.top_k
    }

    /// How many candidates each ranking contributes.
    fn candidates(&self) -> usize {
        (self.top_k * 4).max(50)
    }
}

/// The 404 of a missing collection, the 409 of one holding another model's
/// vectors.
pub(crate) fn check_collection(
    connection: &Connection,
    query: &SearchQuery,
) -> Result<(), StoreError> {
    let collection = find_collection(connection, &query.collection)?
        .ok_or_else(|| no_collection(&query.collection))?;
    check_model(
        Some(&collection),
        &query.collection,
        &query.model,
        query.dimensions,
    )
}

/// Runs a query with its vector; at most `limit` hits, best first.
pub(crate) fn run(
    connection: &Connection,
    cache: &VectorCache,
    query: &SearchQuery,
    mut vector: Vec<f32>,
    limit: usize,
) -> Result<RagResults, StoreError> {
    let empty = || RagResults {
        collection: query.collection.clone(),
        hits: Vec::new(),
    };
    if vector.len() != query.dimensions {
        return Err(StoreError::Invalid(format!(
            "the query vector has {} floats, not {}",
            vector.len(),
            query.dimensions
        )));
    }
    normalise(&mut vector);

    // One snapshot for the version, the vectors' rows and the chunk texts.
    let tx = connection.unchecked_transaction()?;
    let collection =
        find_collection(&tx, &query.collection)?.ok_or_else(|| no_collection(&query.collection))?;
    // Checked again in this snapshot: the collection may have been cleared
    // and refilled with another model since the caller checked it.
    check_model(
        Some(&collection),
        &query.collection,
        &query.model,
        query.dimensions,
    )?;
    let Some(dimensions) = collection.dimensions else {
        return Ok(empty());
    };
    let index = cache.get_or_load(collection.id, collection.version, || {
        load_index(&tx, &collection, dimensions)
    })?;
    let index = index.read().unwrap_or_else(|p| p.into_inner());
    if index.is_empty() {
        return Ok(empty());
    }

    let semantic = index.search(&vector, query.candidates());
    let keyword = keyword_search(&tx, collection.id, &query.text, query.candidates())?;

    // Reciprocal rank fusion.
    let mut fused: HashMap<i64, Candidate> = HashMap::new();
    for (rank, &(chunk, similarity)) in semantic.iter().enumerate() {
        let entry = fused.entry(chunk).or_insert(Candidate::new(chunk));
        entry.rrf += 1.0 / (RRF_K + rank as f32 + 1.0);
        entry.similarity = Some(similarity);
    }
    for (rank, &chunk) in keyword.iter().enumerate() {
        fused.entry(chunk).or_insert(Candidate::new(chunk)).rrf +=
            1.0 / (RRF_K + rank as f32 + 1.0);
    }
    let mut candidates: Vec<Candidate> = fused
        .into_values()
        .filter_map(|mut c| {
            // Keyword-only hits get their cosine from the in-memory copy; a
            // chunk missing there (written after the copy) is skipped.
            c.similarity = c.similarity.or_else(|| index.similarity(c.chunk, &vector));
            let similarity = c.similarity?;
            query
                .min_score
                .is_none_or(|min| similarity >= min)
                .then_some(c)
        })
        .collect();
    drop(index);
    candidates.sort_by(|a, b| {
        b.rrf
            .total_cmp(&a.rrf)
            .then(
                b.similarity
                    .unwrap_or(0.0)
                    .total_cmp(&a.similarity.unwrap_or(0.0)),
            )
            .then(a.chunk.cmp(&b.chunk))
    });
    candidates.truncate(limit);

    let best = 2.0 / (RRF_K + 1.0);
    let mut hits = Vec::with_capacity(candidates.len());
    for candidate in &candidates {
        if let Some(mut hit) = read_hit(&tx, candidate.chunk)? {
            hit.score = candidate.rrf / best;
            hit.similarity = candidate.similarity.unwrap_or(0.0);
            hits.push(hit);
        }
    }
    tx.commit()?;
    Ok(RagResults {
        collection: query.collection.clone(),
        hits,
    })
}

#[derive(Clone, Copy)]
struct Candidate {
    chunk: i64,
    rrf: f32,
    similarity: Option<f32>,
}

impl Candidate {
    fn new(chunk: i64) -> Candidate {
        Candidate {
            chunk,
            rrf: 0.0,
            similarity: None,
        }
    }
}

/// Chunk ids of the collection best first by BM25, for the distinctive
/// words of `text`.
///
/// FTS5 computes BM25 for every row that matches before it can sort, about a
/// microsecond each, so a query word found in most chunks ("the", "how")
/// would cost ~100 ms over 100k chunks while adding almost nothing to the
/// ranking: its inverse document frequency is near zero. So each word's
/// document count is taken first (counting stops at the cap, so this is
/// cheap), and words in more than 1/20 of all chunks (at least 2,000) are
/// left out. When no word is distinctive the keyword ranking is empty and the
/// vector ranking decides alone.
fn keyword_search(
    connection: &Connection,
    collection: i64,
    text: &str,
    limit: usize,
) -> Result<Vec<i64>, StoreError> {
    let terms = query_terms(text, MAX_TERMS);
    if terms.is_empty() {
        return Ok(Vec::new());
    }
    // Chunk ids only grow, so the largest one bounds the chunk count in O(log n).
    let chunks: i64 = connection
        .prepare_cached("SELECT coalesce(max(id), 0) FROM chunks")?
        .query_row([], |row| row.get(0))?;
    let cap = (chunks / COMMON_FRACTION).max(MIN_COMMON);
    let mut count = connection.prepare_cached(
        "SELECT count(*) FROM (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ?1 LIMIT ?2)",
    )?;
    let mut distinctive = Vec::new();
    for term in terms {
        let quoted = format!("\"{term}\"");
        let found: i64 = count.query_row(params![quoted, cap + 1], |row| row.get(0))?;
        if found > 0 && found <= cap {
            distinctive.push(quoted);
        }
    }
    if distinctive.is_empty() {
        return Ok(Vec::new());
    }
    let mut statement = connection.prepare_cached(
        "SELECT c.id FROM chunks_fts f JOIN chunks c ON c.id = f.rowid
         WHERE chunks_fts MATCH ?1 AND c.collection_id = ?2
         ORDER BY f.rank LIMIT ?3",
    )?;
    let ids = statement
        .query_map(
            params![distinctive.join(" OR "), collection, limit as i64],
            |row| row.get(0),
        )?
        .collect::<Result<Vec<i64>, _>>()?;
    Ok(ids)
}

/// The distinct lowercase words of `text`, at most `max`. Each is used
/// quoted, so no character of the user's text is FTS5 syntax.
pub(super) fn query_terms(text: &str, max: usize) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_lowercase();
        if !terms.contains(&word) {
            terms.push(word);
        }
        if terms.len() == max {
            break;
        }
    }
    terms
}

/// A chunk with its document's source, if it still exists.
fn read_hit(connection: &Connection, chunk: i64) -> Result<Option<RagHit>, StoreError> {
    use rusqlite::OptionalExtension;
    Ok(connection
        .prepare_cached(
            "SELECT c.text, c.document_id, c.start, c.end, d.url, d.title, d.metadata
             FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.id = ?1",
        )?
        .query_row([chunk], |row| {
            Ok(RagHit {
                text: row.get(0)?,
                score: 0.0,
                similarity: 0.0,
                document_id: row.get(1)?,
                start: row.get::<_, i64>(2)?.max(0) as usize,
                end: row.get::<_, i64>(3)?.max(0) as usize,
                url: row.get(4)?,
                title: row.get(5)?,
                metadata: parse_metadata(row.get(6)?),
            })
        })
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_never_becomes_fts_syntax() {
        assert_eq!(
            query_terms("What's NEAR(\"x\") AND -y* Ünïcode? what", MAX_TERMS),
            ["what", "s", "near", "x", "and", "y", "ünïcode"]
        );
        assert!(query_terms("?! ...", MAX_TERMS).is_empty());
        assert_eq!(
            query_terms("日本語 テスト", MAX_TERMS),
            ["日本語", "テスト"]
        );
    }
}
