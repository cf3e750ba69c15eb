//! A GGUF file's header, read in pure Rust: what a model is before it is
//! loaded (ModelInfo, EstimateMemory) and whether the file is whole.
//!
//! Only the metadata and the tensor table are read (a few MB at most, streamed
//! through a buffer); the weights are never touched. Every length is checked
//! against the file size, so a corrupt or truncated file is a clear error here
//! instead of a crash inside llama.cpp, which is handed only files that pass.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

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
    /// Any integer type.
    Int(i64),
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
        max_int: Option<i64>,
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
        layers * kv_heads * (k + v) * 2
    }

    /// Compute buffers and the output logits for a context: llama.cpp's
    /// graph for one 512-token micro-batch plus a margin, measured to be on
    /// the safe side for small models.
    pub fn overhead_bytes(&self, context: u32) -> u64 {
        let vocab = self.vocab_size.unwrap_or(32_000);
        let embd = self.embedding_length.unwrap_or(4096);
        let ubatch = u64::from(context.min(512));
        (32 << 20)
            + vocab * 4 * 2
            + ubatch * embd * 4 * 8
            + ubatch * u64::from(context.min(4096)) * 4
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
    let mut reader = Reader {
        inner: BufReader::with_capacity(1 << 16, file),
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
            tensor_bytes: self.tensor_bytes,
            file_bytes,
            architecture,
        }
    }
}

struct Reader {
    inner: BufReader<File>,
    file_bytes: u64,
}

const MAGIC: &[u8; 4] = b"GGUF";

impl Reader {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                GgufError::Corrupt("the file ends inside the header".into())
            } else {
                GgufError::Io(e.to_string())
            }
        })?;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    /// A count that must fit in what is left of the file at `min_size` bytes each.
    fn count(&mut self, what: &str, min_size: u64) -> Result<u64, GgufError> {
        let n = self.u64()?;
        if n.saturating_mul(min_size.max(1)) > self.file_bytes {
            return Err(GgufError::Corrupt(format!(
                "{what} {n} is larger than the file"
            )));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.count("a string length", 1)?;
        let mut buf = vec![0u8; len as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| GgufError::Corrupt("the file ends inside a string".into()))?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    fn skip(&mut self, n: u64) -> Result<(), GgufError> {
        let n = i64::try_from(n).map_err(|_| GgufError::Corrupt("a huge array".into()))?;
        self.inner
            .seek_relative(n)
            .map_err(|e| GgufError::Io(e.to_string()))
    }

    fn scalar(&mut self, kind: u32) -> Result<Meta, GgufError> {
        Ok(match kind {
            0 => Meta::Int(i64::from(self.bytes::<1>()?[0])),
            1 => Meta::Int(i64::from(self.bytes::<1>()?[0] as i8)),
            2 => Meta::Int(i64::from(u16::from_le_bytes(self.bytes()?))),
            3 => Meta::Int(i64::from(i16::from_le_bytes(self.bytes()?))),
            4 => Meta::Int(i64::from(self.u32()?)),
            5 => Meta::Int(i64::from(i32::from_le_bytes(self.bytes()?))),
            6 => Meta::Float(f64::from(f32::from_le_bytes(self.bytes()?))),
            7 => Meta::Bool(self.bytes::<1>()?[0] != 0),
            8 => Meta::Str(self.string()?),
            10 => Meta::Int(self.u64()? as i64),
            11 => Meta::Int(i64::from_le_bytes(self.bytes()?)),
            12 => Meta::Float(f64::from_le_bytes(self.bytes()?)),
            other => return Err(GgufError::Corrupt(format!("unknown value type {other}"))),
        })
    }

    fn value(&mut self, kind: u32) -> Result<Meta, GgufError> {
        if kind != 9 {
            return self.scalar(kind);
        }
        let element = self.u32()?;
        let fixed = match element {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        let len = self.count("an array length", fixed.unwrap_or(8))?;
        let mut max_int = None;
        match (element, fixed) {
            // Integer arrays are short (per-layer counts): read them.
            (0..=5 | 10 | 11, Some(_)) if len <= 4096 => {
                for _ in 0..len {
                    if let Meta::Int(v) = self.scalar(element)? {
                        max_int = Some(max_int.map_or(v, |m: i64| m.max(v)));
                    }
                }
            }
            (_, Some(size)) => self.skip(len * size)?,
            (8, None) => {
                for _ in 0..len {
                    let n = self.count("a string length", 1)?;
                    self.skip(n)?;
                }
            }
            _ => return Err(GgufError::Corrupt(format!("unknown array type {element}"))),
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
        let tensors = self.count("the tensor count", 24)?;
        let pairs = self.count("the metadata count", 12)?;
        let mut meta = HashMap::new();
        for _ in 0..pairs {
            let key = self.string()?;
            let kind = self.u32()?;
            let value = self.value(kind)?;
            meta.insert(key, value);
        }
        let mut parameter_count = 0u64;
        let mut data_end = 0u64;
        for _ in 0..tensors {
            let _name = self.string()?;
            let dims = self.u32()?;
            if dims > 8 {
                return Err(GgufError::Corrupt(format!(
                    "a tensor with {dims} dimensions"
                )));
            }
            let mut elements = 1u64;
            for _ in 0..dims {
                elements = elements.saturating_mul(self.u64()?);
            }
            let kind = self.u32()?;
            let offset = self.u64()?;
            parameter_count = parameter_count.saturating_add(elements);
            let size = tensor_bytes(kind, elements).unwrap_or(0);
            data_end = data_end.max(offset.saturating_add(size));
        }
        let alignment = match meta.get("general.alignment") {
            Some(Meta::Int(a)) if *a > 0 => *a as u64,
            _ => 32,
        };
        let position = self
            .inner
            .stream_position()
            .map_err(|e| GgufError::Io(e.to_string()))?;
        let data_start = position.div_ceil(alignment) * alignment;
        let needed = data_start.saturating_add(data_end);
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

/// Bytes of `elements` values of ggml type `kind`, when the type is known.
fn tensor_bytes(kind: u32, elements: u64) -> Option<u64> {
    let (block, size) = match kind {
        0 => (1, 4),
        1 | 30 => (1, 2),
        2 | 20 => (32, 18),
        3 => (32, 20),
        6 => (32, 22),
        7 => (32, 24),
        8 => (32, 34),
        9 => (32, 36),
        10 => (256, 84),
        11 | 21 => (256, 110),
        12 => (256, 144),
        13 => (256, 176),
        14 => (256, 210),
        15 => (256, 292),
        16 => (256, 66),
        17 => (256, 74),
        18 => (256, 98),
        19 => (256, 50),
        22 => (256, 82),
        23 => (256, 136),
        24 => (1, 1),
        25 => (1, 2),
        26 => (1, 4),
        27 | 28 => (1, 8),
        29 => (256, 56),
        34 => (256, 54),
        35 => (256, 66),
        39 => (32, 17),
        _ => return None,
    };
    Some(elements.div_ceil(block) * size)
}

/// llama.cpp's name of a `general.file_type`.
fn file_type_name(file_type: i64) -> String {
    let name = match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        other => return format!("file type {other}"),
    };
    name.to_string()
}

/// A minimal GGUF for tests: one metadata string, one F32 tensor of 8
/// elements, less `truncate` bytes at the end.
#[cfg(test)]
pub(crate) fn tiny(truncate: usize) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&1u64.to_le_bytes()); // tensors
    out.extend_from_slice(&2u64.to_le_bytes()); // metadata
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    string(&mut out, "general.architecture");
    out.extend_from_slice(&8u32.to_le_bytes());
    string(&mut out, "llama");
    string(&mut out, "llama.block_count");
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(&2u32.to_le_bytes());
    string(&mut out, "w");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&8u64.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // F32
    out.extend_from_slice(&0u64.to_le_bytes());
    while out.len() % 32 != 0 {
        out.push(0);
    }
    out.extend_from_slice(&[0u8; 32]);
    out.truncate(out.len() - truncate);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], name: &str) -> Result<GgufFacts, GgufError> {
        let path =
            std::env::temp_dir().join(format!("tabagent-gguf-{name}-{}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let facts = read_facts(&path);
        std::fs::remove_file(path).unwrap();
        facts
    }

    #[test]
    fn reads_a_whole_file_and_rejects_broken_ones() {
        let facts = read(&tiny(0), "whole").unwrap();
        assert_eq!(facts.architecture.as_deref(), Some("llama"));
        assert_eq!(facts.block_count, Some(2));
        assert_eq!((facts.parameter_count, facts.tensor_bytes), (8, 32));
        assert!(matches!(
            read(&tiny(1), "cut"),
            Err(GgufError::Truncated { .. })
        ));
        assert!(matches!(
            read(&tiny(0)[..40], "head"),
            Err(GgufError::Corrupt(_))
        ));
        assert_eq!(read(b"not a model at all", "junk"), Err(GgufError::NotGguf));
        let mut huge = tiny(0);
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(read(&huge, "huge"), Err(GgufError::Corrupt(_))));
    }
}
