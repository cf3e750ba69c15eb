//! Cutting a document into overlapping chunks along sentence boundaries.
//!
//! Sizes are in bytes of UTF-8, a fair stand-in for tokens across scripts:
//! English runs about 4 bytes a token, CJK 3 bytes a character and about a
//! token each, so the default 800-byte chunk stays near 200–270 tokens, under
//! the 256 word pieces MiniLM-class models read. A chunk is a run of whole
//! sentences; the next chunk starts with the last sentences of the previous
//! one (up to the overlap), so an answer that straddles a cut is still found
//! whole in one chunk. A sentence longer than a chunk is cut at whitespace,
//! or at a character boundary when it has none (CJK). Chunks are byte ranges
//! of the original text, so their offsets point into what the client sent.

use std::ops::Range;

/// Chunk sizes, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkConfig {
    /// The most bytes in one chunk.
    pub max_bytes: usize,
    /// The most bytes of trailing sentences repeated at the start of the next chunk.
    pub overlap_bytes: usize,
}

impl Default for ChunkConfig {
    fn default() -> ChunkConfig {
        ChunkConfig {
            max_bytes: 800,
            overlap_bytes: 160,
        }
    }
}

/// The chunks of `text` as byte ranges, in order; none for blank text.
pub fn chunk_text(text: &str, config: &ChunkConfig) -> Vec<Range<usize>> {
    let max = config.max_bytes.max(16);
    let pieces: Vec<Range<usize>> = sentences(text)
        .into_iter()
        .flat_map(|s| split_long(text, s, max))
        .collect();
    let mut chunks = Vec::new();
    let mut first = 0;
    while first < pieces.len() {
        // Take whole pieces while the chunk fits.
        let mut last = first;
        while last + 1 < pieces.len() && pieces[last + 1].end - pieces[first].start <= max {
            last += 1;
        }
        chunks.push(pieces[first].start..pieces[last].end);
        if last + 1 >= pieces.len() {
            break;
        }
        // Start the next chunk with the trailing pieces that fit in the
        // overlap, but always move forward.
        let mut next = last + 1;
        while next - 1 > first && pieces[last].end - pieces[next - 1].start <= config.overlap_bytes
        {
            next -= 1;
        }
        first = next;
    }
    chunks
}

/// Sentence ranges, trimmed of surrounding whitespace, never empty.
fn sentences(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end = i + c.len_utf8();
        let next = chars.peek().map(|&(_, n)| n);
        let boundary = match c {
            '\n' => true,
            // CJK full stops need no space after them.
            '。' | '！' | '？' | '；' => true,
            '.' | '!' | '?' | '…' => next.is_none_or(char::is_whitespace),
            _ => false,
        };
        if boundary {
            push_trimmed(text, start..end, &mut out);
            start = end;
        }
    }
    push_trimmed(text, start..text.len(), &mut out);
    out
}

fn push_trimmed(text: &str, range: Range<usize>, out: &mut Vec<Range<usize>>) {
    let piece = &text[range.clone()];
    let leading = piece.len() - piece.trim_start().len();
    let trailing = piece.len() - piece.trim_end().len();
    if leading < piece.len() {
        out.push(range.start + leading..range.end - trailing);
    }
}

/// A sentence cut into pieces of at most `max` bytes, at whitespace when it can.
fn split_long(text: &str, sentence: Range<usize>, max: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = sentence.start;
    while sentence.end - start > max {
        let window = &text[start..floor_char_boundary(text, start + max)];
        let cut = match window.rfind(char::is_whitespace) {
            Some(at) if at > 0 => start + at,
            _ => start + window.len().max(next_char_len(text, start)),
        };
        push_trimmed(text, start..cut, &mut out);
        start = cut;
        while start < sentence.end && text[start..].starts_with(char::is_whitespace) {
            start += next_char_len(text, start);
        }
    }
    if start < sentence.end {
        push_trimmed(text, start..sentence.end, &mut out);
    }
    out
}

/// The largest char boundary at or below `index`.
fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn next_char_len(text: &str, at: usize) -> usize {
    text[at..].chars().next().map_or(1, char::len_utf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(text: &'a str, config: &ChunkConfig) -> Vec<&'a str> {
        chunk_text(text, config)
            .into_iter()
            .map(|r| &text[r])
            .collect()
    }

    #[test]
    fn chunks_are_whole_sentences_with_overlap() {
        let text = "One is here. Two is here! Three is here? Four is here. Five.";
        let config = ChunkConfig {
            max_bytes: 30,
            overlap_bytes: 14,
        };
        let chunks = texts(text, &config);
        assert_eq!(
            chunks,
            [
                "One is here. Two is here!",
                "Two is here! Three is here?",
                "Three is here? Four is here.",
                "Four is here. Five."
            ]
        );
    }

    #[test]
    fn no_overlap_and_blank_text() {
        let config = ChunkConfig {
            max_bytes: 20,
            overlap_bytes: 0,
        };
        assert_eq!(texts("A b. C d. E f.", &config), ["A b. C d. E f."]);
        assert!(chunk_text("  \n\t ", &config).is_empty());
        assert_eq!(texts("3.14 is pi", &config), ["3.14 is pi"]);
    }

    #[test]
    fn long_sentences_split_at_spaces_or_chars() {
        let config = ChunkConfig {
            max_bytes: 16,
            overlap_bytes: 0,
        };
        let text = "aaaa bbbb cccc dddd eeee ffff";
        for chunk in texts(text, &config) {
            assert!(chunk.len() <= 16 && !chunk.starts_with(' '), "{chunk:?}");
        }
        // CJK without spaces: cut on char boundaries, every byte covered once.
        let cjk = "日本語の文章には空白がありません".repeat(3);
        let chunks = chunk_text(&cjk, &config);
        assert!(chunks.iter().all(|r| r.len() <= 16 && !r.is_empty()));
        let joined: String = chunks.iter().map(|r| &cjk[r.clone()]).collect();
        assert_eq!(joined, cjk);
    }

    #[test]
    fn cjk_and_emoji_sentences() {
        let text = "今日は晴れです。明日は雨です！🙂 Done.";
        let config = ChunkConfig {
            max_bytes: 24,
            overlap_bytes: 0,
        };
        assert_eq!(
            texts(text, &config),
            ["今日は晴れです。", "明日は雨です！", "🙂 Done."]
        );
    }

    #[test]
    fn every_byte_of_a_big_text_is_covered_and_chunks_move_forward() {
        let sentence = "The quick brown fox jumps over the lazy dog. ";
        let text = sentence.repeat(5000);
        let config = ChunkConfig::default();
        let chunks = chunk_text(&text, &config);
        assert!(
            chunks
                .windows(2)
                .all(|w| w[0].start < w[1].start && w[1].start <= w[0].end)
        );
        assert_eq!(chunks[0].start, 0);
        assert_eq!(chunks.last().unwrap().end, text.trim_end().len());
        assert!(chunks.iter().all(|r| r.len() <= config.max_bytes));
    }
}
