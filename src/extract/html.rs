//! HTML to text, as much as retrieval needs: tags dropped, the contents of
//! `script`, `style`, `noscript`, `template` and `head` left out, block
//! elements turned into line breaks, the common entities and numeric
//! character references decoded, runs of blank space folded. A page's
//! reading order is its source order, which is what chunking wants.

/// Elements whose content is not text a reader sees.
const HIDDEN: [&str; 6] = ["script", "style", "noscript", "template", "head", "svg"];
/// Elements that start a new line.
const BLOCKS: [&str; 22] = [
    "p",
    "div",
    "br",
    "li",
    "tr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "section",
    "article",
    "header",
    "footer",
    "blockquote",
    "pre",
    "table",
    "ul",
    "ol",
    "hr",
    "title",
];

/// The visible text of an HTML document.
pub fn to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    let mut hidden: Option<String> = None;
    while let Some(open) = rest.find('<') {
        if hidden.is_none() {
            push_text(&mut out, &rest[..open]);
        }
        rest = &rest[open..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            continue;
        }
        let Some(close) = rest.find('>') else {
            rest = "";
            break;
        };
        let tag = &rest[1..close];
        rest = &rest[close + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        match &hidden {
            Some(inside) if closing && *inside == name => hidden = None,
            Some(_) => {}
            None if !closing && HIDDEN.contains(&name.as_str()) && !tag.ends_with('/') => {
                hidden = Some(name)
            }
            None if BLOCKS.contains(&name.as_str()) => out.push('\n'),
            None if matches!(name.as_str(), "td" | "th") => out.push(' '),
            None => {}
        }
    }
    if hidden.is_none() {
        push_text(&mut out, rest);
    }
    fold(&out)
}

fn push_text(out: &mut String, raw: &str) {
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        match rest[1..].find(';').filter(|end| *end <= 10) {
            Some(end) => match entity(&rest[1..=end]) {
                Some(c) => {
                    out.push(c);
                    rest = &rest[end + 2..];
                }
                None => {
                    out.push('&');
                    rest = &rest[1..];
                }
            },
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
}

fn entity(name: &str) -> Option<char> {
    if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => number.parse().ok()?,
        };
        return char::from_u32(code);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "mdash" => '—',
        "ndash" => '–',
        "hellip" => '…',
        "copy" => '©',
        "rsquo" => '’',
        "lsquo" => '‘',
        "rdquo" => '”',
        "ldquo" => '“',
        _ => return None,
    })
}

/// Spaces and tabs folded to one, at most one blank line in a row, no
/// blank space at either end of a line.
fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_lines = 0;
    for line in text.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            blank_lines += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_lines > 0 { "\n\n" } else { "\n" });
        }
        blank_lines = 0;
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::to_text;

    #[test]
    fn visible_text_only() {
        let html = "<html><head><title>T</title><style>p{}</style></head><body>\
            <h1>Title &amp; more</h1><!-- note --><p>One&nbsp;two   three</p>\
            <script>var x = '<p>';</script><p>caf&#233; &#x263A; &bogus; a & b</p>\
            <table><tr><td>x</td><td>y</td></tr></table></body></html>";
        assert_eq!(
            to_text(html),
            "Title & more\n\nOne two three\n\ncafé ☺ &bogus; a & b\n\nx y"
        );
        assert_eq!(to_text("plain <b>bold</b> <unclosed"), "plain bold");
    }
}
