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

/// What one forward pass costs beyond its tokens, in tokens: measured on
/// MiniLM int8 with 2 threads, a pass takes about 1.5 ms plus 0.135 ms per
/// (padded) token (11 tokens' worth), more on a busy machine, where waking
/// ONNX Runtime's threads costs more; the total is flat around the best.
const PASS_COST_TOKENS: usize = 14;

/// Indices of `lengths` sorted by length, cut into batches of at most `size`
/// that each pad only to their own longest text. The cuts are the cheapest
/// under "a pass costs [`PASS_COST_TOKENS`] plus its padded tokens": with
/// one request's 32 texts of mixed lengths, one pass pads too much and one
/// pass per length runs too many passes; the greedy padding limit used
/// before cost ~10% more by this measure on the bench's requests.
pub fn batches(lengths: &[usize], size: usize) -> Vec<Vec<usize>> {
    let size = size.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    // best[j]: cheapest cost of the first j sorted texts; start[j]: where the
    // last batch of that solution starts. Sorted ascending, a batch of
    // sorted[i..j] pads to sorted[j - 1], so the best cuts are contiguous.
    let n = order.len();
    let mut best = vec![0usize; n + 1];
    let mut start = vec![0usize; n + 1];
    for j in 1..=n {
        let width = lengths[order[j - 1]].max(1);
        (best[j], start[j]) = (j.saturating_sub(size)..j)
            .map(|i| (best[i] + PASS_COST_TOKENS + (j - i) * width, i))
            .min()
            // j >= 1, so the range j - size..j is never empty.
            .expect("at least one cut");
    }
    let mut out = Vec::new();
    let mut j = n;
    while j > 0 {
        out.push(order[start[j]..j].to_vec());
        j = start[j];
    }
    out.reverse();
    out
}

/// Pools `[rows, seq, dims]` token vectors (row-major) under `mask` (`[rows, seq]`).
pub fn pool(
    data: &[f32],
    mask: &[i64],
    rows: usize,
    seq: usize,
    dims: usize,
    pooling: Pooling,
) -> Vec<Vec<f32>> {
    (0..rows)
        .map(|r| {
            let tokens = |t: usize| &data[(r * seq + t) * dims..(r * seq + t + 1) * dims];
            let kept = (0..seq).filter(|&t| mask[r * seq + t] != 0);
            match pooling {
                Pooling::Cls => tokens(0).to_vec(),
                Pooling::Mean => {
                    let mut sum = vec![0f32; dims];
                    let mut count = 0usize;
                    for t in kept {
                        for (s, v) in sum.iter_mut().zip(tokens(t)) {
                            *s += v;
                        }
                        count += 1;
                    }
                    let scale = 1.0 / count.max(1) as f32;
                    sum.iter_mut().for_each(|s| *s *= scale);
                    sum
                }
                Pooling::Max => {
                    let mut best = vec![f32::NEG_INFINITY; dims];
                    for t in kept {
                        for (b, v) in best.iter_mut().zip(tokens(t)) {
                            *b = b.max(*v);
                        }
                    }
                    best.iter_mut()
                        .filter(|b| b.is_infinite())
                        .for_each(|b| *b = 0.0);
                    best
                }
            }
        })
        .collect()
}

/// Scales `vector` to length 1 (a zero vector stays zero).
pub fn l2_normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|v| *v /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_group_similar_lengths() {
        let lengths = [5, 1, 9, 2, 8, 3];
        assert_eq!(batches(&lengths, 2), [vec![1, 3], vec![5, 0], vec![4, 2]]);
        assert_eq!(batches(&[], 32), Vec::<Vec<usize>>::new());
        // Short and long texts never share a pass; three long ones of 100
        // run apart from 105 and 110: 5 tokens of padding each would cost
        // more than another pass.
        let lengths = [10, 100, 12, 110, 11, 105, 9, 100, 10, 100];
        assert_eq!(
            batches(&lengths, 32),
            [vec![6, 0, 8, 4, 2], vec![1, 7, 9], vec![5, 3]]
        );
        // Equal lengths fill whole batches.
        let cut = batches(&[7; 70], 32);
        assert_eq!(cut.iter().map(Vec::len).collect::<Vec<_>>(), [6, 32, 32]);
    }

    #[test]
    fn pooling_ignores_padding() {
        // 2 rows, seq 3, dims 2; the second row has one padding token.
        let data = [
            1., 2., 3., 4., 5., 6., /**/ 1., 1., 3., -1., 100., 100.,
        ];
        let mask = [1, 1, 1, 1, 1, 0];
        assert_eq!(
            pool(&data, &mask, 2, 3, 2, Pooling::Mean),
            [vec![3., 4.], vec![2., 0.]]
        );
        assert_eq!(
            pool(&data, &mask, 2, 3, 2, Pooling::Max),
            [vec![5., 6.], vec![3., 1.]]
        );
        assert_eq!(
            pool(&data, &mask, 2, 3, 2, Pooling::Cls),
            [vec![1., 2.], vec![1., 1.]]
        );
    }

    #[test]
    fn normalising_gives_unit_length() {
        let mut v = [3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut zero = [0.0, 0.0];
        l2_normalize(&mut zero);
        assert_eq!(zero, [0.0, 0.0]);
    }

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
