//! Which model each task uses: lookups by id, and the default model per
//! task, kept in `selection.json`.

use super::ModelManager;
use super::resident::wrong_kind;
use crate::api::{ModelFormat, ModelKind, Selection};
use crate::error::ApiError;
use crate::fsutil::write_atomic;
use crate::jobs::lock;
use crate::models::{ModelFile, model_at, scan_models};

impl ModelManager {
    /// The model file with this id.
    pub fn find(&self, id: &str) -> Result<ModelFile, ApiError> {
        let dir = &self.config.models_dir;
        let safe = !id.is_empty() && !id.starts_with('.') && !id.contains(['/', '\\', '\0']);
        let found = safe
            .then(|| model_at(&dir.join(format!("{id}.gguf"))).or_else(|| model_at(&dir.join(id))))
            .flatten();
        found.ok_or_else(|| ApiError::not_found(format!("no model {id:?} in {}", dir.display())))
    }

    /// The model a request for `kind` uses: the one it names, else the
    /// selected one, else the catalog's default when it is on disk, else the
    /// first on disk.
    pub fn resolve(&self, kind: ModelKind, requested: Option<&str>) -> Result<ModelFile, ApiError> {
        if let Some(id) = requested.filter(|id| !id.is_empty()) {
            return self.find(id);
        }
        let selected = {
            let selection = lock(&self.selection);
            match kind {
                ModelKind::Chat => selection.chat.clone(),
                ModelKind::Embedding => selection.embedding.clone(),
                ModelKind::Rerank => selection.rerank.clone().or(selection.embedding.clone()),
            }
        };
        if let Some(file) = selected.and_then(|id| self.find(&id).ok()) {
            return Ok(file);
        }
        let want = if kind == ModelKind::Rerank {
            ModelKind::Embedding
        } else {
            kind
        };
        let candidates: Vec<ModelFile> = scan_models(&self.config.models_dir)
            .into_iter()
            .filter(|m| {
                m.kind == want || (kind == ModelKind::Rerank && m.kind == ModelKind::Rerank)
            })
            .collect();
        // The catalog's default (an instruct chat model) before the others.
        let default = match want {
            ModelKind::Chat => crate::catalog::CHAT_MODEL,
            _ => crate::catalog::EMBEDDING_MODEL,
        };
        let preferred = candidates.iter().position(|m| m.id == default).unwrap_or(0);
        candidates.into_iter().nth(preferred).ok_or_else(|| {
            ApiError::not_found(format!(
                "no {} model in {}: add one (or pull one) and try again",
                match kind {
                    ModelKind::Chat => "chat (GGUF)",
                    ModelKind::Embedding => "embedding (ONNX)",
                    ModelKind::Rerank => "rerank or embedding",
                },
                self.config.models_dir.display()
            ))
        })
    }

    /// Sets the default model of a task, checked and persisted.
    pub fn select(&self, kind: ModelKind, id: &str) -> Result<Selection, ApiError> {
        let file = self.find(id)?;
        let fits = match kind {
            ModelKind::Chat => file.format == ModelFormat::Gguf,
            _ => file.format == ModelFormat::Onnx,
        };
        if !fits {
            return Err(wrong_kind(&file, kind));
        }
        let mut selection = lock(&self.selection);
        let mut next = selection.clone();
        match kind {
            ModelKind::Chat => next.chat = Some(file.id),
            ModelKind::Embedding => next.embedding = Some(file.id),
            ModelKind::Rerank => next.rerank = Some(file.id),
        }
        let bytes = serde_json::to_vec_pretty(&SelectionFile {
            chat: next.chat.clone(),
            embedding: next.embedding.clone(),
            rerank: next.rerank.clone(),
        })
        .map_err(|e| ApiError::internal(e.to_string()))?;
        write_atomic(&self.config.data_dir.join("selection.json"), &bytes)
            .map_err(|e| ApiError::internal(format!("cannot save the selection: {e}")))?;
        *selection = next.clone();
        Ok(next)
    }

    /// The current default models.
    pub fn selection(&self) -> Selection {
        lock(&self.selection).clone()
    }
}

/// `selection.json` in the data dir.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub(super) struct SelectionFile {
    pub(super) chat: Option<String>,
    pub(super) embedding: Option<String>,
    pub(super) rerank: Option<String>,
}
