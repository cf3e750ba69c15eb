//! The in-memory copy of each collection's vectors and brute-force search.
//!
//! A [`VectorIndex`] holds one collection's vectors in one contiguous `Vec<f32>`
//! (row `i` is chunk `ids[i]`), sorted by chunk id, so a scan streams memory
//! in order and a chunk's row is a binary search away. Search computes every
//! dot product (vectors are L2-normalised, so that is the cosine) in parallel
//! blocks on the current rayon pool and keeps the best per block.
//!
//! [`VectorCache`] keeps one index per collection, loaded on the first query.
//! Each index remembers the collection's `version` it reflects; a query
//! compares it with the database's and reloads when they differ (another
//! process wrote, or a change was not applied here). The writer applies its
//! own changes to a cached index right after they commit, so in one process
//! reloads only happen on first use.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use rayon::prelude::*;

use crate::jobs::lock;

/// Rows scanned per parallel task.
const BLOCK_ROWS: usize = 4096;

/// One collection's vectors.
#[derive(Debug, Clone, Default)]
pub struct VectorIndex {
    /// The collection version these rows reflect.
    pub version: i64,
    dimensions: usize,
    ids: Vec<i64>,
    documents: Vec<i64>,
    data: Vec<f32>,
}

impl VectorIndex {
    /// An empty index of `dimensions`-long vectors at `version`.
    pub fn new(dimensions: usize, version: i64) -> VectorIndex {
        VectorIndex {
            version,
            dimensions,
            ..VectorIndex::default()
        }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it holds no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The vector length.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Appends a row; chunk ids must arrive in increasing order.
    pub fn push(&mut self, chunk_id: i64, document_id: i64, vector: &[f32]) {
        debug_assert_eq!(vector.len(), self.dimensions);
        debug_assert!(self.ids.last().is_none_or(|&last| last < chunk_id));
        self.ids.push(chunk_id);
        self.documents.push(document_id);
        self.data.extend_from_slice(vector);
    }

    /// Drops every row of `document_id`.
    pub fn remove_document(&mut self, document_id: i64) {
        let dims = self.dimensions;
        let mut keep = 0;
        for row in 0..self.ids.len() {
            if self.documents[row] != document_id {
                if keep != row {
                    self.ids[keep] = self.ids[row];
                    self.documents[keep] = self.documents[row];
                    self.data
                        .copy_within(row * dims..(row + 1) * dims, keep * dims);
                }
                keep += 1;
            }
        }
        self.ids.truncate(keep);
        self.documents.truncate(keep);
        self.data.truncate(keep * dims);
    }

    /// The cosine of `query` with chunk `chunk_id`, if it is here.
    pub fn similarity(&self, chunk_id: i64, query: &[f32]) -> Option<f32> {
        let row = self.ids.binary_search(&chunk_id).ok()?;
        Some(dot(self.row(row), query))
    }

    fn row(&self, row: usize) -> &[f32] {
        &self.data[row * self.dimensions..(row + 1) * self.dimensions]
    }

    /// The `n` chunks most similar to `query`, best first, as (chunk id, cosine).
    pub fn search(&self, query: &[f32], n: usize) -> Vec<(i64, f32)> {
        if n == 0 || self.is_empty() || query.len() != self.dimensions {
            return Vec::new();
        }
        let dims = self.dimensions;
        let mut best: Vec<(usize, f32)> = self
            .data
            .par_chunks(BLOCK_ROWS * dims)
            .enumerate()
            .map(|(block, rows)| {
                let mut top = TopN::new(n);
                for (i, row) in rows.chunks_exact(dims).enumerate() {
                    top.offer(block * BLOCK_ROWS + i, dot(row, query));
                }
                top.items
            })
            .reduce(Vec::new, |mut a, b| {
                a.extend(b);
                if a.len() > n {
                    a.select_nth_unstable_by(n - 1, by_score);
                    a.truncate(n);
                }
                a
            });
        best.sort_unstable_by(by_score);
        best.into_iter()
            .map(|(row, score)| (self.ids[row], score))
            .collect()
    }
}

fn by_score(a: &(usize, f32), b: &(usize, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The best `n` (row, score) pairs offered so far, unordered.
struct TopN {
    n: usize,
    items: Vec<(usize, f32)>,
    /// The lowest kept score once full.
    floor: f32,
}

impl TopN {
    fn new(n: usize) -> TopN {
        TopN {
            n,
            items: Vec::with_capacity(n * 2),
            floor: f32::NEG_INFINITY,
        }
    }

    fn offer(&mut self, row: usize, score: f32) {
        if self.items.len() >= self.n && score <= self.floor {
            return;
        }
        self.items.push((row, score));
        // Trim in bulk: amortised O(1) per offer.
        if self.items.len() >= self.n * 2 {
            self.items.select_nth_unstable_by(self.n - 1, by_score);
            self.items.truncate(self.n);
            self.floor = self.items.iter().map(|i| i.1).fold(f32::INFINITY, f32::min);
        }
    }
}

/// The dot product, with eight independent sums so the compiler can keep
/// them in vector registers (a single running sum cannot be reordered).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a_chunks, a_rest) = a.as_chunks::<8>();
    let (b_chunks, b_rest) = b.as_chunks::<8>();
    let mut sums = [0f32; 8];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for i in 0..8 {
            sums[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    sums.iter().sum::<f32>() + tail
}

/// Scales `vector` to unit length (a zero vector stays zero).
pub fn normalise(vector: &mut [f32]) {
    let norm = dot(vector, vector).sqrt();
    if norm > 0.0 && norm.is_finite() {
        vector.iter_mut().for_each(|v| *v /= norm);
    }
}

/// Vectors as stored: little-endian f32 bytes.
pub fn to_blob(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Appends the floats of a stored blob to `out`; false when its length is wrong.
pub fn extend_from_blob(blob: &[u8], dimensions: usize, out: &mut Vec<f32>) -> bool {
    if blob.len() != dimensions * 4 {
        return false;
    }
    out.extend(
        blob.as_chunks::<4>()
            .0
            .iter()
            .map(|b| f32::from_le_bytes(*b)),
    );
    true
}

/// A change the writer made to a collection, applied to its cached index
/// once committed.
pub(crate) enum Change {
    /// Rows added and/or a document's rows removed.
    Edit {
        collection: i64,
        from_version: i64,
        to_version: i64,
        removed_document: Option<i64>,
        /// (chunk id, document id, vector), in chunk id order.
        added: Vec<(i64, i64, Vec<f32>)>,
    },
    /// The collection is gone.
    Dropped { collection: i64 },
}

/// The cached indexes, by collection id.
#[derive(Default)]
pub struct VectorCache {
    indexes: Mutex<HashMap<i64, Arc<RwLock<VectorIndex>>>>,
    /// Held while a collection loads, so two queries do not load it twice.
    loading: Mutex<()>,
}

impl VectorCache {
    /// The cached index of `collection` if it is at `version` or newer (a
    /// query may run on a newer copy: the rows it names are read afterwards
    /// in the query's own snapshot, and rows missing there are skipped).
    pub(crate) fn get(&self, collection: i64, version: i64) -> Option<Arc<RwLock<VectorIndex>>> {
        let index = lock(&self.indexes).get(&collection).cloned()?;
        let current = index.read().unwrap_or_else(|p| p.into_inner()).version;
        (current >= version).then_some(index)
    }

    /// The index at `version`, loading it with `load` (at most one load at a time).
    pub(crate) fn get_or_load<E>(
        &self,
        collection: i64,
        version: i64,
        load: impl FnOnce() -> Result<VectorIndex, E>,
    ) -> Result<Arc<RwLock<VectorIndex>>, E> {
        if let Some(index) = self.get(collection, version) {
            return Ok(index);
        }
        let _loading = lock(&self.loading);
        if let Some(index) = self.get(collection, version) {
            return Ok(index);
        }
        // Free the stale copy before loading the new one.
        lock(&self.indexes).remove(&collection);
        let index = Arc::new(RwLock::new(load()?));
        let mut indexes = lock(&self.indexes);
        let newer = indexes
            .get(&collection)
            .is_some_and(|i| i.read().unwrap_or_else(|p| p.into_inner()).version > version);
        if !newer {
            indexes.insert(collection, Arc::clone(&index));
        }
        Ok(index)
    }

    /// Applies a committed change; an index not at the change's starting
    /// version is dropped (the next query reloads it).
    pub(crate) fn apply(&self, change: Change) {
        let mut indexes = lock(&self.indexes);
        match change {
            Change::Dropped { collection } => {
                indexes.remove(&collection);
            }
            Change::Edit {
                collection,
                from_version,
                to_version,
                removed_document,
                added,
            } => {
                let Some(index) = indexes.get(&collection) else {
                    return;
                };
                let mut index = index.write().unwrap_or_else(|p| p.into_inner());
                if index.version != from_version {
                    drop(index);
                    indexes.remove(&collection);
                    return;
                }
                if let Some(document) = removed_document {
                    index.remove_document(document);
                }
                for (chunk, document, vector) in &added {
                    index.push(*chunk, *document, vector);
                }
                index.version = to_version;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dims: usize) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v: Vec<f32> = (0..dims)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        normalise(&mut v);
        v
    }

    #[test]
    fn search_matches_a_sorted_scan() {
        let dims = 37; // not a multiple of 8: the tail path runs too
        let mut index = VectorIndex::new(dims, 1);
        for i in 0..10_000 {
            index.push(i, i / 10, &unit(i as u64, dims));
        }
        let query = unit(999_999, dims);
        let mut expected: Vec<(i64, f32)> = (0..10_000)
            .map(|i| (i, dot(&unit(i as u64, dims), &query)))
            .collect();
        expected.sort_by(|a, b| b.1.total_cmp(&a.1));
        let got = index.search(&query, 25);
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            expected[..25].iter().map(|e| e.0).collect::<Vec<_>>()
        );
        assert!((got[0].1 - expected[0].1).abs() < 1e-5);
        assert_eq!(index.search(&query, 0), []);
    }

    #[test]
    fn removing_a_document_keeps_the_rest_in_order() {
        let mut index = VectorIndex::new(2, 0);
        for (chunk, doc) in [(1, 7), (2, 8), (3, 7), (4, 9)] {
            index.push(chunk, doc, &[chunk as f32, 0.0]);
        }
        index.remove_document(7);
        assert_eq!(index.ids, [2, 4]);
        assert_eq!(index.data, [2.0, 0.0, 4.0, 0.0]);
        assert_eq!(index.similarity(4, &[1.0, 0.0]), Some(4.0));
        assert_eq!(index.similarity(1, &[1.0, 0.0]), None);
    }

    #[test]
    fn blobs_round_trip() {
        let v = [1.5f32, -0.25, 3.0];
        let mut out = Vec::new();
        assert!(extend_from_blob(&to_blob(&v), 3, &mut out));
        assert_eq!(out, v);
        assert!(!extend_from_blob(&[0, 1, 2], 3, &mut out));
    }
}
