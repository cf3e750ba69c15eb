//! The [`Loader`] of this build: llama.cpp for GGUF, ONNX Runtime for ONNX.
//! A backend left out of the build answers "not enabled in this build".

use super::gguf::GgufFacts;
use super::manager::{Engine, LoadOptions, Loader, Progress, gguf_facts};
use crate::api::ModelFormat;
use crate::error::ApiError;
use crate::models::ModelFile;

/// Loads models with the backends compiled in.
pub struct EngineLoader;

impl Loader for EngineLoader {
    fn load(
        &self,
        file: &ModelFile,
        options: &LoadOptions,
        progress: Progress,
    ) -> Result<Engine, ApiError> {
        match file.format {
            ModelFormat::Gguf => {
                // Only whole, well-formed files reach llama.cpp.
                let facts = gguf_facts(file)?;
                load_gguf(file, &facts, options, progress)
            }
            ModelFormat::Onnx => load_onnx(file),
            ModelFormat::Upstream => Err(crate::upstream::not_local(&file.id)),
        }
    }
}

#[cfg(feature = "llama")]
fn load_gguf(
    file: &ModelFile,
    facts: &GgufFacts,
    options: &LoadOptions,
    progress: Progress,
) -> Result<Engine, ApiError> {
    let model = super::llama::LlamaTextModel::load(
        &file.path,
        facts.architecture.as_deref().unwrap_or(""),
        super::llama::LlamaOptions {
            context_size: options.context_size,
            threads: options.threads,
            batch_size: options
                .batch_size
                .unwrap_or_else(|| super::limits::default_batch(options.context_size)),
            gpu_layers: options.gpu_layers,
            parallel: options.parallel.max(1),
            context_shift: options.context_shift,
        },
        progress,
    )?;
    Ok(Engine::Text(std::sync::Arc::new(model)))
}

#[cfg(not(feature = "llama"))]
fn load_gguf(
    file: &ModelFile,
    _: &GgufFacts,
    _: &LoadOptions,
    _: Progress,
) -> Result<Engine, ApiError> {
    Err(ApiError::not_implemented(format!(
        "{}: GGUF chat is not enabled in this build (built without the llama feature)",
        file.id
    )))
}

#[cfg(feature = "onnx")]
fn load_onnx(file: &ModelFile) -> Result<Engine, ApiError> {
    Ok(Engine::Onnx(std::sync::Arc::new(
        super::onnx::OnnxModel::load(&file.path)?,
    )))
}

#[cfg(not(feature = "onnx"))]
fn load_onnx(file: &ModelFile) -> Result<Engine, ApiError> {
    Err(ApiError::not_implemented(format!(
        "{}: ONNX models are not enabled in this build (built without the onnx feature)",
        file.id
    )))
}
