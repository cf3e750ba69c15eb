//! The GGUF reader on whole, broken and crafted headers, and property tests:
//! arbitrary bytes and mutated valid headers never panic, never allocate
//! what a length claims, and never pass as a file larger than they are.

use std::io::Cursor;

use proptest::prelude::*;

use super::*;

/// A GGUF under construction, little-endian as the format is.
#[derive(Default)]
struct Gguf(Vec<u8>);

impl Gguf {
    fn start(tensors: u64, pairs: u64) -> Gguf {
        Gguf::default().raw(b"GGUF").u32(3).u64(tensors).u64(pairs)
    }
    fn raw(mut self, bytes: &[u8]) -> Gguf {
        self.0.extend_from_slice(bytes);
        self
    }
    fn u32(self, v: u32) -> Gguf {
        self.raw(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> Gguf {
        self.raw(&v.to_le_bytes())
    }
    fn string(self, s: &str) -> Gguf {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    /// A tensor record: name, dimensions, type, offset.
    fn tensor(self, name: &str, dims: &[u64], kind: u32, offset: u64) -> Gguf {
        let mut out = self.string(name).u32(dims.len() as u32);
        for d in dims {
            out = out.u64(*d);
        }
        out.u32(kind).u64(offset)
    }
    /// Pads to 32 bytes and appends `data` bytes of tensor data.
    fn data(mut self, data: usize) -> Vec<u8> {
        while !self.0.len().is_multiple_of(32) {
            self.0.push(0);
        }
        self.0.resize(self.0.len() + data, 0);
        self.0
    }
}

/// A minimal GGUF for tests: one metadata string, one F32 tensor of 8
/// elements, less `truncate` bytes at the end.
pub(crate) fn tiny(truncate: usize) -> Vec<u8> {
    let mut out = Gguf::start(1, 2)
        .string("general.architecture")
        .u32(8)
        .string("llama")
        .string("llama.block_count")
        .u32(4)
        .u32(2)
        .tensor("w", &[8], 0, 0)
        .data(32);
    out.truncate(out.len() - truncate);
    out
}

fn parse(bytes: &[u8]) -> Result<GgufFacts, GgufError> {
    facts_of(Cursor::new(bytes), bytes.len() as u64)
}

/// The problem a crafted file is refused for.
fn corrupt(bytes: &[u8]) -> String {
    match parse(bytes) {
        Err(GgufError::Corrupt(what)) => what,
        other => panic!("expected a corrupt header, got {other:?}"),
    }
}

fn read(bytes: &[u8], name: &str) -> Result<GgufFacts, GgufError> {
    let path = std::env::temp_dir().join(format!("tabagent-gguf-{name}-{}", std::process::id()));
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

#[test]
fn lengths_are_bounded_by_the_bytes_left_before_allocating() {
    // A key claiming 1 GiB in a file of a few dozen bytes: refused, not allocated.
    let key = Gguf::start(0, 1).u64(1 << 30).data(64);
    let what = corrupt(&key);
    assert!(
        what.contains("1073741824") && what.contains("left"),
        "{what}"
    );
    // A string value within the file but over the kept maximum.
    let long = Gguf::start(0, 1)
        .string("k")
        .u32(8)
        .u64(MAX_STRING + 1)
        .data(MAX_STRING as usize + 1);
    assert!(corrupt(&long).contains("at most"));
    // An array of u64::MAX u64s: the length times the size wraps in u64.
    let array = Gguf::start(0, 1)
        .string("k")
        .u32(9)
        .u32(10)
        .u64(u64::MAX)
        .data(0);
    assert!(corrupt(&array).contains("length of k"));
    // A string array whose strings run past the end of the file.
    let strings = Gguf::start(0, 1)
        .string("tokenizer.ggml.tokens")
        .u32(9)
        .u32(8)
        .u64(1)
        .u64(4096)
        .data(0);
    assert!(corrupt(&strings).contains("string of tokenizer.ggml.tokens"));
    assert!(corrupt(&Gguf::start(u64::MAX / 2, 0).data(0)).contains("tensor count"));
}

#[test]
fn crafted_tensor_tables_are_errors_naming_the_problem() {
    let with = |dims: &[u64], kind: u32, offset: u64| {
        Gguf::start(1, 0).tensor("t", dims, kind, offset).data(64)
    };
    assert!(corrupt(&with(&[8], 200, 0)).contains("unknown type 200"));
    assert!(corrupt(&with(&[u64::MAX, 3], 0, 0)).contains("2^64 elements"));
    // Elements fit, bytes do not: 2^62 F32 values are 2^64 bytes.
    assert!(corrupt(&with(&[1 << 62], 0, 0)).contains("more than 2^64 bytes"));
    assert!(corrupt(&with(&[8], 0, u64::MAX - 31)).contains("beyond 2^64"));
    assert!(corrupt(&with(&[8], 0, 3)).contains("alignment"));
    assert!(corrupt(&with(&[1, 1, 1, 1, 1], 0, 0)).contains("5 dimensions"));
    let aligned = |alignment: u64| {
        Gguf::start(0, 1)
            .string("general.alignment")
            .u32(10)
            .u64(alignment)
            .data(0)
    };
    assert!(corrupt(&aligned(0)).contains("power of two"));
    assert!(corrupt(&aligned(48)).contains("power of two"));
    assert!(matches!(
        parse(&aligned(1 << 63)),
        Err(GgufError::Truncated { .. })
    ));
}

#[test]
fn values_beyond_i64_are_kept_as_they_are() {
    let bytes = Gguf::start(0, 2)
        .string("general.architecture")
        .u32(8)
        .string("llama")
        .string("llama.context_length")
        .u32(10)
        .u64(u64::MAX)
        .data(0);
    let facts = parse(&bytes).unwrap();
    assert_eq!(facts.context_length, Some(u64::MAX));
    // An absurd model saturates its estimate instead of wrapping to a small one.
    let absurd = GgufFacts {
        block_count: Some(u64::MAX),
        embedding_length: Some(u64::MAX),
        vocab_size: Some(u64::MAX),
        ..GgufFacts::default()
    };
    assert_eq!(absurd.kv_bytes_per_token(), u64::MAX);
    assert_eq!(absurd.overhead_bytes(u32::MAX), u64::MAX);
}

/// Any offset into `tiny(0)`.
fn field_offset() -> impl Strategy<Value = usize> {
    0..tiny(0).len()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes);
        // The same behind a valid magic and version, to get past the first check.
        let mut gguf = b"GGUF\x03\0\0\0".to_vec();
        gguf.extend_from_slice(&bytes);
        if let Ok(facts) = parse(&gguf) {
            prop_assert!(facts.tensor_bytes <= facts.file_bytes);
        }
    }

    #[test]
    fn mutated_headers_never_panic_nor_claim_more_than_the_file(
        flips in proptest::collection::vec((field_offset(), any::<u8>()), 1..8),
        words in proptest::collection::vec((field_offset(), any::<u64>()), 0..3),
    ) {
        let mut bytes = tiny(0);
        for (at, byte) in flips {
            bytes[at] = byte;
        }
        // Whole u64s reach the lengths and counts a byte flip rarely makes huge.
        for (at, word) in words {
            let end = (at + 8).min(bytes.len());
            bytes[at..end].copy_from_slice(&word.to_le_bytes()[..end - at]);
        }
        if let Ok(facts) = parse(&bytes) {
            prop_assert!(facts.tensor_bytes <= facts.file_bytes);
        }
    }

    #[test]
    fn every_cut_of_a_valid_file_is_an_error(cut in 1..tiny(0).len()) {
        prop_assert!(parse(&tiny(cut)).is_err());
    }
}
