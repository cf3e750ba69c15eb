//! Embeddings and Rerank on the model lane: resolve the embedding model
//! (named, else selected, else the first on disk), have the model manager load
//! it (or hand back the loaded one), embed.
//!
//! Rerank goes through [`crate::engine::rerank::Scorer`]: embedding similarity
//! today, the seam where a cross-encoder would plug in.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::chat::load_options;
use super::{Handler, Outcome};
use crate::api::{
    EmbeddingList, EmbeddingsRequest, ModelFormat, ModelKind, RerankRequest, RerankResults,
    Response,
};
use crate::engine::Embedder;
#[cfg(feature = "onnx")]
use crate::engine::manager::Engine;
use crate::engine::rerank::Scorer;
use crate::error::ApiError;
use crate::jobs::{Job, Lane};
use crate::models::ModelFile;

/// The most texts one Embeddings request may carry (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// Tells the ONNX Runtime search about the data dir (`<data-dir>/lib`).
pub(super) fn find_runtime_in(data_dir: &Path) {
    #[cfg(feature = "onnx")]
    crate::engine::onnx_runtime::set_data_dir(data_dir);
    let _ = data_dir;
}

/// A loaded embedding model and how to count its tokens.
struct Loaded {
    embedder: Arc<dyn Embedder>,
    #[cfg(feature = "onnx")]
    onnx: Option<Arc<crate::engine::onnx::OnnxModel>>,
}

impl Loaded {
    /// Vectors and the tokens read (0 when the engine does not count).
    fn embed(&self, texts: &[String]) -> Result<(Vec<Vec<f32>>, u64), ApiError> {
        #[cfg(feature = "onnx")]
        if let Some(model) = &self.onnx {
            return model.embed_counted(texts).map(|e| (e.vectors, e.tokens));
        }
        self.embedder.embed(texts).map(|v| (v, 0))
    }
}

/// How vectors are written in a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A JSON array of numbers.
    Float,
    /// Base64 of the little-endian f32 bytes, as OpenAI does.
    Base64,
}

impl Encoding {
    fn parse(format: Option<&str>) -> Result<Encoding, ApiError> {
        match format {
            None | Some("float") => Ok(Encoding::Float),
            Some("base64") => Ok(Encoding::Base64),
            Some(other) => Err(ApiError::invalid(format!(
                "encoding_format {other:?} is not float or base64"
            ))),
        }
    }

    /// One vector as JSON.
    pub fn encode(self, vector: &[f32]) -> serde_json::Value {
        match self {
            Encoding::Float => vector.iter().map(|&v| serde_json::Value::from(v)).collect(),
            Encoding::Base64 => {
                use base64::Engine as _;
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                base64::engine::general_purpose::STANDARD
                    .encode(bytes)
                    .into()
            }
        }
    }
}

impl Handler {
    pub(super) fn embeddings(&self, request: EmbeddingsRequest, now: Instant) -> Outcome {
        let texts = request.input.into_vec();
        let checked = Encoding::parse(request.encoding_format.as_deref()).and_then(|encoding| {
            if texts.is_empty() {
                Err(ApiError::invalid(
                    "input is empty: give a text or a list of texts",
                ))
            } else if texts.len() > MAX_INPUTS {
                Err(ApiError::invalid(format!(
                    "input has {} texts; at most {MAX_INPUTS} per request",
                    texts.len()
                )))
            } else {
                Ok(encoding)
            }
        });
        let encoding = match checked {
            Ok(encoding) => encoding,
            Err(error) => return Outcome::Reply(Response::error(error)),
        };
        let texts = match self.relay_embeddings(request.model.as_deref(), texts, encoding) {
            Ok(relayed) => return relayed,
            Err(texts) => texts,
        };
        self.embedding_job(request.model, ModelKind::Embedding, now, move |model| {
            let (vectors, tokens) = model.embed(&texts)?;
            Ok(Response::EmbeddingList(EmbeddingList {
                model: model.embedder.model_id().to_string(),
                dimensions: model.embedder.dimensions(),
                prompt_tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
                embeddings: vectors.iter().map(|v| encoding.encode(v)).collect(),
            }))
        })
    }

    pub(super) fn rerank(&self, request: RerankRequest, now: Instant) -> Outcome {
        let RerankRequest {
            model,
            query,
            documents,
            top_n,
        } = request;
        if documents.len() > MAX_INPUTS {
            return Outcome::Reply(Response::error(ApiError::invalid(format!(
                "{} documents; at most {MAX_INPUTS} per request",
                documents.len()
            ))));
        }
        if let Some(relayed) = self.relay_rerank(model.as_deref(), &query, &documents, top_n) {
            return relayed;
        }
        self.embedding_job(model, ModelKind::Rerank, now, move |model| {
            let scorer = Scorer::EmbeddingSimilarity(model.embedder);
            let results = scorer.rank(&query, &documents, top_n.map(|n| n as usize))?;
            Ok(Response::RerankResults(RerankResults {
                model: scorer.model_id().to_string(),
                method: scorer.method().to_string(),
                results,
            }))
        })
    }

    /// A model-lane job: resolve the model for `task`, load it through the
    /// manager (or take the loaded one), run `work`.
    fn embedding_job(
        &self,
        requested: Option<String>,
        task: ModelKind,
        now: Instant,
        work: impl FnOnce(Loaded) -> Result<Response, ApiError> + Send + 'static,
    ) -> Outcome {
        if !cfg!(feature = "onnx") {
            let what = if task == ModelKind::Rerank {
                "Rerank"
            } else {
                "Embeddings"
            };
            return Outcome::Reply(Response::error(ApiError::not_implemented(format!(
                "{what} needs the ONNX Runtime engine (feature `onnx`), which is not enabled in \
                 this build"
            ))));
        }
        let models = Arc::clone(&self.models);
        let options = load_options(&self.params.get());
        Outcome::Job(Job::new(Lane::Model, move |_| {
            let file = models.resolve(task, requested.as_deref())?;
            check_embedding_model(&file)?;
            let resident = models.acquire(&file, options, false, now)?;
            let loaded = Loaded {
                embedder: resident.embedder()?,
                #[cfg(feature = "onnx")]
                onnx: match &resident.engine {
                    Engine::Onnx(model) => Some(Arc::clone(model)),
                    _ => None,
                },
            };
            work(loaded)
        }))
    }
}

/// Refuses, before anything is loaded, a model that cannot embed.
pub fn check_embedding_model(file: &ModelFile) -> Result<(), ApiError> {
    match (file.format, file.kind) {
        (ModelFormat::Onnx, ModelKind::Embedding) => Ok(()),
        (ModelFormat::Onnx, _) => Err(ApiError::not_implemented(format!(
            "{} is a cross-encoder; this build scores rerank by embedding similarity only: \
             name an embedding model",
            file.id
        ))),
        (ModelFormat::Upstream, _) => Err(ApiError::invalid(format!(
            "{} is served by an upstream: its embeddings are relayed there",
            file.id
        ))),
        (ModelFormat::Gguf, _) => Err(ApiError::invalid(format!(
            "{} is a GGUF chat model; embeddings and rerank need an ONNX embedding model such as \
             all-minilm-l6-v2",
            file.id
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        let encoded = Encoding::Base64.encode(&[1.0, -2.5]);
        assert_eq!(encoded, "AACAPwAAIMA=");
        assert_eq!(Encoding::Float.encode(&[0.5]), serde_json::json!([0.5]));
        assert!(Encoding::parse(Some("int8")).is_err());
    }

    #[test]
    fn only_onnx_embedding_models_embed() {
        let file = |format, kind| ModelFile {
            id: "m".into(),
            format,
            kind,
            path: "m".into(),
            size_bytes: 1,
        };
        assert!(check_embedding_model(&file(ModelFormat::Onnx, ModelKind::Embedding)).is_ok());
        let chat = check_embedding_model(&file(ModelFormat::Gguf, ModelKind::Chat)).unwrap_err();
        assert_eq!(chat.status, 422);
        let cross = check_embedding_model(&file(ModelFormat::Onnx, ModelKind::Rerank)).unwrap_err();
        assert_eq!(cross.status, 501);
    }
}
