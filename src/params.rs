//! Generation defaults: validated, kept in memory, persisted to
//! `<data-dir>/params.json` with an atomic write so they survive a restart.

use std::path::PathBuf;
use std::sync::RwLock;

use crate::api::{GenerationParams, ParamsPatch};
use crate::engine::limits::{LoadBounds, LoadSettings};
use crate::error::ApiError;
use crate::fsutil::write_atomic;

/// The current defaults and the file they live in.
pub struct Params {
    path: PathBuf,
    current: RwLock<GenerationParams>,
}

impl Params {
    /// Reads `path` if it exists. A file that cannot be read as params is
    /// logged and replaced by defaults on the next SetParams, never fatal.
    pub fn load(path: PathBuf) -> Params {
        let current = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<GenerationParams>(&bytes) {
                Ok(params) => match validate(&params) {
                    Ok(()) => params,
                    Err(e) => {
                        log::warn!(
                            "{} is not usable ({}); using defaults",
                            path.display(),
                            e.detail
                        );
                        GenerationParams::default()
                    }
                },
                Err(e) => {
                    log::warn!("{} is not valid JSON ({e}); using defaults", path.display());
                    GenerationParams::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => GenerationParams::default(),
            Err(e) => {
                log::warn!("cannot read {}: {e}; using defaults", path.display());
                GenerationParams::default()
            }
        };
        Params {
            path,
            current: RwLock::new(current),
        }
    }

    /// The current defaults.
    pub fn get(&self) -> GenerationParams {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies `patch`, validates the result and persists it before answering;
    /// nothing changes when validation or the write fails.
    pub fn set(&self, patch: &ParamsPatch) -> Result<GenerationParams, ApiError> {
        // One write lock from read to store: two patches never lose each other.
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let mut next = current.clone();
        apply(&mut next, patch)?;
        self.store(&mut current, next)
    }

    /// Replaces the defaults whole (Restore), validated and persisted as
    /// SetParams does.
    pub fn replace(&self, next: GenerationParams) -> Result<GenerationParams, ApiError> {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        self.store(&mut current, next)
    }

    /// Validates `next`, writes it to disk, then makes it current.
    fn store(
        &self,
        current: &mut GenerationParams,
        next: GenerationParams,
    ) -> Result<GenerationParams, ApiError> {
        validate(&next)?;
        // Serializing plain numbers cannot fail.
        let bytes = serde_json::to_vec_pretty(&next).expect("params serialize");
        write_atomic(&self.path, &bytes).map_err(|e| {
            ApiError::internal(format!(
                "cannot save parameters to {}: {e}",
                self.path.display()
            ))
        })?;
        *current = next.clone();
        Ok(next)
    }
}

fn apply(params: &mut GenerationParams, patch: &ParamsPatch) -> Result<(), ApiError> {
    macro_rules! take {
        ($($field:ident),*) => { $( if let Some(value) = patch.$field { params.$field = value; } )* };
    }
    take!(
        temperature,
        top_p,
        top_k,
        min_p,
        max_tokens,
        repeat_penalty,
        context_size,
        threads
    );
    match patch.seed {
        None => {}
        Some(-1) => params.seed = None,
        Some(seed) => {
            params.seed = Some(u32::try_from(seed).map_err(|_| {
                ApiError::out_of_range("seed", seed, "-1 (random) or 0..=4294967295")
            })?)
        }
    }
    Ok(())
}

/// Checks every field is in range (SetParams, and each request's sampling):
/// a 422 naming the first field out of range, its value and the range. The
/// load defaults (context size, threads) go through the same validator as
/// LoadModel, against what this machine allows.
pub(crate) fn validate(params: &GenerationParams) -> Result<(), ApiError> {
    let check = |ok: bool, field: &str, value: &dyn std::fmt::Display, allowed: &str| {
        if ok {
            Ok(())
        } else {
            Err(ApiError::out_of_range(field, value, allowed))
        }
    };
    let p = params;
    check(
        (0.0..=5.0).contains(&p.temperature),
        "temperature",
        &p.temperature,
        "0..=5",
    )?;
    check(p.top_p > 0.0 && p.top_p <= 1.0, "top_p", &p.top_p, "(0, 1]")?;
    check((0.0..=1.0).contains(&p.min_p), "min_p", &p.min_p, "0..=1")?;
    check(
        p.top_k <= 100_000,
        "top_k",
        &p.top_k,
        "0..=100000 (0 turns it off)",
    )?;
    check(
        (1..=1_000_000).contains(&p.max_tokens),
        "max_tokens",
        &p.max_tokens,
        "1..=1000000",
    )?;
    check(
        (0.5..=4.0).contains(&p.repeat_penalty),
        "repeat_penalty",
        &p.repeat_penalty,
        "0.5..=4",
    )?;
    LoadSettings {
        context_size: Some(p.context_size),
        threads: Some(p.threads),
        ..LoadSettings::default()
    }
    .check(&LoadBounds::machine())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir()
            .join(format!("tabagent-params-{name}-{}", std::process::id()))
            .join("params.json")
    }

    #[test]
    fn set_params_survive_a_reload() {
        let path = temp_path("reload");
        let params = Params::load(path.clone());
        let patch = ParamsPatch {
            temperature: Some(0.2),
            seed: Some(42),
            ..Default::default()
        };
        let after = params.set(&patch).unwrap();
        assert_eq!((after.temperature, after.seed), (0.2, Some(42)));
        let reloaded = Params::load(path.clone()).get();
        assert_eq!(reloaded, after);
        let cleared = Params::load(path.clone()).set(&ParamsPatch {
            seed: Some(-1),
            ..Default::default()
        });
        assert_eq!(cleared.unwrap().seed, None);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn invalid_values_change_nothing() {
        let path = temp_path("invalid");
        let params = Params::load(path.clone());
        let error = params.set(&ParamsPatch {
            top_p: Some(1.5),
            temperature: Some(0.1),
            ..Default::default()
        });
        assert_eq!(error.unwrap_err().status, 422);
        assert_eq!(params.get(), GenerationParams::default());
        assert!(!path.exists());
    }
}
