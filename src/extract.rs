//! Text out of an uploaded file, for the knowledge base: PDF (through
//! pdf-extract, page by page, feature `pdf`), HTML (tags dropped, script and
//! style left out, entities decoded), Markdown and plain text (as they are).
//! The kind comes from the media type the client gave, else from the file
//! name's extension; anything else is a 415.
//!
//! A PDF's pages are joined with a blank line, and the byte offset where each
//! page starts is kept, so a passage found later can name its page.

mod html;

use crate::error::ApiError;

/// What a file is, as far as extraction goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `application/pdf`, `.pdf`.
    Pdf,
    /// `text/html`, `.html`, `.htm`.
    Html,
    /// `text/markdown`, `.md`, `.markdown`.
    Markdown,
    /// `text/plain`, `.txt` (and `.text`, `.csv`, `.log`).
    Text,
}

impl Kind {
    /// The kind named by `content_type` (parameters ignored), else by the
    /// extension of `filename`.
    pub fn detect(filename: &str, content_type: Option<&str>) -> Result<Kind, ApiError> {
        let media = content_type
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|c| !c.is_empty() && c != "application/octet-stream");
        if let Some(media) = media {
            return match media.as_str() {
                "application/pdf" => Ok(Kind::Pdf),
                "text/html" | "application/xhtml+xml" => Ok(Kind::Html),
                "text/markdown" | "text/x-markdown" => Ok(Kind::Markdown),
                "text/plain" | "text/csv" => Ok(Kind::Text),
                other => Err(unsupported(&format!("media type {other:?}"))),
            };
        }
        let extension = filename
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        match extension.as_str() {
            "pdf" => Ok(Kind::Pdf),
            "html" | "htm" | "xhtml" => Ok(Kind::Html),
            "md" | "markdown" => Ok(Kind::Markdown),
            "txt" | "text" | "csv" | "log" => Ok(Kind::Text),
            _ => Err(unsupported(&format!("file {filename:?}"))),
        }
    }

    /// Its media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Kind::Pdf => "application/pdf",
            Kind::Html => "text/html",
            Kind::Markdown => "text/markdown",
            Kind::Text => "text/plain",
        }
    }
}

fn unsupported(what: &str) -> ApiError {
    ApiError::new(
        415,
        "unsupported-media-type",
        "Unsupported media type",
        format!("{what}: the knowledge base reads PDF, Markdown, plain text and HTML"),
    )
}

/// A file's text.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    /// The text.
    pub text: String,
    /// For a PDF, the byte offset in `text` where each page starts.
    pub page_starts: Vec<usize>,
}

/// The text of `bytes`, a file of `kind`.
pub fn extract(kind: Kind, bytes: &[u8]) -> Result<Extracted, ApiError> {
    let plain = |text: String| Extracted {
        text,
        page_starts: Vec::new(),
    };
    match kind {
        Kind::Pdf => pdf(bytes),
        Kind::Html => Ok(plain(html::to_text(&utf8(bytes)?))),
        Kind::Markdown | Kind::Text => Ok(plain(utf8(bytes)?.into_owned())),
    }
}

fn utf8(bytes: &[u8]) -> Result<std::borrow::Cow<'_, str>, ApiError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes)
        .map(std::borrow::Cow::Borrowed)
        .map_err(|e| {
            ApiError::invalid(format!(
                "the file is not UTF-8 text (byte {} is not)",
                e.valid_up_to()
            ))
        })
}

#[cfg(feature = "pdf")]
fn pdf(bytes: &[u8]) -> Result<Extracted, ApiError> {
    // pdf-extract panics on some malformed files; the job around this
    // catches it, but a clear message beats "the request failed".
    let pages = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem_by_pages(bytes))
        .map_err(|_| ApiError::invalid("the PDF could not be read (it is malformed)"))?
        .map_err(|e| ApiError::invalid(format!("the PDF could not be read: {e}")))?;
    let mut text = String::new();
    let mut page_starts = Vec::with_capacity(pages.len());
    for page in pages {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        page_starts.push(text.len());
        text.push_str(page.trim());
    }
    if text.trim().is_empty() {
        return Err(ApiError::invalid(
            "the PDF has no text to read (a scan needs OCR, which tabagent does not do)",
        ));
    }
    Ok(Extracted { text, page_starts })
}

#[cfg(not(feature = "pdf"))]
fn pdf(_: &[u8]) -> Result<Extracted, ApiError> {
    Err(ApiError::not_implemented(
        "PDF text extraction (feature `pdf`) is not enabled in this build",
    ))
}

/// The 1-based page of byte `offset`, given where pages start.
pub fn page_of(page_starts: &[usize], offset: usize) -> Option<u32> {
    if page_starts.is_empty() {
        return None;
    }
    let page = page_starts.partition_point(|start| *start <= offset);
    u32::try_from(page.max(1)).ok()
}

/// A minimal valid PDF with one line of Helvetica text per page (for tests
/// here and in `tests/`, which build their fixture the same way).
#[doc(hidden)]
pub fn minimal_pdf(pages: &[&str]) -> Vec<u8> {
    let n = pages.len();
    // objects: 1 catalog, 2 pages, 3 font, then per page: page, contents
    let mut objects: Vec<String> = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".into(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {n} >>",
            (0..n)
                .map(|i| format!("{} 0 R", 4 + 2 * i))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".into(),
    ];
    for (i, text) in pages.iter().enumerate() {
        let escaped = text
            .replace('\\', "\\\\")
            .replace('(', "\\(")
            .replace(')', "\\)");
        let stream = format!("BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET");
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
            5 + 2 * i
        ));
        objects.push(format!(
            "<< /Length {} >>\nstream\n{stream}\nendstream",
            stream.len()
        ));
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_media_type_then_the_extension() {
        assert_eq!(Kind::detect("a.PDF", None).unwrap(), Kind::Pdf);
        assert_eq!(
            Kind::detect("a.bin", Some("text/markdown; charset=utf-8")).unwrap(),
            Kind::Markdown
        );
        assert_eq!(
            Kind::detect("notes.md", Some("application/octet-stream")).unwrap(),
            Kind::Markdown
        );
        assert_eq!(Kind::detect("a.exe", None).unwrap_err().status, 415);
        assert_eq!(
            Kind::detect("a.txt", Some("image/png")).unwrap_err().status,
            415
        );
    }

    #[test]
    fn text_must_be_utf8_and_pages_are_found() {
        assert_eq!(extract(Kind::Text, b"\xEF\xBB\xBFhi").unwrap().text, "hi");
        assert_eq!(extract(Kind::Text, b"a\xff").unwrap_err().status, 422);
        assert_eq!(page_of(&[], 5), None);
        assert_eq!(page_of(&[0, 10, 20], 0), Some(1));
        assert_eq!(page_of(&[0, 10, 20], 15), Some(2));
        assert_eq!(page_of(&[0, 10, 20], 99), Some(3));
    }

    #[cfg(feature = "pdf")]
    #[test]
    fn a_pdf_gives_its_text_page_by_page_and_garbage_is_refused() {
        let pdf = minimal_pdf(&["The first page.", "Zebras graze at noon."]);
        let out = extract(Kind::Pdf, &pdf).unwrap();
        assert!(out.text.contains("first page"), "{:?}", out.text);
        assert_eq!(out.page_starts.len(), 2);
        let second = out.text.find("Zebras").unwrap();
        assert_eq!(page_of(&out.page_starts, second), Some(2));
        assert_eq!(
            extract(Kind::Pdf, b"%PDF-1.4 nonsense").unwrap_err().status,
            422
        );
    }
}
