//! ONNX sentence-embedding models: tokenizers for the text, ONNX Runtime (ort)
//! for the graph, pooling and normalisation in Rust.
//!
//! The loader API the model manager builds on (keep it stable):
//!
//! ```text
//! OnnxModel::load(dir: &Path) -> Result<OnnxModel, ApiError>
//! OnnxModel::embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ApiError>
//! OnnxModel::embed_counted(&self, texts) -> Result<Embedded, ApiError>  // + token count
//! OnnxModel::dimensions(&self) -> usize
//! OnnxModel::memory_bytes(&self) -> u64
//! impl crate::engine::Embedder for OnnxModel
//! ```
//!
//! `dir` is a model folder as `crate::models` finds it: `model.onnx` (or
//! `onnx/model.onnx`), `tokenizer.json`, and an optional `tabagent.json`
//! declaring `kind`, `pooling` (`mean`, `cls` or `max`), `normalize` and
//! `max_length`. A model is `Send + Sync`; calls to `embed` on one model run
//! one at a time (they share the session and its scratch buffers).
//!
//! Speed comes from the batch shape: texts are sorted by token count and cut
//! into batches of at most [`BATCH_SIZE`], each padded only to its own
//! longest text, where padding would cost more than another pass (the
//! shipped MiniLM tokenizer pads everything to 128; that is switched off),
//! and the input buffers are reused from batch to batch.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

use super::Embedder;
use super::onnx_runtime;
use crate::api::ModelKind;
use crate::error::ApiError;
use crate::jobs::lock;

mod pooling;
pub use pooling::{batches, l2_normalize, pool};

/// Texts per forward pass.
pub const BATCH_SIZE: usize = 32;

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The mean of the non-padding token vectors (sentence-transformers' default).
    #[default]
    Mean,
    /// The first token's vector (`[CLS]`).
    Cls,
    /// The element-wise maximum over the non-padding tokens.
    Max,
}

/// What `tabagent.json` beside the graph may declare.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OnnxConfig {
    /// Embedding or rerank (a cross-encoder, which this engine does not run).
    pub kind: ModelKind,
    /// How token vectors are pooled.
    pub pooling: Pooling,
    /// Whether vectors are L2-normalised.
    pub normalize: bool,
    /// Tokens kept per text; longer texts are truncated.
    pub max_length: usize,
}

impl Default for OnnxConfig {
    fn default() -> OnnxConfig {
        OnnxConfig {
            kind: ModelKind::Embedding,
            pooling: Pooling::Mean,
            normalize: true,
            max_length: 512,
        }
    }
}

/// Vectors and what reading the texts cost.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// One vector per text, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens read (after truncation), special tokens included.
    pub tokens: u64,
}

/// A loaded embedding model.
pub struct OnnxModel {
    id: String,
    config: OnnxConfig,
    tokenizer: Tokenizer,
    runner: Mutex<Runner>,
    dimensions: usize,
    memory_bytes: u64,
    pad_id: i64,
}

/// The session and the buffers every batch reuses.
struct Runner {
    session: Session,
    /// Which of `input_ids`, `attention_mask`, `token_type_ids` the graph takes,
    /// in its own order.
    inputs: Vec<Input>,
    /// The output read: `last_hidden_state` (token vectors, pooled here) or a
    /// pooled `[batch, dims]` output.
    output: String,
    ids: Vec<i64>,
    mask: Vec<i64>,
    types: Vec<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Input {
    Ids,
    Mask,
    Types,
}

impl OnnxModel {
    /// Loads the model in `dir`; its id is the folder's name.
    pub fn load(dir: &Path) -> Result<OnnxModel, ApiError> {
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let graph = crate::models::onnx_graph(dir).ok_or_else(|| {
            ApiError::not_found(format!(
                "{} holds no model.onnx (or onnx/model.onnx)",
                dir.display()
            ))
        })?;
        let config = read_config(dir)?;
        if config.kind != ModelKind::Embedding {
            return Err(ApiError::not_implemented(format!(
                "{id} is declared a cross-encoder ({:?}); this build runs ONNX embedding models only \
                 (rerank uses embedding similarity)",
                config.kind
            )));
        }
        let (tokenizer, pad_id) = load_tokenizer(&dir.join("tokenizer.json"), config.max_length)?;
        let environment = onnx_runtime::environment()?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let invalid = |e: &dyn std::fmt::Display| {
            ApiError::invalid(format!(
                "{} cannot be loaded by ONNX Runtime (corrupt or not an ONNX graph?): {e}",
                graph.display()
            ))
        };
        let session = Session::builder(&environment)
            .map_err(|e| ApiError::internal(format!("ONNX Runtime: {e}")))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| ApiError::internal(format!("ONNX Runtime: {e}")))?
            .with_intra_threads(threads)
            .map_err(|e| ApiError::internal(format!("ONNX Runtime: {e}")))?
            .commit_from_file(&graph)
            .map_err(|e| invalid(&e))?;
        let inputs = session
            .inputs()
            .iter()
            .map(|input| match input.name() {
                "input_ids" => Ok(Input::Ids),
                "attention_mask" => Ok(Input::Mask),
                "token_type_ids" => Ok(Input::Types),
                other => Err(ApiError::invalid(format!(
                    "{} takes an input {other:?}; embedding models take input_ids, \
                     attention_mask and token_type_ids",
                    graph.display()
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !inputs.contains(&Input::Ids) {
            return Err(ApiError::invalid(format!(
                "{} has no input_ids input",
                graph.display()
            )));
        }
        let output = pick_output(session.outputs().iter().map(|o| o.name()))
            .ok_or_else(|| ApiError::invalid(format!("{} has no outputs", graph.display())))?;
        let mut model = OnnxModel {
            id,
            memory_bytes: estimate_memory(&graph, &dir.join("tokenizer.json")),
            config,
            tokenizer,
            runner: Mutex::new(Runner {
                session,
                inputs,
                output,
                ids: Vec::new(),
                mask: Vec::new(),
                types: Vec::new(),
            }),
            dimensions: 0,
            pad_id,
        };
        // One real pass: proves the graph runs (a damaged graph may load and
        // still fail here) and tells the vector length.
        let probe = model
            .embed_counted(&["tabagent".to_string()])
            .map_err(|e| invalid(&e.detail))?;
        model.dimensions = probe.vectors.first().map_or(0, Vec::len);
        if model.dimensions == 0 {
            return Err(invalid(&"it produced empty vectors"));
        }
        log::info!(
            "loaded ONNX model {} ({} dims, {:?} pooling, max {} tokens)",
            model.id,
            model.dimensions,
            model.config.pooling,
            model.config.max_length
        );
        Ok(model)
    }

    /// The model's id (its folder name).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The vector length.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Estimated bytes the loaded model holds.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    /// What `tabagent.json` said (or the defaults).
    pub fn config(&self) -> &OnnxConfig {
        &self.config
    }

    /// One vector per text, in input order.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ApiError> {
        self.embed_counted(texts).map(|e| e.vectors)
    }

    /// One vector per text, in input order, with the tokens read.
    pub fn embed_counted(&self, texts: &[String]) -> Result<Embedded, ApiError> {
        let encodings = self
            .tokenizer
            .encode_batch_fast(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
            .map_err(|e| ApiError::invalid(format!("cannot tokenize the input: {e}")))?;
        let tokens = encodings.iter().map(|e| e.len() as u64).sum();
        let mut vectors = vec![Vec::new(); texts.len()];
        let mut runner = lock(&self.runner);
        for batch in batches(
            &encodings.iter().map(|e| e.len()).collect::<Vec<_>>(),
            BATCH_SIZE,
        ) {
            let seq = batch
                .iter()
                .map(|&i| encodings[i].len())
                .max()
                .unwrap_or(0)
                .max(1);
            runner.fill(&batch, seq, self.pad_id, |i| {
                let e = &encodings[i];
                (e.get_ids(), e.get_attention_mask(), e.get_type_ids())
            });
            let pooled = runner.run(batch.len(), seq, self.config.pooling)?;
            for (&i, mut vector) in batch.iter().zip(pooled) {
                if self.config.normalize {
                    l2_normalize(&mut vector);
                }
                vectors[i] = vector;
            }
        }
        Ok(Embedded { vectors, tokens })
    }
}

impl Embedder for OnnxModel {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ApiError> {
        OnnxModel::embed(self, texts)
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn model_id(&self) -> &str {
        &self.id
    }
}

impl Runner {
    /// Writes one padded batch into the reused buffers.
    fn fill<'e>(
        &mut self,
        batch: &[usize],
        seq: usize,
        pad_id: i64,
        encoding: impl Fn(usize) -> (&'e [u32], &'e [u32], &'e [u32]),
    ) {
        let size = batch.len() * seq;
        for buffer in [&mut self.ids, &mut self.mask, &mut self.types] {
            buffer.clear();
            buffer.reserve(size);
        }
        for &i in batch {
            let (ids, mask, types) = encoding(i);
            let pad = seq - ids.len();
            self.ids.extend(ids.iter().map(|&t| i64::from(t)));
            self.ids.extend(std::iter::repeat_n(pad_id, pad));
            self.mask.extend(mask.iter().map(|&t| i64::from(t)));
            self.mask.extend(std::iter::repeat_n(0, pad));
            self.types.extend(types.iter().map(|&t| i64::from(t)));
            self.types.extend(std::iter::repeat_n(0, pad));
        }
    }

    /// Runs the graph on the filled batch; one pooled vector per row.
    fn run(
        &mut self,
        rows: usize,
        seq: usize,
        pooling: Pooling,
    ) -> Result<Vec<Vec<f32>>, ApiError> {
        let failed = |e: ort::Error| ApiError::internal(format!("ONNX Runtime failed: {e}"));
        let shape = [rows, seq];
        let mut values = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            let data = match input {
                Input::Ids => &self.ids,
                Input::Mask => &self.mask,
                Input::Types => &self.types,
            };
            let name = match input {
                Input::Ids => "input_ids",
                Input::Mask => "attention_mask",
                Input::Types => "token_type_ids",
            };
            values.push((
                name,
                TensorRef::from_array_view((shape, data.as_slice())).map_err(failed)?,
            ));
        }
        let outputs = self.session.run(values).map_err(failed)?;
        let value = outputs.get(&self.output).ok_or_else(|| {
            ApiError::internal(format!("the graph gave no {} output", self.output))
        })?;
        let (out_shape, data) = value.try_extract_tensor::<f32>().map_err(failed)?;
        match **out_shape {
            [b, s, h] if b as usize == rows && s as usize == seq => {
                Ok(pool(data, &self.mask, rows, seq, h as usize, pooling))
            }
            [b, h] if b as usize == rows => {
                Ok(data.chunks(h as usize).map(<[f32]>::to_vec).collect())
            }
            ref other => Err(ApiError::internal(format!(
                "the graph's output {} has shape {other:?}, expected [{rows}, {seq}, dims] or [{rows}, dims]",
                self.output
            ))),
        }
    }
}

fn read_config(dir: &Path) -> Result<OnnxConfig, ApiError> {
    let path = dir.join("tabagent.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::invalid(format!("{} is not valid: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(OnnxConfig::default()),
        Err(e) => Err(ApiError::internal(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// The tokenizer with its own padding switched off (we pad per batch) and
/// truncation at the model's `max_length`; also the pad token's id.
fn load_tokenizer(path: &PathBuf, max_length: usize) -> Result<(Tokenizer, i64), ApiError> {
    let mut tokenizer = Tokenizer::from_file(path).map_err(|e| {
        ApiError::invalid(format!(
            "{} cannot be read as a tokenizer: {e}",
            path.display()
        ))
    })?;
    let pad_id = tokenizer.get_padding().map_or(0, |p| i64::from(p.pad_id));
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_length.max(2),
            ..TruncationParams::default()
        }))
        .map_err(|e| ApiError::invalid(format!("{}: {e}", path.display())))?;
    Ok((tokenizer, pad_id))
}

/// `last_hidden_state` when the graph has it, else a pooled output, else the first.
fn pick_output<'a>(names: impl Iterator<Item = &'a str>) -> Option<String> {
    let names: Vec<&str> = names.collect();
    [
        "last_hidden_state",
        "token_embeddings",
        "sentence_embedding",
    ]
    .iter()
    .find(|want| names.contains(want))
    .copied()
    .or(names.first().copied())
    .map(String::from)
}

/// Weights plus what ONNX Runtime adds (pre-packed weights, arenas): measured
/// on MiniLM int8 as about twice the file, plus the tokenizer's tables.
fn estimate_memory(graph: &Path, tokenizer: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    size(graph) * 2 + size(tokenizer) * 3 + (16 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_declared_values() {
        let config: OnnxConfig = serde_json::from_str(
            r#"{"kind":"embedding","pooling":"cls","max_length":256,"dimensions":384}"#,
        )
        .unwrap();
        assert_eq!(
            (config.pooling, config.max_length, config.normalize),
            (Pooling::Cls, 256, true)
        );
        assert!(serde_json::from_str::<OnnxConfig>(r#"{"pooling":"median"}"#).is_err());
    }

    #[test]
    fn outputs_prefer_token_vectors() {
        assert_eq!(
            pick_output(["a", "last_hidden_state"].into_iter()).unwrap(),
            "last_hidden_state"
        );
        assert_eq!(pick_output(["x"].into_iter()).unwrap(), "x");
        assert_eq!(pick_output([].into_iter()), None);
    }
}
