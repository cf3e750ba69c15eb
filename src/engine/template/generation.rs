//! transformers' `{% generation %}...{% endgeneration %}` blocks, which
//! minijinja has no tag for. transformers' AssistantTracker extension marks
//! the assistant's tokens inside them for training masks and otherwise
//! renders the body as it is; rewritten to `{% if true %}...{% endif %}`
//! (whitespace-control marks kept) they render the same.

/// The source with every generation tag rewritten; other text untouched.
pub(super) fn rewrite(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        match generation_tag(tag) {
            Some((len, replacement)) => {
                out.push_str(&replacement);
                rest = &tag[len..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// If `tag` (starting at `{%`) is `{%[-+] generation|endgeneration [-+]%}`,
/// its length and its replacement.
fn generation_tag(tag: &str) -> Option<(usize, String)> {
    let body = &tag[2..];
    let open = match body.as_bytes().first() {
        Some(b'-') => "-",
        Some(b'+') => "+",
        _ => "",
    };
    let body = &body[open.len()..];
    let end = body.find("%}")?;
    let inner = body[..end].trim_end();
    let (inner, close) = match inner.as_bytes().last() {
        Some(b'-') => (&inner[..inner.len() - 1], "-"),
        Some(b'+') => (&inner[..inner.len() - 1], "+"),
        _ => (inner, ""),
    };
    let word = match inner.trim() {
        "generation" => "if true",
        "endgeneration" => "endif",
        _ => return None,
    };
    let len = 2 + open.len() + end + 2;
    Some((len, format!("{{%{open} {word} {close}%}}")))
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn generation_tags_become_if_blocks_and_nothing_else_changes() {
        assert_eq!(
            rewrite(
                "a{%- generation -%}b{{ x }}{% endgeneration %}c{%generation%}{%+endgeneration-%}"
            ),
            "a{%- if true -%}b{{ x }}{% endif %}c{% if true %}{%+ endif -%}"
        );
        let plain = "{% if add_generation_prompt %}{{ '{%' }}{% endif %}{%";
        assert_eq!(rewrite(plain), plain);
    }
}
