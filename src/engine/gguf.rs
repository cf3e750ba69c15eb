//! A GGUF file's header, read in pure Rust: what a model is before it is
//! loaded (ModelInfo, EstimateMemory) and whether the file is whole.
//!
//! Only the metadata and the tensor table are read (a few MB at most, streamed
//! through a buffer); the weights are never touched. Every length and count
//! is checked against the bytes left in the file before anything is
//! allocated for it, every sum and product of values from the file is
//! checked, and an unknown type is an error: a corrupt, truncated or crafted
//! file is a clear error here naming the problem, instead of a crash inside
//! llama.cpp, which is handed only files that pass.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use types::{file_type_name, type_block};

/// The longest string value kept (chat templates are tens of KB): beyond it
/// a header is refused rather than a crafted length allocated.
const MAX_STRING: u64 = 16 << 20;

/// The most metadata pairs kept (real files have about fifty).
const MAX_PAIRS: u64 = 1 << 16;

/// llama.cpp's GGML_MAX_DIMS: it refuses tensors with more dimensions.
const MAX_DIMS: u32 = 4;

/// Why a file is not a usable GGUF model.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened or read.
    Io(String),
    /// It does not start with the GGUF magic.
    NotGguf,
    /// A GGUF version this reader does not know.
    Version(u32),
    /// A length or count that cannot be right, or the file ends inside the header.
    Corrupt(String),
    /// The tensor data ends beyond the end of the file.
    Truncated {
        /// Bytes the tensors need.
        needed: u64,
        /// Bytes the file has.
        actual: u64,
    },
}

impl std::fmt::Display for GgufError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GgufError::Io(e) => write!(f, "cannot read the file: {e}"),
            GgufError::NotGguf => f.write_str("not a GGUF file (bad magic)"),
            GgufError::Version(v) => write!(f, "unsupported GGUF version {v}"),
            GgufError::Corrupt(what) => write!(f, "corrupt GGUF header: {what}"),
            GgufError::Truncated { needed, actual } => write!(
                f,
                "truncated GGUF file: the tensors need {needed} bytes, the file has {actual}"
            ),
        }
    }
}

impl std::error::Error for GgufError {}

/// A metadata value this reader keeps (arrays keep only their length, or
/// their largest integer for per-layer counts).
#[derive(Debug, Clone, PartialEq)]
pub enum Meta {
    /// Any integer type (i128 holds every u64 and i64 as it is).
    Int(i128),
    /// f32 or f64.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// An array: its length and, for integer arrays, the largest element.
    Array {
        /// Number of elements.
        len: u64,
        /// Largest element of an integer array.
        max_int: Option<i128>,
    },
}

/// What the header says about a model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufFacts {
    /// `general.architecture`.
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// Training context length.
    pub context_length: Option<u64>,
    /// Width of the hidden state.
    pub embedding_length: Option<u64>,
    /// Layers.
    pub block_count: Option<u64>,
    /// Attention heads (largest over layers).
    pub head_count: Option<u64>,
    /// Key/value heads (largest over layers).
    pub head_count_kv: Option<u64>,
    /// Width of one key head.
    pub key_length: Option<u64>,
    /// Width of one value head.
    pub value_length: Option<u64>,
    /// Vocabulary size.
    pub vocab_size: Option<u64>,
    /// Sum of the tensors' elements.
    pub parameter_count: u64,
    /// `general.file_type` as llama.cpp names it (Q4_K_M, F16...).
    pub quantization: Option<String>,
    /// `tokenizer.chat_template`, when present.
    pub chat_template: Option<String>,
    /// `general.finetune` (e.g. `Instruct`), absent on a base model.
    pub finetune: Option<String>,
    /// Bytes of tensor data.
    pub tensor_bytes: u64,
    /// Bytes of the file.
    pub file_bytes: u64,
}

impl GgufFacts {
    /// Bytes of f16 KV cache per token of context.
    pub fn kv_bytes_per_token(&self) -> u64 {
        let layers = self.block_count.unwrap_or(0);
        let heads = self.head_count.unwrap_or(1).max(1);
        let kv_heads = self.head_count_kv.unwrap_or(heads);
        let head_dim = self.embedding_length.unwrap_or(0) / heads;
        let k = self.key_length.unwrap_or(head_dim);
        let v = self.value_length.unwrap_or(head_dim);
        // Header values can be anything: an absurd model saturates to a
        // size no budget holds (a 507), never a wrapped small one.
        layers
            .saturating_mul(kv_heads)
            .saturating_mul(k.saturating_add(v))
            .saturating_mul(2)
    }

    /// Compute buffers and the output logits for a context: llama.cpp's
    /// graph for one 512-token micro-batch plus a margin, measured to be on
    /// the safe side for small models.
    pub fn overhead_bytes(&self, context: u32) -> u64 {
        let vocab = self.vocab_size.unwrap_or(32_000);
        let embd = self.embedding_length.unwrap_or(4096);
        let ubatch = u64::from(context.min(512));
        // Saturating for the same reason as the KV cache above.
        (32u64 << 20)
            .saturating_add(vocab.saturating_mul(4 * 2))
            .saturating_add(ubatch.saturating_mul(embd).saturating_mul(4 * 8))
            .saturating_add(ubatch * u64::from(context.min(4096)) * 4)
    }
}

/// The chat template to fall back to when a GGUF has none (or one
/// llama.cpp cannot apply), by `general.architecture`.
pub fn fallback_template(architecture: &str) -> &'static str {
    match architecture {
        a if a.starts_with("gemma") => "gemma",
        "phi3" => "phi3",
        "phi4" => "phi4",
        "granite" => "granite",
        "command-r" | "cohere2" => "command-r",
        "exaone" => "exaone3",
        "falcon" => "falcon3",
        "deepseek2" => "deepseek2",
        "chatglm" | "glm4" => "chatglm4",
        "mistral3" => "mistral-v7",
        _ => "chatml",
    }
}

/// Reads the header of the GGUF file at `path`.
pub fn read_facts(path: &Path) -> Result<GgufFacts, GgufError> {
    let file = File::open(path).map_err(|e| GgufError::Io(e.to_string()))?;
    let file_bytes = file
        .metadata()
        .map_err(|e| GgufError::Io(e.to_string()))?
        .len();
    facts_of(BufReader::with_capacity(1 << 16, file), file_bytes)
}

/// Reads the header of a GGUF of `file_bytes` bytes from `source`.
fn facts_of(source: impl Read + Seek, file_bytes: u64) -> Result<GgufFacts, GgufError> {
    let mut reader = Reader {
        inner: source,
        position: 0,
        file_bytes,
    };
    let header = reader.header()?;
    Ok(header.facts(file_bytes))
}

struct Header {
    meta: HashMap<String, Meta>,
    parameter_count: u64,
    tensor_bytes: u64,
}

impl Header {
    fn facts(&self, file_bytes: u64) -> GgufFacts {
        let text = |key: &str| match self.meta.get(key) {
            Some(Meta::Str(s)) => Some(s.clone()),
            _ => None,
        };
        let architecture = text("general.architecture");
        let arch = architecture.clone().unwrap_or_default();
        let int = |key: &str| match self.meta.get(&format!("{arch}.{key}")) {
            Some(Meta::Int(v)) => u64::try_from(*v).ok(),
            Some(Meta::Array { max_int, .. }) => max_int.and_then(|v| u64::try_from(v).ok()),
            _ => None,
        };
        let vocab_size =
            int("vocab_size").or_else(|| match self.meta.get("tokenizer.ggml.tokens") {
                Some(Meta::Array { len, .. }) => Some(*len),
                _ => None,
            });
        let quantization = match self.meta.get("general.file_type") {
            Some(Meta::Int(t)) => Some(file_type_name(*t)),
            _ => None,
        };
        GgufFacts {
            name: text("general.name"),
            context_length: int("context_length"),
            embedding_length: int("embedding_length"),
            block_count: int("block_count"),
            head_count: int("attention.head_count"),
            head_count_kv: int("attention.head_count_kv"),
            key_length: int("attention.key_length"),
            value_length: int("attention.value_length"),
            vocab_size,
            parameter_count: self.parameter_count,
            quantization,
            chat_template: text("tokenizer.chat_template"),
            finetune: text("general.finetune"),
            tensor_bytes: self.tensor_bytes,
            file_bytes,
            architecture,
        }
    }
}

struct Reader<R> {
    inner: R,
    /// Bytes read (or skipped) so far.
    position: u64,
    file_bytes: u64,
}

const MAGIC: &[u8; 4] = b"GGUF";

fn corrupt(what: impl Into<String>) -> GgufError {
    GgufError::Corrupt(what.into())
}

impl<R: Read + Seek> Reader<R> {
    /// Bytes of the file not read yet.
    fn left(&self) -> u64 {
        self.file_bytes.saturating_sub(self.position)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                corrupt("the file ends inside the header")
            } else {
                GgufError::Io(e.to_string())
            }
        })?;
        self.position += N as u64;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    /// A count of items of at least `min_size` bytes each, which must fit in
    /// what is left of the file.
    fn count(&mut self, what: &str, min_size: u64) -> Result<u64, GgufError> {
        let n = self.u64()?;
        let left = self.left();
        if n.checked_mul(min_size.max(1))
            .is_none_or(|bytes| bytes > left)
        {
            return Err(corrupt(format!(
                "{what} {n} (at least {min_size} bytes each) is more than the {left} bytes left in the file"
            )));
        }
        Ok(n)
    }

    /// A string's length, checked against the bytes left (and `limit`).
    fn string_length(&mut self, what: &str, limit: u64) -> Result<u64, GgufError> {
        let len = self.count(&format!("the length of {what}"), 1)?;
        if len > limit {
            return Err(corrupt(format!(
                "{what} is {len} bytes long; at most {limit} are read"
            )));
        }
        Ok(len)
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.string_length(what, MAX_STRING)?;
        // `len` is at most MAX_STRING and within the file: safe to allocate.
        let mut buf = vec![0u8; len as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| corrupt(format!("the file ends inside {what}")))?;
        self.position += len;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Skips `n` bytes that must be in the file.
    fn skip(&mut self, n: u64, what: &str) -> Result<(), GgufError> {
        let left = self.left();
        if n > left {
            return Err(corrupt(format!(
                "{what} needs {n} bytes; {left} are left in the file"
            )));
        }
        // `n` is at most the file's size, and no file holds 2^63 bytes.
        let offset = i64::try_from(n).map_err(|_| corrupt(format!("{what} is too long")))?;
        self.inner
            .seek_relative(offset)
            .map_err(|e| GgufError::Io(e.to_string()))?;
        self.position += n;
        Ok(())
    }

    fn scalar(&mut self, kind: u32) -> Result<Meta, GgufError> {
        Ok(match kind {
            0 => Meta::Int(i128::from(self.bytes::<1>()?[0])),
            1 => Meta::Int(i128::from(i8::from_le_bytes(self.bytes()?))),
            2 => Meta::Int(i128::from(u16::from_le_bytes(self.bytes()?))),
            3 => Meta::Int(i128::from(i16::from_le_bytes(self.bytes()?))),
            4 => Meta::Int(i128::from(self.u32()?)),
            5 => Meta::Int(i128::from(i32::from_le_bytes(self.bytes()?))),
            6 => Meta::Float(f64::from(f32::from_le_bytes(self.bytes()?))),
            7 => Meta::Bool(self.bytes::<1>()?[0] != 0),
            8 => Meta::Str(self.string("a string value")?),
            10 => Meta::Int(i128::from(self.u64()?)),
            11 => Meta::Int(i128::from(i64::from_le_bytes(self.bytes()?))),
            12 => Meta::Float(f64::from_le_bytes(self.bytes()?)),
            other => return Err(corrupt(format!("unknown value type {other}"))),
        })
    }

    fn value(&mut self, key: &str, kind: u32) -> Result<Meta, GgufError> {
        if kind != 9 {
            return self.scalar(kind);
        }
        let element = self.u32()?;
        // Bytes per element; a string is at least its 8-byte length.
        let size = match element {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            9 => return Err(corrupt(format!("{key} is an array of arrays"))),
            other => {
                return Err(corrupt(format!(
                    "{key} is an array of unknown type {other}"
                )));
            }
        };
        let len = self.count(&format!("the length of {key}"), size)?;
        let mut max_int = None;
        match element {
            // Integer arrays are short (per-layer counts): read them.
            0..=5 | 10 | 11 if len <= 4096 => {
                for _ in 0..len {
                    if let Meta::Int(v) = self.scalar(element)? {
                        max_int = Some(max_int.map_or(v, |m: i128| m.max(v)));
                    }
                }
            }
            8 => {
                for _ in 0..len {
                    let n = self.string_length(&format!("a string of {key}"), u64::MAX)?;
                    self.skip(n, &format!("a string of {key}"))?;
                }
            }
            // count() checked len * size fits in the file.
            _ => self.skip(len * size, &format!("the array {key}"))?,
        }
        Ok(Meta::Array { len, max_int })
    }

    fn header(&mut self) -> Result<Header, GgufError> {
        if &self.bytes::<4>()? != MAGIC {
            return Err(GgufError::NotGguf);
        }
        let version = self.u32()?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version(version));
        }
        // A tensor takes at least a name length, dimension count, type and
        // offset (24 bytes); a pair a key length, a type and a byte (13).
        let tensors = self.count("the tensor count", 24)?;
        let pairs = self.count("the metadata count", 13)?;
        if pairs > MAX_PAIRS {
            return Err(corrupt(format!(
                "{pairs} metadata pairs; at most {MAX_PAIRS} are read"
            )));
        }
        let mut meta = HashMap::new();
        for _ in 0..pairs {
            let key = self.string("a metadata key")?;
            let kind = self.u32()?;
            let value = self.value(&key, kind)?;
            meta.insert(key, value);
        }
        let alignment = match meta.get("general.alignment") {
            None => 32,
            Some(Meta::Int(a)) => u64::try_from(*a)
                .ok()
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| corrupt(format!("general.alignment {a} is not a power of two")))?,
            Some(other) => {
                return Err(corrupt(format!(
                    "general.alignment is {other:?}, not an integer"
                )));
            }
        };
        let mut parameter_count = 0u64;
        let mut data_end = 0u64;
        for _ in 0..tensors {
            let name = self.string("a tensor name")?;
            let dims = self.u32()?;
            if dims > MAX_DIMS {
                return Err(corrupt(format!(
                    "tensor {name:?} has {dims} dimensions; llama.cpp allows {MAX_DIMS}"
                )));
            }
            let mut elements = 1u64;
            for _ in 0..dims {
                elements = elements.checked_mul(self.u64()?).ok_or_else(|| {
                    corrupt(format!("tensor {name:?} has more than 2^64 elements"))
                })?;
            }
            let kind = self.u32()?;
            let offset = self.u64()?;
            let (block, block_bytes) = type_block(kind)
                .ok_or_else(|| corrupt(format!("tensor {name:?} has unknown type {kind}")))?;
            let size = elements
                .div_ceil(block)
                .checked_mul(block_bytes)
                .ok_or_else(|| corrupt(format!("tensor {name:?} is more than 2^64 bytes")))?;
            if offset % alignment != 0 {
                return Err(corrupt(format!(
                    "tensor {name:?} starts at {offset}, not a multiple of the alignment {alignment}"
                )));
            }
            let end = offset
                .checked_add(size)
                .ok_or_else(|| corrupt(format!("tensor {name:?} ends beyond 2^64 bytes")))?;
            parameter_count = parameter_count
                .checked_add(elements)
                .ok_or_else(|| corrupt("the tensors hold more than 2^64 elements"))?;
            data_end = data_end.max(end);
        }
        let overflow = || corrupt("the tensor data ends beyond 2^64 bytes");
        let data_start = self
            .position
            .checked_next_multiple_of(alignment)
            .ok_or_else(overflow)?;
        let needed = data_start.checked_add(data_end).ok_or_else(overflow)?;
        if needed > self.file_bytes {
            return Err(GgufError::Truncated {
                needed,
                actual: self.file_bytes,
            });
        }
        Ok(Header {
            meta,
            parameter_count,
            tensor_bytes: data_end,
        })
    }
}

mod types;

#[cfg(test)]
pub(crate) use tests::tiny;

#[cfg(test)]
mod tests;
