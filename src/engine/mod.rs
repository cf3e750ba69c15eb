//! Inference backends: GGUF chat through llama.cpp, ONNX embeddings through
//! ONNX Runtime. A backend left out of the build answers "not enabled in this
//! build".

#[cfg(feature = "onnx")]
pub mod onnx;
#[cfg(feature = "onnx")]
pub mod onnx_runtime;
pub mod rerank;

pub mod gguf;
pub mod limits;
#[cfg(feature = "llama")]
pub mod llama;
pub mod loader;
pub mod manager;
pub mod structured;
#[cfg(feature = "templates")]
pub mod template;
pub mod text;

use crate::error::ApiError;

/// Turns texts into L2-normalised vectors with one embedding model. The store
/// uses it to index and query documents; the handler hands it the selected
/// embedding model.
pub trait Embedder: Send + Sync {
    /// One vector per text, in order, each of [`Embedder::dimensions`] floats.
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ApiError>;
    /// The vector length.
    fn dimensions(&self) -> usize;
    /// The model's id.
    fn model_id(&self) -> &str;
}
