//! Finding and loading ONNX Runtime's shared library, once per process.
//!
//! ort is built with `load-dynamic`: nothing links against ONNX Runtime, so the
//! binary starts (and serves everything else) without it. The first ONNX model
//! load looks for the library, in this order, and the user sets nothing when
//! it sits in one of the usual places:
//!
//! 1. `ORT_DYLIB_PATH`, when set (an explicit choice wins);
//! 2. next to the binary: `<exe dir>/libonnxruntime.so`, then `<exe dir>/lib/`;
//! 3. the data dir: `<data-dir>/lib/libonnxruntime.so` (where `make models`
//!    puts it).
//!
//! A failed search is not remembered: installing the library later and
//! retrying works without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

use crate::error::ApiError;
use crate::jobs::lock;

/// The library's file name on this platform (`libonnxruntime.so` on Linux).
pub fn library_file_name() -> String {
    format!(
        "{}onnxruntime{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();
static ENVIRONMENT: Mutex<Option<Environment>> = Mutex::new(None);

/// Tells the search where the data dir is; the first call wins (one data dir
/// per process).
pub fn set_data_dir(data_dir: &Path) {
    let _ = DATA_DIR.set(data_dir.to_path_buf());
}

/// Where to look, in order (see the module docs). Pure, so it can be tested.
pub fn library_candidates(
    env_path: Option<&str>,
    exe_dir: Option<&Path>,
    data_dir: Option<&Path>,
) -> Vec<PathBuf> {
    let name = library_file_name();
    let mut out = Vec::new();
    if let Some(path) = env_path.filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(path));
    }
    if let Some(dir) = exe_dir {
        out.push(dir.join(&name));
        out.push(dir.join("lib").join(&name));
    }
    if let Some(dir) = data_dir {
        out.push(dir.join("lib").join(&name));
    }
    out
}

/// The process's ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<Environment, ApiError> {
    let mut slot = lock(&ENVIRONMENT);
    if let Some(environment) = slot.as_ref() {
        return Ok(environment.clone());
    }
    let env_path = std::env::var("ORT_DYLIB_PATH").ok();
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let candidates = library_candidates(
        env_path.as_deref(),
        exe_dir.as_deref(),
        DATA_DIR.get().map(PathBuf::as_path),
    );
    let mut tried = Vec::new();
    for path in candidates {
        if !path.is_file() {
            tried.push(format!("{} (absent)", path.display()));
            continue;
        }
        match ort::init_from(&path) {
            Ok(builder) => {
                let environment = builder
                    .with_name("tabagent")
                    .with_telemetry(false)
                    .build()
                    .map_err(|e| ApiError::internal(format!("ONNX Runtime did not start: {e}")))?;
                log::info!("ONNX Runtime loaded from {}", path.display());
                *slot = Some(environment.clone());
                return Ok(environment);
            }
            Err(e) => tried.push(format!("{} ({e})", path.display())),
        }
    }
    Err(runtime_missing(&tried))
}

fn runtime_missing(tried: &[String]) -> ApiError {
    ApiError::new(
        503,
        "onnx-runtime-missing",
        "ONNX Runtime missing",
        format!(
            "ONNX Runtime's library {} was not found: put it next to the tabagent binary or in \
             <data-dir>/lib/, or set ORT_DYLIB_PATH (`make models` fetches it); tried: {}",
            library_file_name(),
            if tried.is_empty() {
                "nothing".to_string()
            } else {
                tried.join(", ")
            }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_first_then_binary_then_data_dir() {
        let found = library_candidates(
            Some("/opt/ort.so"),
            Some(Path::new("/usr/bin")),
            Some(Path::new("/data")),
        );
        let name = library_file_name();
        assert_eq!(
            found,
            [
                PathBuf::from("/opt/ort.so"),
                Path::new("/usr/bin").join(&name),
                Path::new("/usr/bin/lib").join(&name),
                Path::new("/data/lib").join(&name),
            ]
        );
        assert_eq!(
            library_candidates(Some(""), None, None),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn a_missing_library_is_a_clear_503() {
        let error = runtime_missing(&["/x/libonnxruntime.so (absent)".into()]);
        assert_eq!(error.status, 503);
        assert!(error.detail.contains("ORT_DYLIB_PATH"), "{}", error.detail);
        assert!(
            error.detail.contains("/x/libonnxruntime.so"),
            "{}",
            error.detail
        );
    }
}
