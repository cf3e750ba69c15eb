//! Rerank: scoring documents against a query.
//!
//! [`Scorer`] is the seam. Today it has one method, embedding similarity: the
//! query and the documents are embedded with an embedding model and each
//! document scores the cosine of its vector with the query's. A cross-encoder
//! (one forward pass per query-document pair, a relevance logit out) would be
//! a second variant here, next to a loader in `onnx.rs`; none ships because no
//! cross-encoder model could be tested here.

use std::sync::Arc;

use super::Embedder;
use crate::api::RerankHit;
use crate::error::ApiError;

/// How relevance is scored.
#[derive(Clone)]
pub enum Scorer {
    /// Cosine similarity of embedding vectors.
    EmbeddingSimilarity(Arc<dyn Embedder>),
}

impl Scorer {
    /// The method's name as replies report it.
    pub fn method(&self) -> &'static str {
        match self {
            Scorer::EmbeddingSimilarity(_) => "embedding_similarity",
        }
    }

    /// The model's id.
    pub fn model_id(&self) -> &str {
        match self {
            Scorer::EmbeddingSimilarity(embedder) => embedder.model_id(),
        }
    }

    /// One score per document, in document order; higher is more relevant.
    pub fn score(&self, query: &str, documents: &[String]) -> Result<Vec<f32>, ApiError> {
        match self {
            Scorer::EmbeddingSimilarity(embedder) => {
                let mut texts = Vec::with_capacity(documents.len() + 1);
                texts.push(query.to_string());
                texts.extend_from_slice(documents);
                let vectors = embedder.embed(&texts)?;
                let (query, documents) = vectors
                    .split_first()
                    .ok_or_else(|| ApiError::internal("the embedder returned no vectors"))?;
                Ok(documents.iter().map(|d| cosine(query, d)).collect())
            }
        }
    }

    /// The documents best first, cut to `top_n`.
    pub fn rank(
        &self,
        query: &str,
        documents: &[String],
        top_n: Option<usize>,
    ) -> Result<Vec<RerankHit>, ApiError> {
        let scores = self.score(query, documents)?;
        Ok(rank(&scores, top_n))
    }
}

/// Hits from scores: best first (ties keep document order), at most `top_n`.
pub fn rank(scores: &[f32], top_n: Option<usize>) -> Vec<RerankHit> {
    let mut hits: Vec<RerankHit> = scores
        .iter()
        .enumerate()
        .map(|(index, &relevance_score)| RerankHit {
            index,
            relevance_score,
        })
        .collect();
    hits.sort_by(|a, b| b.relevance_score.total_cmp(&a.relevance_score));
    hits.truncate(top_n.unwrap_or(usize::MAX));
    hits
}

/// Cosine similarity (0 when either vector is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norms =
        a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norms > 0.0 { dot / norms } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Embeds a text as (count of 'a', count of 'b').
    struct Letters;

    impl Embedder for Letters {
        fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ApiError> {
            Ok(texts
                .iter()
                .map(|t| vec![t.matches('a').count() as f32, t.matches('b').count() as f32])
                .collect())
        }
        fn dimensions(&self) -> usize {
            2
        }
        fn model_id(&self) -> &str {
            "letters"
        }
    }

    #[test]
    fn documents_rank_by_similarity_to_the_query() {
        let scorer = Scorer::EmbeddingSimilarity(Arc::new(Letters));
        let documents: Vec<String> = ["bbb", "aab", "aaa", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let hits = scorer.rank("aa", &documents, Some(3)).unwrap();
        let order: Vec<usize> = hits.iter().map(|h| h.index).collect();
        assert_eq!(order, [2, 1, 0]);
        assert!((hits[0].relevance_score - 1.0).abs() < 1e-6);
        assert_eq!(scorer.method(), "embedding_similarity");
        assert_eq!(scorer.model_id(), "letters");
    }

    #[test]
    fn ranking_is_stable_and_cut() {
        let hits = rank(&[0.5, 0.9, 0.5], None);
        assert_eq!(hits.iter().map(|h| h.index).collect::<Vec<_>>(), [1, 0, 2]);
        assert!(rank(&[0.1], Some(0)).is_empty());
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
