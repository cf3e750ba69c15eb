//! Where a pull writes: the URL actually fetched (`hf://` expanded) and the
//! model file or folder file it becomes in the models dir.

use std::path::{Path, PathBuf};

use crate::api::PullModelRequest;
use crate::error::ApiError;

/// Where a pull writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The URL actually fetched (`hf://` expanded).
    pub url: String,
    /// The model id the file belongs to.
    pub id: String,
    /// The final path.
    pub path: PathBuf,
}

impl Target {
    /// `.<file>.part` beside the target.
    pub fn part(&self) -> PathBuf {
        self.sibling("part")
    }

    /// `.<file>.part.json`: what the part was downloaded from.
    pub fn meta(&self) -> PathBuf {
        self.sibling("part.json")
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.path.with_file_name(format!(".{name}.{suffix}"))
    }
}

/// `hf://owner/repo[@revision]/path` as the Hugging Face download URL; other
/// `http(s)://` URLs as they are; anything else is refused.
pub fn resolve_url(url: &str) -> Result<String, ApiError> {
    if let Some(rest) = url.strip_prefix("hf://") {
        let mut parts = rest.splitn(3, '/');
        let (owner, repo, file) = (parts.next(), parts.next(), parts.next());
        let (Some(owner), Some(repo), Some(file)) = (owner, repo, file) else {
            return Err(ApiError::invalid(format!(
                "{url}: an hf:// URL names owner/repo/file"
            )));
        };
        if [owner, repo, file].iter().any(|p| p.is_empty()) {
            return Err(ApiError::invalid(format!(
                "{url}: an hf:// URL names owner/repo/file"
            )));
        }
        let (repo, revision) = repo.split_once('@').unwrap_or((repo, "main"));
        return Ok(format!(
            "https://huggingface.co/{owner}/{repo}/resolve/{revision}/{file}"
        ));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(url.to_string())
    } else {
        Err(ApiError::invalid(format!(
            "{url:?} is not an https://, http:// or hf:// URL"
        )))
    }
}

/// Where the pull of `request` goes in `models_dir`.
pub fn target(models_dir: &Path, request: &PullModelRequest) -> Result<Target, ApiError> {
    let url = resolve_url(&request.url)?;
    let (id, file) = match request.model.as_deref() {
        Some(model) => match model.split_once('/') {
            Some((id, file)) => (safe_name(id)?, safe_name(file)?),
            None => {
                let id = safe_name(model.strip_suffix(".gguf").unwrap_or(model))?;
                (id.clone(), format!("{id}.gguf"))
            }
        },
        None => {
            let path = url.split(['?', '#']).next().unwrap_or(&url);
            let name = path.rsplit('/').next().unwrap_or_default();
            let Some(stem) = name.strip_suffix(".gguf") else {
                return Err(ApiError::invalid(format!(
                    "{url} does not name a .gguf file: say where it goes with `model` \
                     (an id for a GGUF file, or ID/FILE for a file of an ONNX model folder)"
                )));
            };
            let id = safe_name(stem)?;
            (id, name.to_string())
        }
    };
    let path = if file == format!("{id}.gguf") {
        models_dir.join(&file)
    } else {
        models_dir.join(&id).join(&file)
    };
    Ok(Target { url, id, path })
}

/// A file or model name: letters, digits, `.`, `_`, `-`; not starting with a dot.
fn safe_name(name: &str) -> Result<String, ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(name.to_string())
    } else {
        Err(ApiError::invalid(format!(
            "{name:?} is not a usable model or file name (letters, digits, '.', '_', '-'; \
             not starting with '.')"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(url: &str, model: Option<&str>) -> PullModelRequest {
        PullModelRequest {
            url: url.into(),
            model: model.map(String::from),
            sha256: None,
            allow_unverified: false,
        }
    }

    #[test]
    fn hf_urls_expand() {
        assert_eq!(
            resolve_url("hf://ggml-org/models/tiny/x.gguf").unwrap(),
            "https://huggingface.co/ggml-org/models/resolve/main/tiny/x.gguf"
        );
        assert_eq!(
            resolve_url("hf://o/r@v2/f.gguf").unwrap(),
            "https://huggingface.co/o/r/resolve/v2/f.gguf"
        );
        assert!(resolve_url("hf://o/r").is_err());
        assert!(resolve_url("file:///etc/passwd").is_err());
        assert!(resolve_url("ftp://x/y").is_err());
    }

    #[test]
    fn targets_follow_the_model_field() {
        let dir = Path::new("/m");
        let t = target(dir, &request("http://h/a/b.gguf?download=1", None)).unwrap();
        assert_eq!(
            (t.id.as_str(), t.path.as_path()),
            ("b", Path::new("/m/b.gguf"))
        );
        assert_eq!(t.part(), Path::new("/m/.b.gguf.part"));
        let t = target(dir, &request("http://h/x.bin", Some("chat.gguf"))).unwrap();
        assert_eq!(t.path, Path::new("/m/chat.gguf"));
        let t = target(
            dir,
            &request("hf://o/r/onnx/model.onnx", Some("mini/model.onnx")),
        )
        .unwrap();
        assert_eq!(
            (t.id.as_str(), t.path.as_path()),
            ("mini", Path::new("/m/mini/model.onnx"))
        );
        assert_eq!(t.part(), Path::new("/m/mini/.model.onnx.part"));
        for bad in ["../x", ".hidden", "a/b/c", "a/", "x y"] {
            assert!(
                target(dir, &request("http://h/f.gguf", Some(bad))).is_err(),
                "{bad}"
            );
        }
        assert!(target(dir, &request("http://h/model.onnx", None)).is_err());
    }
}
